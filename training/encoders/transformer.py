"""Any standard sentence-transformers model (hub name or local folder), exported with its pooling and
normalisation inside the ONNX graph."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from serving.errors import TriageError
from serving.tokenizer import HFTokenizer
from training.encoders import SentenceTransformerEncoder


class EncoderLoadError(TriageError):
    """A sentence-transformers model that cannot be loaded or exported."""


class TransformerEncoder(SentenceTransformerEncoder):
    """A `Transformer -> Pooling -> [Normalize]` sentence-transformers model."""

    def __init__(self, name_or_path: str, prefix: str = "", name: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(name_or_path, device="cpu")
        except Exception as err:  # the hub is unreachable, the folder is wrong, ...
            hint = (
                "the folder exists but is not a sentence-transformers model"
                if Path(name_or_path).is_dir()
                else "not a local folder, and the Hugging Face hub could not provide it (no network?); "
                "download it on a connected machine and pass its folder"
            )
            raise EncoderLoadError(f"cannot load sentence-transformers model {name_or_path!r}: {hint} ({err})") from err
        self.model.eval()
        modules: list[Any] = list(self.model)
        self._transformer: Any = modules[0]
        self._pooling = next((m for m in modules if type(m).__name__ == "Pooling"), None)
        self.normalize = any(type(m).__name__ == "Normalize" for m in modules)
        unsupported = [type(m).__name__ for m in modules[1:] if type(m).__name__ not in ("Pooling", "Normalize")]
        if self._pooling is None or unsupported:
            raise EncoderLoadError(
                f"{name_or_path!r}: only Transformer -> Pooling -> [Normalize] models can be exported "
                f"(found {[type(m).__name__ for m in modules]})"
            )
        self.pooling_mode = str(
            self._pooling.pooling_mode
            if hasattr(self._pooling, "pooling_mode")
            else self._pooling.get_pooling_mode_str()
        )
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)
        self.max_tokens = int(self.model.max_seq_length or 512)
        tag = hashlib.sha256(
            str(Path(name_or_path).resolve() if Path(name_or_path).exists() else name_or_path).encode()
        ).hexdigest()[:10]
        slug = "-".join(Path(name_or_path).parts[-2:]).replace("/", "-")
        self.id = f"st-{slug}-{tag}" + (f"-{prefix.strip(': ')}" if prefix else "")
        self.prefix = prefix
        self.name = name or name_or_path  # what load_encoder takes to build it again

    def trainable(self) -> list[torch.nn.Parameter]:
        """Every weight but the word-embedding table (most of a multilingual model's size, and the part
        a few thousand messages would only blur)."""
        words = self._transformer.auto_model.get_input_embeddings().weight
        return [p for p in self._transformer.auto_model.parameters() if p is not words]

    def graph(self) -> torch.nn.Module:
        return _TransformerGraph(self._transformer.auto_model, self.pooling_mode, self.normalize)

    def write_tokenizer(self, folder: Path) -> dict[str, Any]:
        hf = self._transformer.tokenizer
        hf.backend_tokenizer.save(str(folder / "tokenizer.json"))
        return {
            "kind": HFTokenizer.kind,
            "file": "tokenizer.json",
            "max_tokens": self.max_tokens,
            "pad_id": int(hf.pad_token_id or 0),
            "prefix": self.prefix,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "sentence-transformers",
            "id": self.id,
            "name": self.name,
            "dim": self.dim,
            "pooling": self.pooling_mode,
            "normalize": self.normalize,
            "max_tokens": self.max_tokens,
            "prefix": self.prefix,
        }


class _TransformerGraph(torch.nn.Module):
    def __init__(self, auto_model: torch.nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        if pooling not in ("mean", "cls", "max"):
            raise EncoderLoadError(f"pooling {pooling!r} cannot be exported (mean, cls or max only)")
        self.auto_model = auto_model
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.auto_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        elif self.pooling == "max":
            pooled = (tokens + (mask - 1.0) * 1e9).max(dim=1).values
        else:
            pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=-1) if self.normalize else pooled
