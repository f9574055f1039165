"""The vetted reply catalogue: locked, policy-compliant reply templates in one YAML file.

Agents answer from these templates instead of improvising, so a Tier-2 agent can send the first
acknowledgment inside the SLA while a specialist investigates. The file is read and checked once, when the
app is built: every (risk, claim type) pair of the labeling guide has exactly one best reply in every
language, every placeholder is known. A bad file stops the service with `file:line: reason` for every
problem. The file's sha256 travels with every rendered reply, so a reply in a case's trail says which
version of the catalogue it came from.

Shape (the default, `serving/cases/replies.yaml`, is the example):

    fallback_language: en        # replies for messages in other languages
    buyer_name:                  # what {buyer_name} becomes when no name is given
      fr: Madame, Monsieur
      it: gentile cliente
      en: there
    replies:
      - id: not_received.fr
        language: fr
        claim_type: not_received     # one claim type or a list
        risk: [at_risk, claim_filed] # optional: default every risk the claim types go with
        title: Commande non reçue
        body: |
          Bonjour {buyer_name}, ... la commande {order_id} ...

A reply that names its `risk` wins over one that does not (e.g. one acknowledgment for every filed claim
over the per-ground replies); two equally specific replies for the same case are an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Final, Literal, get_args

import yaml

from serving.cases.schemas import SuggestedReply
from serving.errors import TriageError
from serving.files import sha256_file
from serving.labels import CLAIM_TYPES, LANGUAGES, RISKS, ClaimType, Language, Risk, consistent

ReplyLanguage = Literal["fr", "it", "en"]
REPLY_LANGUAGES: Final[tuple[ReplyLanguage, ...]] = get_args(ReplyLanguage)
assert REPLY_LANGUAGES == LANGUAGES  # the languages the model is built for

PLACEHOLDERS: Final = ("order_id", "buyer_name")
DEFAULT_CATALOGUE: Final = Path(__file__).with_name("replies.yaml")
MAX_BUYER_NAME = 100

_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_TOP_FIELDS: Final = ("fallback_language", "buyer_name", "replies")
_REPLY_FIELDS: Final = ("id", "language", "claim_type", "risk", "title", "body")
_REQUIRED: Final = ("id", "language", "claim_type", "title", "body")


class ReplyCatalogueError(TriageError):
    """A reply catalogue that cannot be served: every problem as `file:line: reason`."""


class UnknownReply(TriageError):
    """No reply in the catalogue has this id."""


class MissingPlaceholder(TriageError):
    """A reply needs a value that was not given (e.g. {order_id})."""


@dataclass(frozen=True)
class Reply:
    id: str
    language: ReplyLanguage
    claim_types: tuple[ClaimType, ...]
    risks: tuple[Risk, ...]
    title: str
    body: str
    placeholders: frozenset[str]
    line: int  # where it starts in the file
    names_risk: bool  # `risk` was given: more specific than a reply for every risk of its claim types


@dataclass(frozen=True)
class RenderedReply:
    reply: Reply
    title: str
    text: str


class ReplyCatalogue:
    """The checked catalogue: `choose` a reply for a classified message, `render` one for an order."""

    def __init__(
        self,
        path: Path,
        sha256: str,
        replies: list[Reply],
        fallback_language: ReplyLanguage,
        buyer_name: dict[ReplyLanguage, str],
        index: dict[tuple[Risk, ClaimType, ReplyLanguage], Reply],
    ) -> None:
        self.path = path
        self.sha256 = sha256
        self.replies = {r.id: r for r in replies}
        self.fallback_language = fallback_language
        self.buyer_name = buyer_name
        self._index = index
        # what /classify suggests each reply for: (risk, claim type) pairs, in the reply's language
        self.chosen_for: dict[str, list[tuple[Risk, ClaimType]]] = {r.id: [] for r in replies}
        for (risk, claim_type, _), reply in index.items():
            self.chosen_for[reply.id].append((risk, claim_type))

    def choose(self, risk: Risk, claim_type: ClaimType, language: Language) -> Reply:
        """The reply for a message of this risk, claim type and language (other languages: the fallback).

        Never fails on a checked catalogue: every consistent (risk, claim type) has a reply in every language.
        """
        lang: ReplyLanguage = language if language != "other" else self.fallback_language
        if not consistent(risk, claim_type):  # a caller's bug, not a user's: the guide's rule
            raise ValueError(f"inconsistent labels {risk!r} / {claim_type!r}")
        return self._index[(risk, claim_type, lang)]

    def suggest(self, risk: Risk, claim_type: ClaimType, language: Language) -> SuggestedReply:
        """`choose`, as /classify's `suggested_reply`."""
        reply = self.choose(risk, claim_type, language)
        return SuggestedReply(id=reply.id, language=reply.language, title=reply.title)

    def get(self, reply_id: str) -> Reply:
        try:
            return self.replies[reply_id]
        except KeyError:
            raise UnknownReply(
                f"unknown reply {reply_id!r}: GET /replies lists the {len(self.replies)} replies of the catalogue"
            ) from None

    def render(self, reply_id: str, order_id: str | None = None, buyer_name: str | None = None) -> RenderedReply:
        """The reply's title and text for one order; {buyer_name} falls back to the catalogue's greeting."""
        reply = self.get(reply_id)
        name = " ".join((buyer_name or "").split())[:MAX_BUYER_NAME]  # one line, bounded
        order = (order_id or "").strip()
        if "order_id" in reply.placeholders and not order:
            raise MissingPlaceholder(f"reply {reply_id!r} quotes the order number: give order_id")
        values = {"order_id": order, "buyer_name": name or self.buyer_name[reply.language]}
        return RenderedReply(reply, reply.title.format_map(values), reply.body.format_map(values))


