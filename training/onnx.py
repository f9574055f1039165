"""ONNX graphs of encoder + heads: export, the parity gate, int8 quantisation."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from serving.errors import TriageError
from serving.model import ModelBundle
from training.encoders import Encoder
from training.heads import Head

OPSET = 17
MIN_COSINE = 0.999
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"

# Messages in the three languages, short and long, with order numbers and amounts: the parity set.
PARITY_TEXTS: tuple[str, ...] = (
    "Where is my parcel?",
    "I ordered a kettle on 3 March (order 204-5518273-9910342) and it still hasn't arrived. "
    "The tracking has said 'in transit' for ten days. If I don't hear back by Friday I will open an "
    "A-to-z claim with Amazon.",
    "Thanks, arrived fine!",
    "Bonjour, je n'ai toujours pas reçu ma commande 171-2233445-6677889, livraison prévue le 12 mars.",
    "Le casque est arrivé cassé, je veux un remboursement de 89,90 € sinon j'ouvre un litige.",
    "Merci beaucoup, tout est parfait",
    "Buongiorno, il pacco risulta consegnato ma non ho ricevuto nulla. Ordine 402-9988776-5544332.",
    "La macchina del caffè non funziona dal primo giorno, voglio il reso e il rimborso di 149 euro.",
    "Ciao, posso avere la fattura?",
    "Hello, mon colis n'est jamais arrivé, can you check please?",
    "x",
)


class ExportError(TriageError):
    """The exported graph is unusable (parity failed, export crashed); no artifact is written."""


class _ExportGraph(torch.nn.Module):
    def __init__(self, encoder_graph: torch.nn.Module, heads: Sequence[Head]) -> None:
        super().__init__()
        self.encoder = encoder_graph
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(h.weight.astype(np.float32)), False) for h in heads]
        )
        self.biases = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(h.bias.astype(np.float32)), False) for h in heads]
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        emb = self.encoder(input_ids, attention_mask)
        probs = [torch.softmax(emb @ w + b, dim=-1) for w, b in zip(self.weights, self.biases, strict=True)]
        return (emb, *probs)


def export_onnx(encoder: Encoder, heads: Sequence[Head], path: Path) -> None:
    """Write encoder + heads as one ONNX graph: (input_ids, attention_mask) -> embedding, probs_<head>..."""
    graph = _ExportGraph(encoder.graph(), heads).eval()
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    outputs = ["embedding"] + [f"probs_{h.name}" for h in heads]
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    axes |= {name: {0: "batch"} for name in outputs}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def embed_onnx(folder: Path, variant: str, texts: Sequence[str]) -> np.ndarray:
    bundle = ModelBundle(folder, variant=variant, verify=False)
    return bundle.infer(texts)[0]


def check_parity(encoder: Encoder, folder: Path, variant: str = "fp32", texts: Sequence[str] = PARITY_TEXTS) -> float:
    """Minimum cosine between the in-memory encoder and the exported graph; raise below MIN_COSINE."""
    reference = encoder.encode(texts)
    exported = embed_onnx(folder, variant, texts)
    cos = np.sum(reference * exported, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(exported, axis=1))
    worst = float(cos.min())
    if not worst >= MIN_COSINE:
        bad = texts[int(cos.argmin())]
        raise ExportError(
            f"exported {variant} graph disagrees with the in-memory encoder: cosine {worst:.5f} < "
            f"{MIN_COSINE} on {bad!r}; the artifact was not written"
        )
    return worst


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation, per channel, of the constant weights (a uint8 table stays as it is)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    with contextlib.redirect_stdout(io.StringIO()):  # the quantiser prints graph protos
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )
