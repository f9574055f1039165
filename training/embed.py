"""Sentence embeddings with an on-disk cache keyed by encoder id and text."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from serving.files import atomic_write
from training.encoders import Encoder


def cache_key(encoder_id: str, text: str) -> str:
    """The exact text (not `message_key`: two spellings of one message embed differently) and encoder."""
    return hashlib.sha256(f"{encoder_id}\0{text}".encode()).hexdigest()


class EmbeddingCache:
    """One `.npz` per encoder under `folder`: sha256(encoder id, text) -> vector. Writes are atomic."""

    def __init__(self, folder: Path, encoder_id: str) -> None:
        self.path = Path(folder) / "embeddings" / f"{encoder_id}.npz"
        self.encoder_id = encoder_id
        self._vectors: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as z:
                self._vectors = dict(zip(z["keys"].tolist(), z["vectors"], strict=True))

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, text: str) -> np.ndarray | None:
        return self._vectors.get(cache_key(self.encoder_id, text))

    def put_many(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        for t, v in zip(texts, vectors, strict=True):
            self._vectors[cache_key(self.encoder_id, t)] = v

    def save(self) -> None:
        keys = np.array(list(self._vectors), dtype="U64")
        vectors = np.stack(list(self._vectors.values())) if self._vectors else np.zeros((0, 0), np.float32)
        with atomic_write(self.path, "wb") as f:
            np.savez(f, keys=keys, vectors=vectors)


def embed_texts(encoder: Encoder, texts: Sequence[str], cache_dir: Path | None, progress: bool = True) -> np.ndarray:
    """(n, dim) float32 embeddings; only texts missing from the cache are encoded."""
    if cache_dir is None:
        return encoder.encode(texts, progress=progress)
    cache = EmbeddingCache(cache_dir, encoder.id)
    missing = list(dict.fromkeys(t for t in texts if cache.get(t) is None))
    if missing:
        cache.put_many(missing, encoder.encode(missing, progress=progress))
        cache.save()
    return np.stack([cache.get(t) for t in texts]).astype(np.float32)  # type: ignore[misc]
