"""What the heads read: the sentence embedding, optionally beside the message's char n-gram TF-IDF.

The n-gram block is scaled by `weight` against the (unit-norm) embedding; the scale is folded into the
heads' n-gram rows at export (`split_weights`), so serving feeds the graph plain TF-IDF weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from serving.ngrams import CharNgrams
from training.heads import Features


def ngram_matrix(ngrams: CharNgrams, texts: Sequence[str]) -> sparse.csr_matrix:
    """(n, vocabulary) sparse TF-IDF rows, exactly as serving computes them."""
    ids, weights = ngrams.transform(texts)
    rows = np.repeat(np.arange(len(texts)), ids.shape[1])
    matrix = sparse.csr_matrix((weights.ravel(), (rows, ids.ravel())), shape=(len(texts), ngrams.size))
    matrix.eliminate_zeros()  # the padding (id 0, weight 0)
    return matrix


def build_features(embeddings: np.ndarray, texts: Sequence[str], ngrams: CharNgrams | None, weight: float) -> Features:
    """The embedding alone, or [embedding | weight x n-gram TF-IDF] as one sparse matrix."""
    if ngrams is None:
        return embeddings
    return sparse.hstack([sparse.csr_matrix(embeddings), ngram_matrix(ngrams, texts) * weight]).tocsr()


def split_weights(weight: np.ndarray, dim: int, ngram_scale: float) -> tuple[np.ndarray, np.ndarray | None]:
    """A head's (dim [+ vocabulary], k) weights as (embedding rows, n-gram rows x scale or None)."""
    if weight.shape[0] == dim:
        return weight, None
    return weight[:dim], weight[dim:] * ngram_scale
