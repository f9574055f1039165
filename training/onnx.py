"""ONNX graphs of encoder + heads: export, the parity gate, int8 quantisation."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from serving.errors import TriageError
from serving.model import ModelBundle
from training.encoders import Encoder
from training.features import split_weights
from training.heads import Head

if TYPE_CHECKING:
    import onnx

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
    """Encoder + heads. A linear head: logits = embedding @ W + b; with n-grams it also sums its rows for
    the message's n-grams: + sum_k weight_k * W_ngram[id_k]. A head with a hidden layer (which reads the
    embedding alone): logits = relu(embedding @ W1 + b1) @ W + b."""

    def __init__(
        self, encoder_graph: torch.nn.Module, heads: Sequence[Head], dim: int, ngram_scale: float | None
    ) -> None:
        super().__init__()
        self.encoder = encoder_graph
        self.with_ngrams = ngram_scale is not None
        parts = [
            (h.weight, None) if h.hidden is not None else split_weights(h.weight, dim, ngram_scale or 1.0)
            for h in heads
        ]

        def param(a: np.ndarray) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), False)

        self.weights = torch.nn.ParameterList([param(w) for w, _ in parts])
        self.biases = torch.nn.ParameterList([param(h.bias) for h in heads])
        # per head: the index of its hidden layer in hidden_weights / hidden_biases, or -1
        count = itertools.count()
        self.hidden_index = [next(count) if h.hidden is not None else -1 for h in heads]
        self.hidden_weights = torch.nn.ParameterList([param(h.hidden[0]) for h in heads if h.hidden is not None])
        self.hidden_biases = torch.nn.ParameterList([param(h.hidden[1]) for h in heads if h.hidden is not None])
        if self.with_ngrams:
            vocab = next((n.shape[0] for _, n in parts if n is not None), None)
            if vocab is None:
                raise ExportError("n-gram features are configured but no head reads them")
            # a head fitted on the embedding alone reads no n-gram: zero rows
            self.ngram_weights = torch.nn.ParameterList(
                [param(n if n is not None else np.zeros((vocab, w.shape[1]), np.float32)) for w, n in parts]
            )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        ngram_ids: torch.Tensor | None = None,
        ngram_weights: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        emb = self.encoder(input_ids, attention_mask)
        inputs = [
            emb if i < 0 else torch.relu(emb @ self.hidden_weights[i] + self.hidden_biases[i])
            for i in self.hidden_index
        ]
        logits = [x @ w + b for x, w, b in zip(inputs, self.weights, self.biases, strict=True)]
        if self.with_ngrams and ngram_ids is not None and ngram_weights is not None:
            logits = [
                z + (wn[ngram_ids] * ngram_weights.unsqueeze(-1)).sum(dim=1)
                for z, wn in zip(logits, self.ngram_weights, strict=True)
            ]
        return (emb, *[torch.softmax(z, dim=-1) for z in logits])


def export_onnx(encoder: Encoder, heads: Sequence[Head], path: Path, ngram_scale: float | None = None) -> None:
    """Write encoder + heads as one ONNX graph: (input_ids, attention_mask[, ngram_ids, ngram_weights]) ->
    embedding, probs_<head>...; `ngram_scale` (the n-gram block's weight in training) when the heads read
    char n-grams too."""
    graph = _ExportGraph(encoder.graph(), heads, encoder.dim, ngram_scale).eval()
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]], dtype=torch.int64)
    mask = (ids != 0).to(torch.int64)
    inputs: tuple[torch.Tensor, ...] = (ids, mask)
    names = ["input_ids", "attention_mask"]
    outputs = ["embedding"] + [f"probs_{h.name}" for h in heads]
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    if ngram_scale is not None:
        inputs += (
            torch.tensor([[3, 1, 2], [4, 0, 0]], dtype=torch.int64),
            torch.tensor([[0.5, 0.5, 0.7], [1.0, 0.0, 0.0]], dtype=torch.float32),
        )
        names += ["ngram_ids", "ngram_weights"]
        axes |= {"ngram_ids": {0: "batch", 1: "grams"}, "ngram_weights": {0: "batch", 1: "grams"}}
    axes |= {name: {0: "batch"} for name in outputs}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            inputs,
            str(path),
            input_names=names,
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


def nodes_reading(graph: onnx.GraphProto, weights: Sequence[str]) -> list[str]:
    """The nodes of an ONNX graph that read any of `weights` (initializer names); an error if one is absent."""
    missing = set(weights) - {i.name for i in graph.initializer}
    if missing:
        raise ExportError(f"the graph has no weight named {sorted(missing)}; the int8 graph was not written")
    return [n.name for n in graph.node if set(n.input) & set(weights)]


def quantize_int8(src: Path, dst: Path, encoder_float_weights: Sequence[str] = ()) -> None:
    """Dynamic int8 quantisation, per channel, of the constant weights (a uint8 table stays as it is), but
    for the encoder's `float_weights`: the operations that read them stay float."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))  # loaded once: for the node names and for the quantiser
    keep = nodes_reading(model.graph, [f"encoder.{w}" for w in encoder_float_weights])  # `_ExportGraph.encoder`
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    with contextlib.redirect_stdout(io.StringIO()):  # the quantiser prints graph protos
        quantize_dynamic(
            model,
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=keep,
            extra_options={"MatMulConstBOnly": True},
        )
