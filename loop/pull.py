"""`triage label pull`: reviewers' finished annotations from Label Studio into data/corrections.csv.

Label Studio is asked first (after the corrections file is read, so a broken file stops us before
anything), and the file is replaced atomically: a crash never leaves half of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from loop.corrections import FILE_NAME, LoopError, add_pulled, read_corrections, write_corrections
from loop.labelstudio import LabelStudioClient
from loop.tasks import Rejection, export_to_rows
from serving.predlog import PredictionLog
from serving.settings import Settings


def corrections_path(settings: Settings) -> Path:
    return settings.data_dir / FILE_NAME


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
        lines = [
            f"pulled from Label Studio project {self.project_id}: {self.added} added, "
            f"{self.updated} updated, {self.already_present} already present, {len(self.rejected)} "
            f"rejected; {self.path} has {self.total} correction(s)"
        ]
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
        raise LoopError(
            f"Label Studio at {ls.where} has no project {settings.label_studio_project!r}: "
            "push some tickets first (triage label push)"
        )
    tasks = ls.export(project_id)
    annotators = ls.annotators()
    request_ids = [str((t.get("data") or {}).get("request_id") or "") for t in tasks]
    languages = logged_languages(settings, [r for r in request_ids if r])
    rows, rejected = export_to_rows(tasks, annotators, languages)
    merged = add_pulled(existing, rows)
    if merged.added or merged.updated:
        write_corrections(path, merged.rows)
    return PullResult(project_id, path, merged.added, merged.updated, merged.unchanged, rejected, len(merged.rows))


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
