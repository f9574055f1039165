"""Training side of `triage`: data, encoders, heads, evaluation, ONNX export and the labeling loop."""