# -- loading and checking -----------------------------------------------------------------------------
class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[str] = []

    def add(self, node: yaml.Node | int, reason: str) -> None:
        line = node if isinstance(node, int) else node.start_mark.line + 1
        self.found.append(f"{self.path}:{line}: {reason}")

    def raise_any(self) -> None:
        if len(self.found) == 1:
            raise ReplyCatalogueError(self.found[0])
        if self.found:
            listed = "\n".join(f"  {p}" for p in self.found)
            raise ReplyCatalogueError(f"{self.path}: {len(self.found)} problems in the reply catalogue:\n{listed}")


def _mapping(node: yaml.Node, what: str, fields: tuple[str, ...], problems: _Problems) -> dict[str, yaml.Node]:
    """The fields of a YAML mapping (unknown and repeated keys are problems)."""
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, f"{what} must be a mapping of {', '.join(fields)}")
        return {}
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else None
        if name not in fields:
            problems.add(key, f"unknown field {name!r} in {what} (expected {', '.join(fields)})")
        elif name in out:
            problems.add(key, f"field {name!r} is given twice in {what}")
        else:
            out[name] = value
    return out


def _text(node: yaml.Node, what: str, problems: _Problems) -> str | None:
    if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
        problems.add(node, f"{what} must be text")
        return None
    if not node.value.strip():
        problems.add(node, f"{what} is empty")
        return None
    return str(node.value)


def _choice(node: yaml.Node, what: str, allowed: tuple[str, ...], problems: _Problems) -> str | None:
    value = _text(node, what, problems)
    if value is not None and value not in allowed:
        problems.add(node, f"unknown {what} {value!r} (expected one of {', '.join(allowed)})")
        return None
    return value


def _choices(node: yaml.Node, what: str, allowed: tuple[str, ...], problems: _Problems) -> list[str] | None:
    """One value or a list of them."""
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not items:
        problems.add(node, f"{what} is an empty list")
        return None
    values = [_choice(item, what, allowed, problems) for item in items]
    return None if any(v is None for v in values) else [v for v in values if v is not None]


def _fields_of(template: str) -> Iterator[tuple[str, str | None, str | None]]:
    for _, name, spec, conversion in Formatter().parse(template):
        if name is not None:
            yield name, spec, conversion


def _parses(line: str) -> bool:
    try:
        list(_fields_of(line))
    except ValueError:
        return False
    return True


def _placeholders(node: yaml.Node, what: str, template: str, problems: _Problems) -> set[str]:
    """The placeholders of a template; unknown, positional or formatted ones are problems, on their own line."""

    def line_of(needle: str) -> int:
        start = node.start_mark.line + 1
        if needle and getattr(node, "style", None) == "|":  # a literal block: its lines are the file's
            return start + 1 + template[: max(template.find(needle), 0)].count("\n")
        return start

    try:
        fields = list(_fields_of(template))
    except ValueError as err:
        bad_line = next((line for line in template.splitlines() if not _parses(line)), "")
        problems.add(line_of(bad_line), f"{what}: {err} (write a literal brace as {{{{ or }}}})")
        return set()
    known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
    found: set[str] = set()
    for name, spec, conversion in fields:
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name not in PLACEHOLDERS:
            reason = "a positional placeholder {}" if not name else f"unknown placeholder {shown}"
            problems.add(line_of("{" + name), f"{what}: {reason} (known: {known})")
        elif spec or conversion:
            problems.add(line_of(shown), f"{what}: write the placeholder {shown} as {{{name}}}, with no format")
        else:
            found.add(name)
    return found


