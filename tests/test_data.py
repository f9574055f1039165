"""training.data.load_dataset: every bad row reported by line number, nothing loaded; the shipped data."""

from __future__ import annotations

from collections import Counter
from itertools import product
from pathlib import Path

import pytest

from serving.labels import CLAIM_TYPES, GROUNDS, LANGUAGES, RISKS
from training.data import DataError, load_dataset

from .conftest import DATA

HEADER = "text,language,risk,claim_type"
GOOD = "Where is my parcel?,en,routine,none"


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def problems_of(path: Path, target: str | None = None) -> list[str]:
    with pytest.raises(DataError) as info:
        load_dataset(path, target)
    assert "nothing was loaded" in str(info.value)
    return info.value.problems


def test_good_file_loads_with_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        GOOD,
        "Le colis est arrivé cassé,fr,at_risk,damaged_defective",
        "Ho aperto un reclamo dalla A alla Z,it,claim_filed,other",
    )
    df = load_dataset(path)
    assert df["line"].tolist() == [2, 3, 4]
    assert df["risk"].tolist() == ["routine", "at_risk", "claim_filed"]
    assert df["claim_type"].tolist() == ["none", "damaged_defective", "other"]
    # the optional columns exist (empty) even when the file does not have them
    assert (df["channel"] == "").all() and (df["order_id"] == "").all()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("Hello,en,urgent,none", "unknown risk 'urgent'"),
        ("Hello,en,at_risk,lost_parcel", "unknown claim_type 'lost_parcel'"),
        ('"",en,routine,none', "empty text"),
        ('"   ",en,routine,none', "empty text"),
        ("Hello,de,routine,none", "unknown language 'de'"),
        # claim_type inconsistent with risk, both directions
        ("Never arrived,en,routine,not_received", "inconsistent with risk 'routine'"),
        ("Never arrived,en,at_risk,none", "inconsistent with risk 'at_risk'"),
        ("I filed an A-to-z claim,en,claim_filed,none", "inconsistent with risk 'claim_filed'"),
        ("Hello,en,routine", "3 fields, the header has 4"),
    ],
)
def test_bad_row_reported_by_line_and_reason(tmp_path: Path, row: str, reason: str) -> None:
    path = write(tmp_path, HEADER, GOOD, GOOD, row, GOOD)
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith("line 4: ")
    assert reason in problems[0]


def test_every_bad_row_is_reported_and_nothing_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, "a,en,nope,none", GOOD, "b,en,routine,damaged_defective", GOOD, ",en,routine,none")
    problems = problems_of(path)
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 4", "line 6"]


def test_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "text,language,risk", "Hello,en,routine")
    (problem,) = problems_of(path)
    assert problem.startswith("line 1: missing column(s) claim_type")


def test_multiline_quoted_text_keeps_later_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER,
        '"Objet : Réclamation au titre de la garantie A à Z\n\n'
        "L'acheteur a déposé une réclamation.\",fr,claim_filed,other",  # lines 2-4
        GOOD,  # line 5
        "Hello,en,routine,not_received",
    )  # line 6
    assert problems_of(path) == [
        "line 6: claim_type 'not_received' inconsistent with risk 'routine' "
        "(claim_type is 'none' exactly when risk is 'routine')"
    ]
    path = write(tmp_path, HEADER, '"first line\nsecond line",en,routine,none', GOOD)
    df = load_dataset(path)
    assert df["line"].tolist() == [2, 4]
    assert df["text"][0] == "first line\nsecond line"


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, GOOD, "", "Hello,en,bad,none")
    assert [p.split(":")[0] for p in problems_of(path)] == ["line 4"]


def test_missing_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.csv") == ["file not found"]


def test_generic_target_mode(tmp_path: Path) -> None:
    path = write(
        tmp_path, "text,category", "How do I locate my card?,card_arrival", "What is the exchange rate?,exchange_rate"
    )
    df = load_dataset(path, target="category")
    assert df["category"].tolist() == ["card_arrival", "exchange_rate"]
    assert df["line"].tolist() == [2, 3]
    # the triage schema is not required, and is not accepted without target=
    (problem,) = problems_of(path)
    assert "missing column(s) language, risk, claim_type" in problem

    path = write(tmp_path, "text,category", "Where is my card?,", ",card_arrival")
    assert problems_of(path, target="category") == ["line 2: empty category", "line 3: empty text"]

    path = write(tmp_path, "text,label", "Where is my card?,card_arrival")
    (problem,) = problems_of(path, target="category")
    assert problem.startswith("line 1: missing column(s) category")


# -- the shipped data -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    return {name: load_dataset(DATA / f"{name}.csv") for name in ("train", "test")}


def test_shipped_data_size_and_languages(shipped: dict) -> None:
    train, test = shipped["train"], shipped["test"]
    assert len(train) + len(test) >= 900
    per_language = Counter(train["language"]) + Counter(test["language"])
    for lang in LANGUAGES:
        assert per_language[lang] >= 300, per_language


@pytest.mark.parametrize("name", ["train", "test"])
def test_shipped_data_covers_every_label_pair_in_every_language(shipped: dict, name: str) -> None:
    df = shipped[name]
    pairs = {("routine", "none")} | set(product(["claim_filed", "at_risk"], GROUNDS))
    assert len(pairs) == 13 and {r for r, _ in pairs} == set(RISKS)
    assert {c for _, c in pairs} == set(CLAIM_TYPES)
    present = set(zip(df["language"], df["risk"], df["claim_type"], strict=True))
    missing = [(lang, r, c) for lang in LANGUAGES for r, c in sorted(pairs) if (lang, r, c) not in present]
    assert not missing, f"{name}.csv lacks {missing}"


def test_shipped_train_and_test_share_no_text(shipped: dict) -> None:
    train, test = shipped["train"], shipped["test"]
    shared = set(train["text"]) & set(test["text"])
    assert not shared

    # nor near-copies differing only in case or spacing
    def norm(t: str) -> str:
        return " ".join(t.lower().split())

    assert not {norm(t) for t in train["text"]} & {norm(t) for t in test["text"]}
