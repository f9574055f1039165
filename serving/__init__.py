"""The `triage` inference service: ONNX model, routing policy and the FastAPI app.

Nothing here imports torch, sentence-transformers, scikit-learn, mlflow or the `training` package.
"""

__version__ = "0.1.0"
