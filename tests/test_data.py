"""training.data.load_dataset: every bad row reported by line number, nothing loaded; the shipped data."""

from __future__ import annotations

from collections import Counter
from itertools import product
from pathlib import Path

import pandas as pd
import pytest

from serving.labels import CLAIM_TYPES, GROUNDS, LANGUAGES, RISKS, message_key
from training.data import DataError, coverage_table, load_dataset
from training.metrics import LENGTH_BUCKETS, length_bucket
from training.surface import MAX_SURFACE_AUC, surface_auc

from .conftest import DATA, SHARED

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
REAL = SHARED / "benchmarks" / "amazonhelp-tweets" / "dev.csv"


@pytest.fixture(scope="module")
def shipped() -> dict[str, pd.DataFrame]:
    return {name: load_dataset(DATA / f"{name}.csv") for name in ("train", "test")}


@pytest.fixture(scope="module")
def probe() -> pd.DataFrame:
    """The keyword probe, data/lexical.csv: an evaluation set beside the challenge set."""
    return load_dataset(DATA / "lexical.csv")


def test_shipped_data_size_languages_and_slices(shipped: dict[str, pd.DataFrame]) -> None:
    train, test = shipped["train"], shipped["test"]
    assert len(train) >= 3000 and len(test) >= 600
    for df, least in ((train, 1000), (test, 200)):
        counts = Counter(df["language"])
        assert all(counts[lang] >= least for lang in LANGUAGES), counts
        assert (df["slice"] != "").all(), "every row names its slice"


@pytest.mark.parametrize("name", ["train", "test"])
def test_shipped_data_covers_every_label_pair_in_every_language(shipped: dict[str, pd.DataFrame], name: str) -> None:
    df = shipped[name]
    pairs = {("routine", "none")} | set(product(["claim_filed", "at_risk"], GROUNDS))
    assert len(pairs) == 13 and {r for r, _ in pairs} == set(RISKS)
    assert {c for _, c in pairs} == set(CLAIM_TYPES)
    present = set(zip(df["language"], df["risk"], df["claim_type"], strict=True))
    missing = [(lang, r, c) for lang in LANGUAGES for r, c in sorted(pairs) if (lang, r, c) not in present]
    assert not missing, f"{name}.csv lacks {missing}"


def test_short_calm_complaints_exist_for_every_ground_in_every_language(shipped: dict[str, pd.DataFrame]) -> None:
    train = shipped["train"]
    calm = train[(train["slice"] == "complaint_short_calm")]
    assert (calm["text"].str.len() < 100).all()
    per = Counter(zip(calm["language"], calm["claim_type"], strict=True))
    assert all(per[(lang, g)] >= 10 for lang in LANGUAGES for g in GROUNDS), per


def test_the_test_split_has_enough_tier1_messages_in_every_language_and_length_bucket(
    shipped: dict[str, pd.DataFrame],
) -> None:
    tier1 = shipped["test"][shipped["test"]["risk"] != "routine"]
    per_cell = Counter(zip(tier1["language"], tier1["text"].map(length_bucket), strict=True))
    for lang, (bucket, _, _) in product(LANGUAGES, LENGTH_BUCKETS):
        assert per_cell[(lang, bucket)] >= 25, (lang, bucket, per_cell[(lang, bucket)])


def test_shipped_train_and_test_share_no_message(shipped: dict[str, pd.DataFrame]) -> None:
    train_keys = set(shipped["train"]["text"].map(message_key))
    assert not train_keys & set(shipped["test"]["text"].map(message_key))


# the words of a claim, a refund, a return or a guarantee, in the three languages
CLAIM_WORDS = (
    r"refund|rembours|rimbors|\bclaim|réclam|reclam|a.?to.?z|\ba à z|dalla a alla z|chargeback|litige|contestaz|"
    r"dispute|\breturn|retour|\breso\b|restitu|guarantee|garantie|garanzia|warranty"
)


def test_the_keyword_probe_is_apart_from_training_and_turns_the_words_against_the_label(
    shipped: dict[str, pd.DataFrame], probe: pd.DataFrame
) -> None:
    """The keyword probe: routine messages in the words of a claim, Tier-1 ones without them."""
    assert Counter(probe["language"]) == {lang: 160 for lang in LANGUAGES}
    assert not set(probe["text"].map(message_key)) & set(shipped["train"]["text"].map(message_key))
    says_claim_words = probe["text"].str.contains(CLAIM_WORDS, case=False, regex=True)
    routine = probe["risk"] == "routine"
    assert says_claim_words[routine].mean() >= 0.7 and not says_claim_words[~routine].any()


def test_no_real_evaluation_message_is_in_the_data(shipped: dict[str, pd.DataFrame], probe: pd.DataFrame) -> None:
    """The real tweets are an evaluation set: none of their texts, normalised, is in data/."""
    if not REAL.is_file():
        pytest.skip(f"{REAL} is not beside the checkout")
    real = set(load_dataset(REAL)["text"].map(message_key))
    for name, df in (shipped | {"lexical": probe}).items():
        assert not real & set(df["text"].map(message_key)), f"{name}.csv holds real evaluation messages"


def test_the_surface_of_a_message_does_not_give_its_label_away(shipped: dict[str, pd.DataFrame]) -> None:
    """Length, punctuation, digits, an order id, capitals or a greeting alone must not predict Tier 1."""
    train = shipped["train"]
    auc = surface_auc(train["text"].tolist(), (train["risk"] != "routine").tolist())
    assert auc <= MAX_SURFACE_AUC, f"surface features predict Tier 1 with cross-validated AUC {auc:.3f}"


def test_the_readme_coverage_tables_are_the_datas(shipped: dict[str, pd.DataFrame]) -> None:
    readme = (DATA / "README.md").read_text()
    for name, df in shipped.items():
        assert coverage_table(df) in readme, f"data/README.md: the {name}.csv coverage table is out of date"