def _reply(node: yaml.Node, problems: _Problems) -> Reply | None:
    before = len(problems.found)
    line = node.start_mark.line + 1
    f = _mapping(node, "a reply", _REPLY_FIELDS, problems)
    if not f:
        return None
    for name in _REQUIRED:
        if name not in f:
            problems.add(node, f"a reply needs {name!r}")
    if len(problems.found) > before:
        return None
    reply_id = _text(f["id"], "id", problems)
    if reply_id is not None and not _ID.fullmatch(reply_id):
        problems.add(f["id"], f"id {reply_id!r} must be lowercase letters, digits, '.', '_' or '-' (64 at most)")
    what = f"reply {reply_id!r}"
    language = _choice(f["language"], f"language of {what}", REPLY_LANGUAGES, problems)
    claim_types = _choices(f["claim_type"], f"claim_type of {what}", CLAIM_TYPES, problems)
    risks = _choices(f["risk"], f"risk of {what}", RISKS, problems) if "risk" in f else None
    title = _text(f["title"], f"title of {what}", problems)
    body = _text(f["body"], f"body of {what}", problems)
    placeholders = set()
    if title is not None:
        placeholders |= _placeholders(f["title"], f"title of {what}", title, problems)
    if body is not None:
        placeholders |= _placeholders(f["body"], f"body of {what}", body, problems)
    if claim_types and risks:
        for c in claim_types:
            for r in risks:
                if not consistent(r, c):
                    problems.add(
                        f["risk"], f"{what}: risk {r!r} never goes with claim_type {c!r} (none exactly when routine)"
                    )
    if len(problems.found) > before:
        return None
    assert reply_id and language and claim_types and title and body
    ctypes = tuple(c for c in CLAIM_TYPES if c in claim_types)
    chosen = tuple(r for r in RISKS if (r in risks if risks else any(consistent(r, c) for c in ctypes)))
    lang = next(x for x in REPLY_LANGUAGES if x == language)
    return Reply(
        id=reply_id,
        language=lang,
        claim_types=ctypes,
        risks=chosen,
        title=title.strip(),
        body=body,
        placeholders=frozenset(placeholders),
        line=line,
        names_risk=risks is not None,
    )


def _index(
    replies: list[Reply], replies_line: int, problems: _Problems
) -> dict[tuple[Risk, ClaimType, ReplyLanguage], Reply]:
    """(risk, claim type, language) -> the most specific reply; ties and gaps are problems."""
    index: dict[tuple[Risk, ClaimType, ReplyLanguage], Reply] = {}
    for reply in replies:
        for risk in reply.risks:
            for claim_type in reply.claim_types:
                if not consistent(risk, claim_type):
                    continue
                key = (risk, claim_type, reply.language)
                held = index.get(key)
                if held is None or reply.names_risk > held.names_risk:
                    index[key] = reply
                elif reply.names_risk == held.names_risk:
                    problems.add(
                        reply.line,
                        f"replies {held.id!r} (line {held.line}) and {reply.id!r} both answer {risk} / {claim_type} "
                        f"in {reply.language}: remove one, or give one a `risk`",
                    )
    if problems.found:  # a broken reply leaves a gap: its own problem says why
        return index
    missing = [
        f"{risk} / {claim_type} / {language}"
        for language in REPLY_LANGUAGES
        for risk in RISKS
        for claim_type in CLAIM_TYPES
        if consistent(risk, claim_type) and (risk, claim_type, language) not in index
    ]
    if missing:
        problems.add(
            replies_line,
            f"no reply for {', '.join(missing)} (every risk and claim type needs a reply in fr, it and en)",
        )
    return index


def load_catalogue(path: Path | None = None) -> ReplyCatalogue:
    """Read and check a reply catalogue (default: the one that ships); raise ReplyCatalogueError if it is bad."""
    path = path or DEFAULT_CATALOGUE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise ReplyCatalogueError(
            f"{path}: cannot read the reply catalogue ({reason}); set TRIAGE_REPLIES_FILE to a YAML catalogue, "
            "or unset it for the default one"
        ) from err
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ReplyCatalogueError(f"{path}:{line}: not valid YAML: {err.problem or err.context}") from err
    except yaml.YAMLError as err:
        raise ReplyCatalogueError(f"{path}: not valid YAML: {err}") from err
    problems = _Problems(path)
    if root is None:
        raise ReplyCatalogueError(f"{path}:1: the reply catalogue is empty")
    top = _mapping(root, "the catalogue", _TOP_FIELDS, problems)
    fallback: str | None = "en"
    if "fallback_language" in top:
        fallback = _choice(top["fallback_language"], "fallback_language", REPLY_LANGUAGES, problems)
    names: dict[ReplyLanguage, str] = {}
    if "buyer_name" not in top:
        problems.add(root, "the catalogue needs `buyer_name`: what {buyer_name} becomes in fr, it and en")
    else:
        given = _mapping(top["buyer_name"], "buyer_name", REPLY_LANGUAGES, problems)
        for lang in REPLY_LANGUAGES:
            if lang not in given:
                problems.add(top["buyer_name"], f"buyer_name needs a {lang} greeting")
            elif (name := _text(given[lang], f"buyer_name {lang}", problems)) is not None:
                names[lang] = name.strip()
    replies: list[Reply] = []
    if "replies" not in top:
        problems.add(root, "the catalogue needs `replies`: a list of replies")
        problems.raise_any()
    node = top["replies"]
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        problems.add(node, "`replies` must be a list of replies")
        problems.raise_any()
    seen: dict[str, int] = {}
    for item in node.value:
        reply = _reply(item, problems)
        if reply is None:
            continue
        if reply.id in seen:
            problems.add(reply.line, f"reply id {reply.id!r} is used twice (first on line {seen[reply.id]})")
            continue
        seen[reply.id] = reply.line
        replies.append(reply)
    index = _index(replies, node.start_mark.line + 1, problems)
    problems.raise_any()
    fallback_language = next(x for x in REPLY_LANGUAGES if x == fallback)
    return ReplyCatalogue(path, sha256_file(path), replies, fallback_language, names, index)
