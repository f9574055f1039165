"""`triage label push`: send the logged tickets that most need a human to Label Studio, each with the
model's answer as a pre-annotation, never a message twice.

Label Studio is asked first, so when it is down or refuses the token nothing here has been changed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from loop import tasks
from loop.labelstudio import LabelStudioClient
from loop.tasks import REASONS
from serving.predlog import PredictionLog
from serving.settings import Settings

DEFAULT_LIMIT = 100
PROJECT_DESCRIPTION = (
    "Correct the triage model: pick the risk and claim type the message really has "
    "(labeling guide: docs/labeling-guide.md). Most urgent tickets first."
)


@dataclass
class PushResult:
    project_id: int
    project_created: bool
    sent: int
    task_ids: list[int]
    by_reason: dict[str, int]
    already_sent: int
    waiting: int  # messages still waiting (beyond --limit)
    no_text: int = 0  # logged without their text (TRIAGE_LOG_TEXT=hash): nothing to send

    def report(self) -> str:
        made = "created" if self.project_created else "reused"
        reasons = ", ".join(f"{r.replace('_', ' ')} {self.by_reason[r]}" for r in REASONS if self.by_reason.get(r))
        lines = [
            f"Label Studio project {self.project_id} ({made}): sent {self.sent} new task(s)"
            + (f" ({reasons})" if reasons else ""),
            f"{self.already_sent} message(s) were already in the project and were not sent again",
        ]
        if self.waiting:
            lines.append(f"{self.waiting} more message(s) wait for the next push (--limit sends more)")
        if self.no_text:
            lines.append(
                f"{self.no_text} logged message(s) have no text (logged with TRIAGE_LOG_TEXT=hash): nothing to "
                "send for them; log with `redacted` or `full` to label new traffic"
            )
        return "\n".join(lines)


def push(settings: Settings, limit: int = DEFAULT_LIMIT, client: LabelStudioClient | None = None) -> PushResult:
    """Send up to `limit` logged messages that were never sent, most urgent first, each with the model's
    answer as a pre-annotation; remember what was sent so that no message is ever sent twice."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    ls = client or LabelStudioClient.from_settings(settings)
    project_id, created = ls.ensure_project(
        settings.label_studio_project, tasks.label_config(), PROJECT_DESCRIPTION, tasks.instructions()
    )
    in_project = ls.task_keys(project_id)
    plog = PredictionLog.open(settings.db_url)
    try:
        # tasks in the project that the log does not know (an earlier push that crashed before it could
        # record them, or another log): record them, so they are not sent again
        known = plog.sent_keys(project_id)
        plog.mark_sent(project_id, [(k, t, None) for k, t in in_project.items() if k not in known])
        sent_before = plog.sent_keys(project_id)
        logged = plog.list_predictions(exclude_sent_to=project_id)
        unsent = [p for p in logged if p.text]
        queue = tasks.prioritize(unsent, exclude_keys=sent_before)
        batch = queue[:limit]
        ids = ls.import_tasks(project_id, [tasks.to_task(p) for p in batch])
        plog.mark_sent(project_id, [(p.text_key, i, p.request_id) for p, i in zip(batch, ids, strict=True)])
    finally:
        plog.close()
    return PushResult(
        project_id,
        created,
        len(ids),
        ids,
        dict(Counter(tasks.reason(p) for p in batch)),
        len(sent_before),
        len(queue) - len(batch),
        len(logged) - len(unsent),
    )
