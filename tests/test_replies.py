"""The vetted reply catalogue: the default one covers every case, choosing and rendering follow the rules,
and a bad catalogue is refused with the file, the line and the reason (by the loader, the app and the CLI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from serving.app import create_app
from serving.cases.replies import (
    DEFAULT_CATALOGUE,
    MissingPlaceholder,
    ReplyCatalogueError,
    UnknownReply,
    load_catalogue,
)
from serving.labels import CLAIM_TYPES, GROUNDS, LANGUAGES, RISKS, consistent
from serving.settings import Settings
from tests.processes import run_triage, triage_env
from triage.cli import main

HEADER = """fallback_language: en
buyer_name:
  fr: Madame, Monsieur
  it: gentile cliente
  en: there
replies:
"""


def reply(
    rid: str, language: str, claim_type: str, body: str = "Hello {buyer_name}, order {order_id}.", **extra: str
) -> str:
    lines = [f"  - id: {rid}", f"    language: {language}", f"    claim_type: {claim_type}"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    lines += [f"    title: Title of {rid}", "    body: |", *[f"      {line}" for line in body.splitlines()]]
    return "\n".join(lines) + "\n"


def full(*, skip: tuple[str, str] | None = None) -> str:
    """A minimal catalogue with one reply per claim type and language (optionally one left out)."""
    out = HEADER
    for lang in LANGUAGES:
        for claim_type in CLAIM_TYPES:
            if (claim_type, lang) != skip:
                out += reply(f"{claim_type}.{lang}", lang, claim_type)
    return out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "replies.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


# -- the default catalogue ----------------------------------------------------------------------------
def test_the_default_catalogue_answers_every_risk_claim_type_and_language() -> None:
    cat = load_catalogue()
    assert cat.path == DEFAULT_CATALOGUE and len(cat.sha256) == 64
    for lang in LANGUAGES:
        for risk in RISKS:
            for claim_type in CLAIM_TYPES:
                if consistent(risk, claim_type):
                    chosen = cat.choose(risk, claim_type, lang)
                    assert chosen.language == lang and claim_type in chosen.claim_types and risk in chosen.risks
    # a filed claim gets its own acknowledgment; a threat gets the reply of its ground
    assert cat.choose("claim_filed", "not_received", "fr").id == "claim_filed.fr"
    assert cat.choose("at_risk", "customs_fees", "it").id == "customs_fees.it"
    assert cat.choose("routine", "none", "en").id == "ack.routine.en"
    # a language the model is not built for gets the fallback's reply
    assert cat.choose("at_risk", "not_received", "other").id == "not_received.en"
    assert cat.chosen_for["not_received.fr"] == [("at_risk", "not_received")]  # claim_filed.fr answers filed claims
    assert len(cat.chosen_for["claim_filed.it"]) == 6


def test_the_default_replies_never_ask_to_withdraw_a_claim_or_for_feedback() -> None:
    cat = load_catalogue()
    for r in cat.replies.values():
        text = (r.title + " " + r.body).casefold()
        for banned in ("withdraw", "retir", "annul", "ritir", "feedback", r"review\b", r"avis\b", "recension", "http"):
            assert not re.search(banned, text), (r.id, banned)
        if r.claim_types != ("none",):  # every Tier-1 reply names the order
            assert "order_id" in r.placeholders, r.id


def test_render_fills_the_order_and_the_buyer_or_the_greeting() -> None:
    cat = load_catalogue()
    got = cat.render("not_received.fr", order_id=" 171-2233445-6677889 ", buyer_name="Marie\nDupont")
    assert got.reply.id == "not_received.fr"
    assert got.text.startswith("Bonjour Marie Dupont,\n") and "commande 171-2233445-6677889," in got.text
    assert "{" not in got.text and "}" not in got.text
    anonymous = cat.render("damaged_defective.it", order_id="402-1")
    assert anonymous.text.startswith("Buongiorno gentile cliente,\n")
    assert cat.render("ack.routine.en").text.startswith("Hello there,\n")  # no order number needed
    with pytest.raises(MissingPlaceholder, match="give order_id"):
        cat.render("not_received.en")
    with pytest.raises(UnknownReply, match="'nope'"):
        cat.render("nope", order_id="1")


def test_a_minimal_catalogue_loads(tmp_path: Path) -> None:
    cat = load_catalogue(write(tmp_path, full()))
    assert len(cat.replies) == len(LANGUAGES) * len(CLAIM_TYPES)
    assert cat.choose("claim_filed", "other", "it").id == "other.it"


def test_a_reply_that_names_its_risk_wins(tmp_path: Path) -> None:
    extra = reply("claim.en", "en", "[" + ", ".join(GROUNDS) + "]", risk="claim_filed")
    cat = load_catalogue(write(tmp_path, full() + extra))
    assert cat.choose("claim_filed", "customs_fees", "en").id == "claim.en"
    assert cat.choose("at_risk", "customs_fees", "en").id == "customs_fees.en"
    assert cat.choose("claim_filed", "customs_fees", "fr").id == "customs_fees.fr"


# -- bad catalogues: file, line, reason ---------------------------------------------------------------
def bad(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ReplyCatalogueError) as err:
        load_catalogue(path)
    return str(err.value)


def test_an_unknown_placeholder_is_refused_on_its_line(tmp_path: Path) -> None:
    text = full().replace(
        reply("other.it", "it", "other"),
        reply("other.it", "it", "other", body="Buongiorno {buyer_name},\nil tracking è {tracking_number}.\nSaluti"),
    )
    msg = bad(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'replies.yaml'}:{line_of(text, '{tracking_number}')}: ")
    assert "unknown placeholder {tracking_number}" in msg and "{order_id}, {buyer_name}" in msg


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("Hello {buyer_name, order", "expected '}'"),
        ("Hello } there", "Single '}'"),
        ("Hello {}", "positional placeholder"),
        ("Order {order_id!r}", "with no format"),
        ("Order {order_id:>20}", "with no format"),
        ("Order {order_id.upper}", "unknown placeholder"),
    ],
)
def test_malformed_placeholders_are_refused(tmp_path: Path, body: str, says: str) -> None:
    text = full().replace(reply("other.en", "en", "other"), reply("other.en", "en", "other", body=body))
    msg = bad(tmp_path, text)
    assert f"replies.yaml:{line_of(text, body)}: " in msg and says in msg and "'other.en'" in msg


def test_a_missing_reply_is_refused(tmp_path: Path) -> None:
    msg = bad(tmp_path, full(skip=("customs_fees", "it")))
    assert f"replies.yaml:{line_of(HEADER, 'replies:') + 1}: " in msg
    assert "no reply for claim_filed / customs_fees / it, at_risk / customs_fees / it" in msg


def test_two_replies_for_the_same_case_are_refused(tmp_path: Path) -> None:
    text = full() + reply("other-again.fr", "fr", "other")
    msg = bad(tmp_path, text)
    assert f"replies.yaml:{line_of(text, '- id: other-again.fr')}: " in msg
    assert "replies 'other.fr' (line" in msg and "both answer claim_filed / other in fr" in msg


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (
            lambda t: t.replace("language: it\n    claim_type: other", "language: de\n    claim_type: other"),
            "unknown language",
        ),
        (
            lambda t: t.replace(
                "claim_type: other\n    title: Title of other.fr", "claim_type: refund\n    title: Title of other.fr"
            ),
            "unknown claim_type",
        ),
        (lambda t: t.replace("  - id: other.fr\n", "  - id: other.fr\n    tittle: x\n"), "unknown field 'tittle'"),
        (lambda t: t.replace("  - id: other.en\n", "  - id: other.fr\n"), "reply id 'other.fr' is used twice"),
        (lambda t: t.replace("  - id: other.en\n", "  - id: Other EN\n"), "must be lowercase letters"),
        (lambda t: t.replace("  en: there\n", ""), "buyer_name needs a en greeting"),
        (lambda t: t.replace("fallback_language: en", "fallback_language: de"), "unknown fallback_language 'de'"),
        (lambda t: t.replace("claim_type: none\n", "claim_type: none\n    risk: at_risk\n", 1), "never goes with"),
        (lambda t: t.replace("    title: Title of other.it\n", ""), "a reply needs 'title'"),
        (
            lambda t: t.replace("language: fr\n    claim_type: other", "language: 12\n    claim_type: other"),
            "must be text",
        ),
    ],
)
def test_bad_fields_are_refused_with_their_line(tmp_path: Path, mutate: object, says: str) -> None:
    text = mutate(full())  # type: ignore[operator]
    msg = bad(tmp_path, text)
    assert says in msg
    assert "replies.yaml:" in msg and msg.split("replies.yaml:")[1].split(":")[0].isdigit()


def test_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    text = full().replace("    title: Title of other.en\n", "    title: [unclosed\n")
    msg = bad(tmp_path, text)
    assert "not valid YAML" in msg
    line = int(msg.split("replies.yaml:")[1].split(":")[0])
    assert abs(line - line_of(text, "[unclosed")) <= 1


def test_every_problem_is_listed(tmp_path: Path) -> None:
    text = full().replace("  - id: other.en\n", "  - id: other.en\n    tittle: x\n").replace("{order_id}", "{order}", 1)
    msg = bad(tmp_path, text)
    assert "2 problems" in msg and "tittle" in msg and "{order}" in msg


def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    assert ":1: the reply catalogue is empty" in bad(tmp_path, "# nothing\n")
    with pytest.raises(ReplyCatalogueError, match="cannot read the reply catalogue"):
        load_catalogue(tmp_path / "missing.yaml")


def test_a_bad_catalogue_stops_the_app(tmp_path: Path) -> None:
    path = write(tmp_path, full(skip=("none", "fr")))
    with pytest.raises(ReplyCatalogueError, match="no reply for routine / none / fr"):
        create_app(Settings(_env_file=None, replies_file=path, var_dir=tmp_path))  # type: ignore[call-arg]


def test_triage_serve_refuses_a_bad_catalogue_with_file_line_and_reason(tmp_path: Path) -> None:
    text = full().replace("{order_id}", "{order_number}", 1)
    path = write(tmp_path, text)
    env = triage_env({"TRIAGE_REPLIES_FILE": path, "TRIAGE_VAR_DIR": tmp_path / "var"})
    run = run_triage("serve", "--model", tmp_path / "no-model", "--port", "1", env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().startswith("triage serve: ")
    assert f"{path}:{line_of(text, '{order_number}')}: unknown placeholder {{order_number}}" in run.stderr.replace(
        "body of reply 'not_received.fr': ", ""
    )
    assert "Traceback" not in run.stderr


def test_triage_replies_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replies", "check", str(DEFAULT_CATALOGUE)]) == 0
    assert "24 replies" in capsys.readouterr().out
    assert main(["replies", "check", str(write(tmp_path, full(skip=("other", "en"))))]) == 2
    assert "no reply for claim_filed / other / en, at_risk / other / en" in capsys.readouterr().err
