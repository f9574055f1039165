"""`triage case export`: a case's whole trail as a timestamped Markdown or JSON record, from the service's
database."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.cases.store import read_case
from serving.predlog import PredictionLog
from tests.clock import FrozenClock
from tests.desk import ANGRY, CLAIM, FOLLOW_UP, ORDER, Desk, H, open_desk
from triage.cli import main


@pytest.fixture
def story(tmp_path: Path) -> Iterator[tuple[Desk, int, str]]:
    """One order's story: an angry message, a follow-up, Amazon's claim notification, agents' actions."""
    url = f"sqlite:///{tmp_path / 'triage.db'}"
    desk = open_desk(url, FrozenClock())
    t0 = desk.clock()
    first = desk.classify(ANGRY, "at_risk", "not_received", received_at=t0)
    assert first.case is not None
    cid = first.case.case_id
    desk.clock.advance(minutes=25)
    desk.event(cid, "replied", agent="tier2.paul", reply_id="not_received.fr", buyer_name="Marie")
    desk.clock.advance(hours=20)
    follow = desk.classify(FOLLOW_UP, "routine", "none")
    desk.plog.add_feedback(follow.request_id, "at_risk", "not_received", "marie.dupont", now=desk.clock())
    desk.clock.advance(hours=10)
    desk.classify(CLAIM, "claim_filed", "not_received", received_at=t0 + 30 * H)
    desk.clock.advance(hours=1)
    desk.event(cid, "evidence_attached", agent="marie.dupont", note="tracking 1Z999 + signed proof of delivery")
    desk.event(cid, "resolved", agent="marie.dupont", note="answered Amazon with the evidence; replacement sent")
    desk.plog.close()
    yield desk, cid, url


def export(url: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    """`triage case export ARGS` in this process (the CLI's own entry point), in `cwd`, on database `url`."""
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(cwd)
        for key in [k for k in os.environ if k.startswith("TRIAGE_")]:
            mp.delenv(key)
        mp.setenv("TRIAGE_DATABASE_URL", url)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["case", "export", *args])
            except SystemExit as exit_:  # argparse refusing the command line
                code = int(exit_.code or 0)
    finally:
        mp.undo()
    return code, out.getvalue(), err.getvalue()


def test_markdown_record_tells_the_story_in_time_order(story: tuple[Desk, int, str], tmp_path: Path) -> None:
    _, cid, url = story
    out = tmp_path / "records" / "case.md"
    code, stdout, stderr = export(url, tmp_path, str(cid), "--out", str(out))
    assert code == 0, stderr
    assert f"case {cid} (3 messages, 3 events) written to {out}" in stdout
    md = out.read_text(encoding="utf-8")
    assert md.startswith(f"# Case {cid}: order {ORDER} (amazon)\n")
    assert "| response deadline (answer Amazon by) | 2026-11-30 15:30:00 UTC |" in md
    assert "| first contact | 2026-11-27 09:30:00 UTC |" in md
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert headings == [
        "### 2026-11-27 09:30:00 UTC - message",
        "### 2026-11-27 09:55:00 UTC - reply sent - tier2.paul",
        "### 2026-11-28 05:55:00 UTC - message",
        "### 2026-11-28 15:30:00 UTC - message",
        "### 2026-11-28 16:55:00 UTC - evidence attached - marie.dupont",
        "### 2026-11-28 16:55:00 UTC - case resolved - marie.dupont",
    ]
    assert f"> {ANGRY}" in md and f"> {CLAIM}" in md
    assert "> Bonjour Marie," in md and f"commande {ORDER}" in md  # the reply as it was sent
    assert "routed to Tier 1 (escalated by the case)" in md
    assert "agent feedback (marie.dupont, 2026-11-28 05:55:00 UTC): at_risk / not_received" in md
    assert "Note: tracking 1Z999 + signed proof of delivery" in md


def test_json_record_is_the_trail_with_its_export_time(story: tuple[Desk, int, str], tmp_path: Path) -> None:
    _, cid, url = story
    code, stdout, stderr = export(url, tmp_path, str(cid), "--format", "json")
    assert code == 0, stderr
    [written] = list(tmp_path.glob(f"case-{cid}-*.json"))  # default name: case-ID-<UTC time>.json, here
    assert str(written.name) in stdout
    record = json.loads(written.read_text(encoding="utf-8"))
    assert record["exported_by"].startswith("triage ") and record["exported_at"].endswith("+00:00")
    plog = PredictionLog(url)
    expected = read_case(plog, cid).model_dump(mode="json")
    plog.close()
    assert {k: v for k, v in record.items() if not k.startswith("exported_")} == expected
    assert [m["routing_reason"] for m in record["messages"]] == ["message", "escalated_by_case", "message"]
    assert [e["kind"] for e in record["events"]] == ["replied", "evidence_attached", "resolved"]


def test_unknown_case_or_database(story: tuple[Desk, int, str], tmp_path: Path) -> None:
    _, _, url = story
    code, _, stderr = export(url, tmp_path, "999")
    assert code == 2 and "triage case: unknown case 999" in stderr and "Traceback" not in stderr
    code, _, stderr = export(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path, "1")
    assert code == 2 and "holds no cases" in stderr
    code, _, stderr = export(url, tmp_path, "0")
    assert code == 2 and "not a positive whole number" in stderr
