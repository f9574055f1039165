"""Does the data's surface give its labels away? A check on the data, not a model to serve.

A classifier that never reads the words (length, punctuation, digits, an order id, capitals, a greeting)
should not predict Tier 1 well on hand-written data: if it does, a model can learn the writer's style
instead of what buyers say, and it fails on real messages, where calm short complaints and long detailed
routine questions are common. `surface_auc` is the cross-validated ROC AUC of such a classifier;
data/README.md and a test hold it at or below `MAX_SURFACE_AUC`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MAX_SURFACE_AUC = 0.70
FEATURES = (
    "log_length",
    "exclamations",
    "questions",
    "digits",
    "order_id",
    "newlines",
    "currency",
    "capitals",
    "greeting",
)
_ORDER_ID = re.compile(r"\b\d{3}-\d{7}-\d{7}\b|#\s?\d{3,}|\b\d{2}-\d{5}-\d{5}\b|\b\d{12,}\b")
_GREETING = re.compile(
    r"^\W*(hi|hello|hey|dear|good (morning|afternoon|evening)|bonjour|bonsoir|salut|coucou|madame|monsieur|"
    r"buongiorno|buonasera|salve|ciao|gentile|egregi)",
    re.IGNORECASE,
)
_CURRENCY = re.compile(r"[€£$]|\beur(os?)?\b|\busd\b", re.IGNORECASE)


def surface_features(texts: Sequence[str]) -> np.ndarray:
    """(n, len(FEATURES)) features that ignore what the words mean."""
    rows = []
    for t in texts:
        letters = [c for c in t if c.isalpha()]
        rows.append(
            [
                np.log1p(len(t)),
                t.count("!"),
                t.count("?"),
                sum(c.isdigit() for c in t) / max(1, len(t)),
                float(bool(_ORDER_ID.search(t))),
                t.count("\n"),
                float(bool(_CURRENCY.search(t))),
                sum(c.isupper() for c in letters) / max(1, len(letters)),
                float(bool(_GREETING.search(t))),
            ]
        )
    return np.asarray(rows, dtype=np.float64)


def surface_auc(texts: Sequence[str], tier1: Sequence[bool], folds: int = 5, seed: int = 13) -> float:
    """Cross-validated ROC AUC of a logistic regression on `surface_features` predicting Tier 1."""
    x, y = surface_features(texts), np.asarray(tier1, dtype=int)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))
