"""Reviewers' corrections: the file `triage label pull` keeps (data/corrections.csv), and how corrections
meet the seed data when `triage retrain` builds its training set.

Two merges, two names:
- `add_pulled`: new annotations into the corrections file, one row per Label Studio annotation (an edited
  annotation replaces its earlier row);
- `apply_corrections`: seed rows plus corrections, one row per message (`serving.labels.message_key`), the
  newest correction winning, corrections of test messages held out.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from serving.errors import TriageError
from serving.files import atomic_write
from serving.labels import message_key
from training.data import OPTIONAL, REQUIRED

FILE_NAME = "corrections.csv"
SCHEMA = (*REQUIRED, *OPTIONAL)  # the data schema every training row follows
# data/corrections.csv: the data schema, then provenance
DATA_COLUMNS = (
    "text",
    "language",
    "risk",
    "claim_type",
    "channel",
    "order_id",
    "received_at",
    "source",
    "annotator",
    "labeled_at",
)
PROVENANCE_COLUMNS = (
    "ls_task_id",
    "ls_annotation_id",
    "request_id",
    "model_risk",
    "model_claim_type",
    "model_version",
    "note",
)
COLUMNS = DATA_COLUMNS + PROVENANCE_COLUMNS


class LoopError(TriageError):
    """A problem with the loop's own state (the corrections file, a missing project), not with a server."""


