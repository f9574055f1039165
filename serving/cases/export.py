"""A case as a timestamped record a seller attaches to a claim response (`triage case export`).

Amazon judges a claim on the full, timestamped history of the attempts to resolve it: the record lists every
message and every agent action in time order, with the vetted reply texts as they were sent. JSON is the
GET /cases/{id} answer plus when and by what it was exported; Markdown reads as a document.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from serving import __version__
from serving.cases.schemas import CaseEvent, CaseMessage, CaseResponse
from serving.files import atomic_write

ExportFormat = Literal["md", "json"]
EVENT_TITLES = {
    "replied": "reply sent",
    "evidence_attached": "evidence attached",
    "resolved": "case resolved",
    "reopened": "case reopened by a new Tier-1 message",
}


def stamp(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "-"


def case_json(case: CaseResponse, exported_at: datetime) -> str:
    record: dict[str, Any] = {"exported_at": exported_at.isoformat(), "exported_by": f"triage {__version__}"}
    record |= case.model_dump(mode="json")
    return json.dumps(record, indent=2, ensure_ascii=False) + "\n"


def _quote(text: str) -> list[str]:
    return [f"> {line}".rstrip() for line in text.strip().splitlines()] or [">"]


def _message(m: CaseMessage) -> list[str]:
    routed = "escalated by the case" if m.routing_reason == "escalated_by_case" else "by the message"
    lines = [f"### {stamp(m.at)} - message", "", *_quote(m.text), ""]
    lines.append(
        f"triage: {m.risk} / {m.claim_type}, routed to Tier {m.tier} ({routed}); model {m.model_version}; "
        f"request `{m.request_id}`; recorded {stamp(m.recorded_at)}"
    )
    if m.received_at is not None and m.received_at != m.at:
        lines.append(f"received_at as given: {stamp(m.received_at)}")
    if m.flags:
        lines.append(f"flags: {', '.join(m.flags)}")
    for f in m.feedback:
        lines.append(f"agent feedback ({f.agent}, {stamp(f.created_at)}): {f.risk} / {f.claim_type or '?'}")
    return [*lines, ""]


def _event(e: CaseEvent) -> list[str]:
    who = f" - {e.agent}" if e.agent else ""
    lines = [f"### {stamp(e.at)} - {EVENT_TITLES.get(e.kind, e.kind)}{who}", ""]
    if e.reply_id:
        lines += [f"Vetted reply `{e.reply_id}` (catalogue sha256 {(e.catalogue_sha256 or '')[:12]}):", ""]
        lines += [*_quote(e.reply_text or ""), ""]
    if e.note:
        lines += [f"Note: {e.note}", ""]
    if e.request_id:
        lines += [f"Message: request `{e.request_id}`", ""]
    if e.recorded_at != e.at:
        lines += [f"(recorded {stamp(e.recorded_at)})", ""]
    return lines


def case_markdown(case: CaseResponse, exported_at: datetime) -> str:
    channel = f" ({case.channel})" if case.channel else ""
    out = [
        f"# Case {case.case_id}: order {case.order_id}{channel}",
        "",
        f"Exported {stamp(exported_at)} by triage {__version__}. Every time is UTC.",
        "",
        "| | |",
        "|---|---|",
        f"| status | {case.status}{f' (resolved {stamp(case.resolved_at)})' if case.resolved_at else ''} |",
        f"| messages | {case.message_count} |",
        f"| first contact | {stamp(case.first_contact_at)} |",
        f"| last message | {stamp(case.last_message_at)} |",
        f"| highest risk | {case.highest_risk} (Tier {case.tier}) |",
        f"| claim types | {', '.join(case.claim_types) or '-'} |",
        f"| prevention deadline (buyer may file from) | {stamp(case.prevention_deadline)} |",
        f"| response deadline (answer Amazon by) | {stamp(case.response_deadline)} |",
        f"| flags | {', '.join(case.flags) or '-'} |",
        "",
        "## Timeline",
        "",
    ]
    # messages and events in time order; a message before an event at the same second
    entries: list[tuple[datetime, int, int, list[str]]] = [
        (m.at, 0, i, _message(m)) for i, m in enumerate(case.messages)
    ]
    entries += [(e.at, 1, e.event_id, _event(e)) for e in case.events]
    for _, _, _, lines in sorted(entries, key=lambda x: x[:3]):
        out += lines
    return "\n".join(out).rstrip() + "\n"


def default_path(case_id: int, fmt: ExportFormat, exported_at: datetime) -> Path:
    return Path(f"case-{case_id}-{exported_at.strftime('%Y%m%dT%H%M%SZ')}.{fmt}")


def write_case(case: CaseResponse, path: Path, fmt: ExportFormat, exported_at: datetime) -> Path:
    """Write the record to `path`, whole or not at all."""
    text = case_json(case, exported_at) if fmt == "json" else case_markdown(case, exported_at)
    with atomic_write(path) as f:
        f.write(text)
    return path
