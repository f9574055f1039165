"""Character n-gram TF-IDF features, in pure Python and numpy (no scikit-learn in serving).

The model may read a message twice: as a sentence embedding, and as the bag of its character n-grams,
which catch what an embedding blurs: misspellings, missing accents, text-speak and short negated phrases
("pas reçu", "non funziona", "arrived broken"). The vocabulary and its idf weights are chosen at training
time (`CharNgrams.fit`) and stored in the model folder (`ngrams.json`); serving turns each text into the
sparse (ids, weights) pair the ONNX graph takes: `ngram_ids` and `ngram_weights`, padded per batch.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FILE = "ngrams.json"
# the n-grams of a message's first 4,000 characters: about what the USE encoder reads (1,024 tokens) and six
# times the longest training message, so a 20,000-character text costs no more than the encoder's share
MAX_CHARS = 4_000
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, accents dropped, digit runs as one `0` (order ids and amounts carry no label), spaces
    collapsed: the form the n-grams are read from."""
    folded = text.lower()
    if not folded.isascii():
        folded = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return _SPACES.sub(" ", _DIGITS.sub("0", folded)).strip()


def grams(text: str, n_min: int, n_max: int) -> Counter[str]:
    """Character n-grams inside word boundaries (each word padded with one space on each side), of the
    first `MAX_CHARS` characters."""
    out: Counter[str] = Counter()
    for word in normalize(text[:MAX_CHARS]).split(" "):
        padded = f" {word} "
        size = len(padded)
        for n in range(n_min, min(n_max, size) + 1):
            for i in range(size - n + 1):
                out[padded[i : i + n]] += 1
    return out


class CharNgrams:
    """A fitted vocabulary: text -> sublinear-tf x idf weights over known n-grams, L2-normalised."""

    def __init__(self, vocab: dict[str, int], idf: Sequence[float], n_min: int, n_max: int) -> None:
        if len(vocab) != len(idf):
            raise ValueError(f"{len(vocab)} n-grams but {len(idf)} idf weights")
        self.vocab = vocab
        self.idf = np.asarray(idf, dtype=np.float32)
        self.n_min, self.n_max = n_min, n_max

    @property
    def size(self) -> int:
        return len(self.vocab)

    @classmethod
    def fit(
        cls, texts: Iterable[str], n_min: int = 2, n_max: int = 5, min_df: int = 2, max_features: int = 30_000
    ) -> CharNgrams:
        """The `max_features` n-grams found in the most texts (at least `min_df`), with smoothed idf."""
        df: Counter[str] = Counter()
        n_docs = 0
        for text in texts:
            df.update(grams(text, n_min, n_max).keys())
            n_docs += 1
        kept = sorted((g for g, c in df.items() if c >= min_df), key=lambda g: (-df[g], g))[:max_features]
        vocab = {g: i for i, g in enumerate(sorted(kept))}
        idf = [math.log((1 + n_docs) / (1 + df[g])) + 1.0 for g in sorted(kept)]
        return cls(vocab, idf, n_min, n_max)

    def features(self, text: str) -> tuple[list[int], list[float]]:
        """(ids, weights) of one text: known n-grams only, weights (1 + log tf) x idf, L2-normalised."""
        ids, weights = [], []
        for gram, count in grams(text, self.n_min, self.n_max).items():
            i = self.vocab.get(gram)
            if i is not None:
                ids.append(i)
                weights.append((1.0 + math.log(count)) * float(self.idf[i]))
        norm = math.sqrt(sum(w * w for w in weights)) or 1.0
        return ids, [w / norm for w in weights]

    def transform(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """`ngram_ids` int64 and `ngram_weights` float32, both (batch, longest); padding is id 0, weight 0."""
        rows = [self.features(t) for t in texts]
        width = max((len(ids) for ids, _ in rows), default=1) or 1
        ids = np.zeros((len(rows), width), dtype=np.int64)
        weights = np.zeros((len(rows), width), dtype=np.float32)
        for r, (i, w) in enumerate(rows):
            ids[r, : len(i)] = i
            weights[r, : len(w)] = w
        return ids, weights

    def to_json(self) -> dict[str, Any]:
        grams_in_order = sorted(self.vocab, key=self.vocab.__getitem__)
        return {
            "n_min": self.n_min,
            "n_max": self.n_max,
            "ngrams": grams_in_order,
            "idf": [round(float(x), 6) for x in self.idf],
        }

    def save(self, folder: Path) -> dict[str, Any]:
        """Write `ngrams.json` into a model folder; return the config entry that names it."""
        (folder / FILE).write_text(json.dumps(self.to_json(), ensure_ascii=False))
        return {"file": FILE, "size": self.size, "n_min": self.n_min, "n_max": self.n_max}

    @classmethod
    def load(cls, folder: Path, spec: dict[str, Any]) -> CharNgrams:
        data = json.loads((folder / spec["file"]).read_text())
        vocab = {g: i for i, g in enumerate(data["ngrams"])}
        return cls(vocab, data["idf"], int(data["n_min"]), int(data["n_max"]))
