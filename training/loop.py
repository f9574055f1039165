"""The labeling loop: push the tickets that most need a human to Label Studio, pull reviewers'
corrections into data/corrections.csv. `triage label push|pull` and the notebook call these.

Label Studio is asked first, so when it is down or refuses the token nothing here has been changed;
the corrections file is replaced atomically, so a crash never leaves half of it.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from serving.predlog import PredictionLog
from serving.settings import Settings
from training import labeling
from training.labeling import CORRECTION_COLUMNS, REASONS, Rejection
from training.labelstudio import LabelStudioClient

DEFAULT_LIMIT = 100
CORRECTIONS_FILE = "corrections.csv"
PROJECT_DESCRIPTION = ("Correct the triage model: pick the risk and claim type the message really has "
                       "(labeling guide: ../shared/labeling-guide.md). Most urgent tickets first.")


class LabelLoopError(RuntimeError):
    """A problem with the loop's own files (not with Label Studio)."""


def corrections_path(settings: Settings) -> Path:
    return settings.data_dir / CORRECTIONS_FILE


# -- push -------------------------------------------------------------------------------------------
@dataclass
class PushResult:
    project_id: int
    project_created: bool
    sent: int
    task_ids: list[int]
    by_reason: dict[str, int]
    already_sent: int
    waiting: int  # messages still waiting (beyond --limit)

    def report(self) -> str:
        made = "created" if self.project_created else "reused"
        reasons = ", ".join(f"{r.replace('_', ' ')} {self.by_reason[r]}"
                            for r in REASONS if self.by_reason.get(r))
        lines = [f"Label Studio project {self.project_id} ({made}): sent {self.sent} new task(s)"
                 + (f" ({reasons})" if reasons else ""),
                 f"{self.already_sent} message(s) were already in the project and were not sent again"]
        if self.waiting:
            lines.append(f"{self.waiting} more message(s) wait for the next push (--limit sends more)")
        return "\n".join(lines)


def push(settings: Settings, limit: int = DEFAULT_LIMIT,
         client: LabelStudioClient | None = None) -> PushResult:
    """Send up to `limit` logged messages that were never sent, most urgent first, each with the model's
    answer as a pre-annotation; remember what was sent so that no message is ever sent twice."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    ls = client or LabelStudioClient.from_settings(settings)
    project_id, created = ls.ensure_project(settings.label_studio_project, labeling.label_config(),
                                            PROJECT_DESCRIPTION)
    in_project = ls.task_keys(project_id)
    plog = PredictionLog.open(settings.db_url)
    try:
        # tasks in the project that the log does not know (an earlier push that crashed before it could
        # record them, or another log): record them, so they are not sent again
        known = plog.sent_keys(project_id)
        plog.mark_sent(project_id, [(k, t, None) for k, t in in_project.items() if k not in known])
        sent_before = plog.sent_keys(project_id)
        unsent = plog.list_predictions(exclude_sent_to=project_id)
        queue = labeling.prioritize(unsent, exclude_keys=sent_before)
        batch = queue[:limit]
        ids = ls.import_tasks(project_id, [labeling.to_task(p) for p in batch])
        plog.mark_sent(project_id, [(p.text_key, i, p.request_id) for p, i in zip(batch, ids, strict=True)])
    finally:
        plog.close()
    return PushResult(project_id, created, len(ids), ids, dict(Counter(labeling.reason(p) for p in batch)),
                      len(sent_before), len(queue) - len(batch))


# -- pull -------------------------------------------------------------------------------------------
@dataclass
class PullResult:
    project_id: int
    path: Path
    added: int
    updated: int
    already_present: int
    rejected: list[Rejection] = field(default_factory=list)
    total: int = 0

    def report(self) -> str:
        lines = [f"pulled from Label Studio project {self.project_id}: {self.added} added, "
                 f"{self.updated} updated, {self.already_present} already present, {len(self.rejected)} "
                 f"rejected; {self.path} has {self.total} correction(s)"]
        lines += [f"  rejected {r}" for r in self.rejected]
        return "\n".join(lines)


def pull(settings: Settings, client: LabelStudioClient | None = None, path: Path | None = None) -> PullResult:
    """Add the project's completed annotations to data/corrections.csv (one row per annotation, with
    provenance); skipped ones and those whose labels break the guide are rejected with their reason."""
    path = path or corrections_path(settings)
    existing = read_corrections(path)  # a broken file stops us before Label Studio is asked anything
    ls = client or LabelStudioClient.from_settings(settings)
    project_id = ls.find_project(settings.label_studio_project)
    if project_id is None:
        raise LabelLoopError(f"Label Studio at {ls.where} has no project {settings.label_studio_project!r}: "
                             "push some tickets first (triage label push)")
    tasks = ls.export(project_id)
    annotators = ls.annotators()
    request_ids = [str((t.get("data") or {}).get("request_id") or "") for t in tasks]
    languages = logged_languages(settings, [r for r in request_ids if r])
    rows, rejected = labeling.export_to_rows(tasks, annotators, languages)
    merged = labeling.merge_corrections(existing, rows)
    if merged.added or merged.updated:
        write_corrections(path, merged.rows)
    return PullResult(project_id, path, merged.added, merged.updated, merged.unchanged, rejected,
                      len(merged.rows))


def logged_languages(settings: Settings, request_ids: Sequence[str]) -> dict[str, str]:
    """request id -> language the prediction log recorded (empty when there is no log to read)."""
    if not request_ids:
        return {}
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_file():
        return {}  # never create a database just to read it
    plog = PredictionLog(settings.db_url)
    try:
        return {p.request_id: p.language for p in plog.list_predictions(request_ids=request_ids)}
    except Exception:  # a log without tables yet: the task's language is used instead
        return {}
    finally:
        plog.close()


def read_corrections(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LabelLoopError(f"{path}: cannot read it ({err}); fix or move it, then pull again") from err
    if "ls_annotation_id" not in header:
        raise LabelLoopError(f"{path} is not a corrections file (no ls_annotation_id column); move it away, "
                             "then pull again")
    return rows


def write_corrections(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Replace `path` with `rows` atomically: a temporary file beside it, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(CORRECTION_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
