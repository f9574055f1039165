"""The one module that talks to Label Studio (label-studio-sdk 2.x).

Every failure becomes a LabelStudioError that says where it tried and what to do, never with the token
in it and never as a traceback: Label Studio down, a refused token, an unexpected answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from pydantic import SecretStr

from serving.errors import TriageError
from serving.masking import mask_text, mask_url
from serving.settings import Settings

log = logging.getLogger("triage.labelstudio")
TIMEOUT_S = 60.0
START_HINT = "a local one: scripts/label-studio start, then source var/label-studio/env"


class LabelStudioError(TriageError):
    """Label Studio could not do what was asked; the message says why and what to do."""


class LabelStudioClient:
    """Projects, tasks, annotations and exports of one Label Studio server."""

    def __init__(self, url: str, token: SecretStr | str, timeout: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self.where = mask_url(self.url)
        if not self._token:
            raise LabelStudioError(f"no Label Studio token: set TRIAGE_LABEL_STUDIO_TOKEN ({START_HINT})")
        with self._calling("connecting"):
            self.sdk = LabelStudio(base_url=self.url, api_key=self._token, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioClient:
        return cls(settings.label_studio_url, settings.label_studio_token)

    def _scrub(self, text: str) -> str:
        return mask_text(text, [self._token])

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Turn transport and API failures while doing `what` into a LabelStudioError."""
        try:
            yield
        except LabelStudioError:
            raise
        except httpx.TransportError as err:
            kind = "timed out" if isinstance(err, httpx.TimeoutException) else "not reachable"
            raise LabelStudioError(
                f"Label Studio at {self.where} is {kind} ({type(err).__name__}) while {what}; nothing was "
                f"changed and nothing is lost: start it or fix TRIAGE_LABEL_STUDIO_URL ({START_HINT}), "
                "then retry"
            ) from None
        except ApiError as err:
            if err.status_code in (401, 403):
                raise LabelStudioError(
                    f"Label Studio at {self.where} refused the token (HTTP {err.status_code}) while {what}: "
                    f"check TRIAGE_LABEL_STUDIO_TOKEN ({START_HINT}); nothing was changed"
                ) from None
            detail = self._scrub(json.dumps(err.body, default=str) if err.body is not None else "")[:400]
            raise LabelStudioError(
                f"Label Studio at {self.where} answered HTTP {err.status_code} while {what}: {detail}"
            ) from None
        except httpx.HTTPError as err:
            raise LabelStudioError(
                f"Label Studio at {self.where} failed while {what}: {self._scrub(str(err))[:400]}"
            ) from None

    # -- who ----------------------------------------------------------------------------------------
    def whoami(self) -> str:
        """The e-mail of the token's user (checks the server and the token in one call)."""
        with self._calling("checking the token"):
            me = self.sdk.users.whoami()
        return str(me.email or me.username or me.id)

    def annotators(self) -> dict[int, str]:
        """User id -> e-mail, to name who annotated."""
        with self._calling("listing users"):
            users = self.sdk.users.list()
        return {int(u.id): str(u.email or u.username or u.id) for u in users if u.id is not None}

    # -- projects -----------------------------------------------------------------------------------
    def find_project(self, title: str) -> int | None:
        """The oldest project with exactly this title, or None."""
        with self._calling(f"looking up project {title!r}"):
            projects: list[Any] = list(self.sdk.projects.list(title=title))
        ids = [int(p.id) for p in projects if p.title == title and p.id is not None]
        return min(ids) if ids else None

    def ensure_project(
        self, title: str, label_config: str, description: str = "", instruction: str = ""
    ) -> tuple[int, bool]:
        """(project id, created?): reuse the project with this title (bringing its labeling config and
        reviewer instructions up to date), else create it."""
        found = self.find_project(title)
        if found is not None:
            with self._calling(f"reading project {found}"):
                current = self.sdk.projects.get(id=found)
            changed: dict[str, Any] = {}
            if _squash(current.label_config or "") != _squash(label_config):
                changed["label_config"] = label_config
            if instruction and _squash(current.expert_instruction or "") != _squash(instruction):
                changed |= {"expert_instruction": instruction, "show_instruction": True}
            if changed:
                with self._calling(f"updating {', '.join(changed)} of project {found}"):
                    self.sdk.projects.update(id=found, **changed)
            return found, False
        with self._calling(f"creating project {title!r}"):
            project = self.sdk.projects.create(
                title=title,
                label_config=label_config,
                description=description,
                expert_instruction=instruction,
                show_instruction=bool(instruction),
            )
        assert project.id is not None
        log.info("created Label Studio project %s (%r)", project.id, title)
        return int(project.id), True

    # -- tasks --------------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Create `tasks` (with their predictions) in one request; their ids, in order.

        Not retried: a repeated import after a dropped connection could create the tasks twice.
        """
        if not tasks:
            return []
        with self._calling(f"importing {len(tasks)} task(s) into project {project_id}"):
            res = self.sdk.projects.import_tasks(
                id=project_id,
                request=list(tasks),  # type: ignore[arg-type]
                return_task_ids=True,
                request_options={"max_retries": 0},
            )
        # `task_ids` is an extra field of the response model (pydantic keeps unknown fields)
        ids = [int(i) for i in getattr(res, "task_ids", None) or []]
        if len(ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio at {self.where} created {len(ids)} task(s) for "
                f"{len(tasks)} sent; check the project before pushing again"
            )
        return ids

    def export(self, project_id: int, all_tasks: bool = False) -> list[dict[str, Any]]:
        """The project's tasks as Label Studio's JSON export: annotated ones (cancelled annotations included),
        or every task with `all_tasks`."""
        with self._calling(f"exporting project {project_id}"):
            raw = b"".join(
                self.sdk.projects.exports.download_sync(project_id, export_type="JSON", download_all_tasks=all_tasks)
            )
        try:
            tasks = json.loads(raw)
        except ValueError as err:
            raise LabelStudioError(f"Label Studio at {self.where} sent an export that is not JSON ({err})") from None
        if not isinstance(tasks, list):
            raise LabelStudioError(f"Label Studio at {self.where} sent an export that is not a list of tasks")
        return tasks

    def task_keys(self, project_id: int) -> dict[str, int]:
        """text_key -> task id of every task of the project that carries one (tasks `triage` pushed)."""
        keys: dict[str, int] = {}
        for task in self.export(project_id, all_tasks=True):
            key = (task.get("data") or {}).get("text_key")
            if key and task.get("id") is not None:
                keys.setdefault(str(key), int(task["id"]))
        return keys

    # -- annotations (what a reviewer does in the UI; used by tests and scripts) ----------------------
    def annotate(self, task_id: int, result: Sequence[dict[str, Any]], cancelled: bool = False) -> int:
        with self._calling(f"annotating task {task_id}"):
            ann = self.sdk.annotations.create(id=task_id, result=list(result), was_cancelled=cancelled)
        assert ann.id is not None
        return int(ann.id)

    def delete_project(self, project_id: int) -> None:
        with self._calling(f"deleting project {project_id}"):
            self.sdk.projects.delete(id=project_id)


def _squash(xml: str) -> str:
    return "".join(xml.split())