# -- the corrections file ------------------------------------------------------------------------------
def read_corrections(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LoopError(f"{path}: cannot read it ({err}); fix or move it, then pull again") from err
    if "ls_annotation_id" not in header:
        raise LoopError(f"{path} is not a corrections file (no ls_annotation_id column); move it away, then pull again")
    return rows


def write_corrections(path: Path, rows: Sequence[Mapping[str, str]]) -> None:
    """Replace `path` with `rows`, whole or not at all."""
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def forget_corrections(path: Path, request_ids: Iterable[str], order_id: str, remove: bool = False) -> list[int]:
    """The line numbers of the corrections that came from `request_ids` or name order `order_id` (its field
    or its text): a buyer's erasure request reaches the training data too. `remove` rewrites the file
    without them."""
    ids = set(request_ids)
    rows = read_corrections(path)
    hits = [
        i
        for i, r in enumerate(rows)
        if r.get("request_id") in ids or (order_id and (r.get("order_id") == order_id or order_id in r.get("text", "")))
    ]
    if remove and hits:
        drop = set(hits)
        write_corrections(path, [r for i, r in enumerate(rows) if i not in drop])
    return [i + 2 for i in hits]  # line 1 is the header


@dataclass(frozen=True)
class Pulled:
    """The corrections file after a pull, and what the pull changed."""

    rows: list[dict[str, str]]
    added: int
    updated: int
    unchanged: int


def add_pulled(existing: Sequence[Mapping[str, str]], new: Iterable[Mapping[str, str]]) -> Pulled:
    """Existing corrections plus new ones, one row per annotation id (an edited annotation replaces its
    earlier row); order kept, new rows last."""
    rows = [{c: str(r.get(c, "") or "") for c in COLUMNS} for r in existing]
    index = {r["ls_annotation_id"]: i for i, r in enumerate(rows)}
    added = updated = unchanged = 0
    for r in new:
        row = {c: str(r.get(c, "") or "") for c in COLUMNS}
        at = index.get(row["ls_annotation_id"])
        if at is None:
            index[row["ls_annotation_id"]] = len(rows)
            rows.append(row)
            added += 1
        elif rows[at] != row:
            rows[at] = row
            updated += 1
        else:
            unchanged += 1
    return Pulled(rows, added, updated, unchanged)


# -- corrections meet the seed data -------------------------------------------------------------------
@dataclass
class Corrected:
    """The training set after corrections, and what the corrections did to it."""

    train: pd.DataFrame  # the rows to train on, SCHEMA columns
    applied: pd.DataFrame  # corrections trained on; `change` is new | relabel | confirm
    held_out: pd.DataFrame  # corrections of messages in the test split: never trained on
    seed_rows: int
    correction_rows: int  # rows in the corrections file
    superseded: int  # older corrections of a message a newer one replaced

    @property
    def overriding(self) -> int:
        """Applied corrections of a message the seed data already had (relabelled or confirmed)."""
        return int((self.applied["change"] != "new").sum())

    @property
    def relabelled(self) -> int:
        return int((self.applied["change"] == "relabel").sum())

    def counts(self) -> dict[str, int]:
        """Flat counts for tracking: rows, corrections, and per language / label of both."""
        out = {
            "seed_rows": self.seed_rows,
            "train_rows": len(self.train),
            "corrections.rows": self.correction_rows,
            "corrections.applied": len(self.applied),
            "corrections.overriding": self.overriding,
            "corrections.relabelled": self.relabelled,
            "corrections.new": int((self.applied["change"] == "new").sum()),
            "corrections.held_out": len(self.held_out),
            "corrections.superseded": self.superseded,
        }
        for prefix, df in (("train", self.train), ("corrections", self.applied)):
            for col in ("language", "risk", "claim_type"):
                for value, n in df[col].value_counts().sort_index().items():
                    out[f"{prefix}.{col}.{value}"] = int(n)
        return out


def apply_corrections(seed: pd.DataFrame, corrections: pd.DataFrame | None, test: pd.DataFrame) -> Corrected:
    """Seed rows plus corrections, one row per message (same `message_key`).

    The newest correction of a message wins (by `labeled_at`, then file order) and replaces the seed row
    of that message; a correction of a test-split message is held out so the test split stays unseen.
    """
    seed = seed.copy()
    seed["_key"] = seed["text"].map(message_key)
    empty = pd.DataFrame(columns=[*SCHEMA, "_key"])
    corr = corrections.copy() if corrections is not None and len(corrections) else empty.copy()
    for col in SCHEMA:
        if col not in corr:
            corr[col] = ""
    corr["_key"] = corr["text"].map(message_key)
    corr["_order"] = range(len(corr))
    corr = corr.sort_values(["labeled_at", "_order"], kind="stable")
    latest = corr.drop_duplicates("_key", keep="last").sort_values("_order")
    superseded = len(corr) - len(latest)

    test_keys = set(test["text"].map(message_key))
    in_test = latest["_key"].isin(test_keys)
    held_out, use = latest[in_test], latest[~in_test].copy()

    first_seed = seed.drop_duplicates("_key", keep="first").set_index("_key")
    prev_risk = use["_key"].map(first_seed["risk"])
    prev_claim = use["_key"].map(first_seed["claim_type"])
    use["previous_risk"] = prev_risk.fillna("")
    use["previous_claim_type"] = prev_claim.fillna("")
    same = (prev_risk == use["risk"]) & (prev_claim == use["claim_type"])
    use["change"] = "relabel"
    use.loc[prev_risk.isna(), "change"] = "new"
    use.loc[same, "change"] = "confirm"
    use.loc[use["source"].fillna("") == "", "source"] = "correction"

    for col in SCHEMA:
        if col not in seed:
            seed[col] = ""
    kept_seed = seed[~seed["_key"].isin(set(use["_key"]))]
    train = pd.concat([kept_seed[list(SCHEMA)], use[list(SCHEMA)]], ignore_index=True).fillna("")
    extra = [c for c in use.columns if c not in SCHEMA and not c.startswith("_") and c != "line"]
    applied = use[[*SCHEMA, *extra]].reset_index(drop=True)
    held = held_out[[c for c in held_out.columns if not c.startswith("_") and c != "line"]]
    held = held.reset_index(drop=True)
    return Corrected(
        train=train,
        applied=applied,
        held_out=held,
        seed_rows=len(seed),
        correction_rows=len(corr),
        superseded=superseded,
    )
