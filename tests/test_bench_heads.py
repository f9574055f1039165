"""`python -m benchmarks.heads`: the risk head fitted with subnormals flushed and not, on the real encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.heads import main
from tests.conftest import DATA, read_rows, write_rows
from training import heads


@pytest.mark.model
def test_both_fits_end_at_the_same_loss_and_the_result_is_written(tmp_path: Path) -> None:
    fields, rows = read_rows(DATA / "train.csv")
    data = write_rows(tmp_path / "train.csv", fields, rows[:300])
    out = tmp_path / "results"
    assert main(["--data", str(data), "--epochs", "5", "--out", str(out)]) == 0
    (written,) = out.glob("heads-*.json")
    result = json.loads(written.read_text())
    assert result["rows"] == 300 and result["epochs"] == 5
    assert [r["flushed"] for r in result["runs"]] == [True, False]
    assert all(r["epochs"] == 5 and r["seconds"] > 0 for r in result["runs"])
    assert result["same_loss"] and result["runs"][0]["loss"] == pytest.approx(result["runs"][1]["loss"], rel=1e-6)
    assert heads.subnormals_flushed.__name__ == "subnormals_flushed"  # the benchmark put training's flush back


@pytest.mark.parametrize(("args", "says"), [(["--rows", "0"], "at least 1"), (["--epochs", "x"], "invalid")])
def test_bad_arguments_get_one_line_and_write_nothing(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_a_missing_data_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "results")])
    assert exit_.value.code == 2
    assert "nope.csv" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
