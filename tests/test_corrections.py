"""Reviewers' corrections (loop.corrections): the corrections file, and corrections meeting the seed data
with one message identity (serving.labels.message_key), test messages held out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loop.corrections import COLUMNS, LoopError, apply_corrections, read_corrections, write_corrections
from serving.labels import normalize_message
from training.data import load_dataset


def frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "channel": "",
                "order_id": "",
                "received_at": "",
                "source": "",
                "annotator": "",
                "labeled_at": "",
                "language": "en",
            }
            | r
            for r in rows
        ]
    )


def correction_row(text: str, risk: str, claim_type: str) -> dict[str, str]:
    return {c: "" for c in COLUMNS} | {
        "text": text,
        "language": "fr",
        "risk": risk,
        "claim_type": claim_type,
        "source": "label-studio",
        "ls_task_id": "1",
        "ls_annotation_id": "10",
    }


def test_corrections_file_round_trips_and_loads_as_training_data(tmp_path: Path) -> None:
    row = correction_row("Le colis est arrivé cassé", "at_risk", "damaged_defective")
    path = tmp_path / "data" / "corrections.csv"
    write_corrections(path, [row])
    assert read_corrections(path) == [row]
    df = load_dataset(path)
    assert df.loc[0, "risk"] == "at_risk" and df.loc[0, "ls_annotation_id"] == "10"
    assert set(COLUMNS) <= set(df.columns)
    assert [p.name for p in path.parent.iterdir()] == ["corrections.csv"]  # no temporary file left


def test_a_file_that_is_not_a_corrections_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "corrections.csv"
    path.write_text("text,language,risk,claim_type\nhello,en,routine,none\n")
    with pytest.raises(LoopError, match="not a corrections file"):
        read_corrections(path)


def test_a_correction_overrides_the_seed_label_of_the_same_message_and_the_newest_wins() -> None:
    seed = frame(
        [
            {"text": "Where is my parcel?", "risk": "routine", "claim_type": "none"},
            {"text": "Thanks, all good", "risk": "routine", "claim_type": "none"},
        ]
    )
    test = frame([{"text": "A test message", "risk": "routine", "claim_type": "none"}])
    day1, day2, day3 = "2026-01-01", "2026-01-02", "2026-01-03"
    corr = frame(
        [
            # same message as the seed row, with other whitespace: overrides it; the later one wins
            {"text": "  Where is   my parcel? ", "risk": "at_risk", "claim_type": "other", "labeled_at": day2},
            {"text": "Where is my parcel?", "risk": "at_risk", "claim_type": "not_received", "labeled_at": day3},
            {"text": "Brand new message", "risk": "claim_filed", "claim_type": "other", "labeled_at": day1},
            {"text": "A  test message", "risk": "at_risk", "claim_type": "other", "labeled_at": day1},
            {"text": "Thanks, all good", "risk": "routine", "claim_type": "none", "labeled_at": day1},
        ]
    )
    m = apply_corrections(seed, corr, test)

    by_text = {
        normalize_message(t): (r, c)
        for t, r, c in zip(m.train["text"], m.train["risk"], m.train["claim_type"], strict=True)
    }
    assert by_text[normalize_message("Where is my parcel?")] == ("at_risk", "not_received")
    assert by_text[normalize_message("Brand new message")] == ("claim_filed", "other")
    assert normalize_message("A test message") not in by_text  # the test split stays unseen
    assert len(m.train) == 3  # one row per message
    assert (m.superseded, len(m.held_out), len(m.applied), m.overriding, m.relabelled) == (1, 1, 3, 2, 1)
    changes = dict(zip(m.applied["text"].map(normalize_message), m.applied["change"], strict=True))
    assert changes == {
        normalize_message("Where is my parcel?"): "relabel",
        normalize_message("Brand new message"): "new",
        normalize_message("Thanks, all good"): "confirm",
    }
    assert set(m.train.loc[m.train["text"] == "Brand new message", "source"]) == {"correction"}
    counts = m.counts()
    assert counts["corrections.held_out"] == 1 and counts["train.risk.at_risk"] == 1


def test_no_corrections_leaves_the_seed_data_as_it_is() -> None:
    seed = frame([{"text": "a", "risk": "routine", "claim_type": "none"}])
    m = apply_corrections(seed, None, frame([{"text": "b", "risk": "routine", "claim_type": "none"}]))
    assert m.train["text"].tolist() == ["a"] and len(m.applied) == 0
    assert m.counts()["corrections.applied"] == 0
