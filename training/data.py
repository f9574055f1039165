"""Loading and validating labeled CSV files.

Every row is checked; bad rows are reported by line number with the reason, never dropped silently.
Schema (see data/README.md): `text,language,risk,claim_type` required;
`channel,order_id,received_at,source,annotator,labeled_at,slice` optional. A generic dataset needs `text` and
the target column only.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import get_args

import pandas as pd

from serving.errors import TriageError
from serving.labels import CLAIM_TYPES, RISKS, Language, consistent

REQUIRED = ("text", "language", "risk", "claim_type")
OPTIONAL = ("channel", "order_id", "received_at", "source", "annotator", "labeled_at", "slice")
DATA_LANGUAGES: tuple[Language, ...] = get_args(Language)
MAX_REPORTED = 25


class DataError(TriageError):
    """A data file that cannot be used, with every problem found (`problems`: 'line N: reason')."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        super().__init__(f"{path}: {len(problems)} problem(s), nothing was loaded:\n  {shown}{more}")


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (first line number, fields) of every record, multi-line fields included."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return [], []
        rows, start = [], reader.line_num + 1
        for fields in reader:
            if any(x.strip() for x in fields):
                rows.append((start, fields))
            start = reader.line_num + 1
    return header, rows


def load_dataset(path: Path | str, target: str | None = None) -> pd.DataFrame:
    """Load a CSV into a DataFrame (with a `line` column), or raise DataError listing every bad row.

    Without `target` the file must follow the triage schema; with `target` it needs `text` and that
    column, whatever its labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, ["file not found"])
    try:
        header, rows = _read_rows(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(path, [f"not a readable UTF-8 CSV file ({err})"]) from err
    required = ("text", target) if target else REQUIRED
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(path, [f"line 1: missing column(s) {', '.join(missing)} (header: {', '.join(header)})"])
    if not rows:
        raise DataError(path, ["no data rows"])

    problems: list[str] = []
    records = []
    for line, fields in rows:
        if len(fields) != len(header):
            problems.append(f"line {line}: {len(fields)} fields, the header has {len(header)}")
            continue
        row = {h: v.strip() for h, v in zip(header, fields, strict=True)}
        reasons = _check_row(row, target)
        if reasons:
            problems.append(f"line {line}: {'; '.join(reasons)}")
        row["line"] = line  # type: ignore[assignment]
        records.append(row)
    if problems:
        raise DataError(path, problems)
    df = pd.DataFrame.from_records(records)
    if not target:
        for col in OPTIONAL:
            if col not in df:
                df[col] = ""
    return df


def _check_row(row: dict[str, str], target: str | None) -> list[str]:
    reasons = []
    if not row["text"]:
        reasons.append("empty text")
    if target:
        if not row[target]:
            reasons.append(f"empty {target}")
        return reasons
    if row["language"] not in DATA_LANGUAGES:
        reasons.append(f"unknown language {row['language']!r} (expected one of {', '.join(DATA_LANGUAGES)})")
    if row["risk"] not in RISKS:
        reasons.append(f"unknown risk {row['risk']!r} (expected one of {', '.join(RISKS)})")
    if row["claim_type"] not in CLAIM_TYPES:
        reasons.append(f"unknown claim_type {row['claim_type']!r} (expected one of {', '.join(CLAIM_TYPES)})")
    if row["risk"] in RISKS and row["claim_type"] in CLAIM_TYPES and not consistent(row["risk"], row["claim_type"]):
        reasons.append(
            f"claim_type {row['claim_type']!r} inconsistent with risk {row['risk']!r} "
            "(claim_type is 'none' exactly when risk is 'routine')"
        )
    return reasons


def coverage_table(df: pd.DataFrame) -> str:
    """Markdown: rows per slice x language x risk (data/README.md carries this table; a test keeps it true)."""
    from serving.labels import LANGUAGES

    risks = ("claim_filed", "at_risk", "routine")
    head = "| slice | " + " | ".join(f"{lang} {r}" for lang in LANGUAGES for r in risks) + " | total |"
    lines = [head, "|---|" + "---:|" * (len(LANGUAGES) * len(risks) + 1)]
    slices = df["slice"].fillna("").replace("", "(none)")
    for name in sorted(set(slices)):
        part = df[slices == name]
        cells = [int(((part["language"] == lang) & (part["risk"] == r)).sum()) for lang in LANGUAGES for r in risks]
        lines.append(f"| {name} | " + " | ".join(str(c) if c else "" for c in cells) + f" | {len(part)} |")
    totals = [int(((df["language"] == lang) & (df["risk"] == r)).sum()) for lang in LANGUAGES for r in risks]
    lines.append("| **total** | " + " | ".join(f"**{c}**" for c in totals) + f" | **{len(df)}** |")
    return "\n".join(lines)
