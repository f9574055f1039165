"""API keys and their scopes: the hashed key file, who a presented key belongs to, and when the service may
run without keys.

The key file (`TRIAGE_API_KEYS_FILE`, written by `triage keys create`) has one key per line:
`NAME SCOPES sha256:HEX`, e.g. `helpdesk classify,feedback sha256:9f86d0...`. It never holds a key: a key is
shown once when it is created, and only its sha256 is kept (keys are 256 random bits, so a plain hash is
as good as a slow one and costs a microsecond per request). The file is read once, at start and at every
`POST /admin/reload`; a request hashes the key it presents and compares the digest with every known digest
in constant time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from serving.errors import TriageError
from serving.files import atomic_write

Scope = Literal["classify", "feedback", "admin"]
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
KEY_PREFIX: Final = "tk_"  # recognisable by secret scanners
HEADER: Final = (
    "# triage API keys, format 1: NAME SCOPES sha256:HEX, one key per line (triage keys create NAME --scopes ...).\n"
    "# Only hashes are kept here; delete a line to revoke its key.\n"
)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HASH = re.compile(r"sha256:([0-9a-f]{64})")


class KeysError(TriageError):
    """A key file that cannot be used, or a key that cannot be created as asked."""


class ExposureError(TriageError):
    """Asked to serve without keys on an address other machines can reach."""


@dataclass(frozen=True)
class ApiKey:
    """One key as the file keeps it: its name, its scopes and the sha256 digest of the key."""

    name: str
    scopes: frozenset[str]
    digest: bytes

    def line(self) -> str:
        return f"{self.name} {','.join(s for s in SCOPES if s in self.scopes)} sha256:{self.digest.hex()}"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's name and scopes, or `None` as the name in open mode (no keys configured)."""

    name: str | None
    scopes: frozenset[str]


OPEN: Final = Principal(None, frozenset(SCOPES))


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def parse_scopes(text: str, where: str = "--scopes") -> frozenset[str]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        got = f"unknown scope(s) {', '.join(map(repr, unknown))}" if unknown else "no scope"
        raise KeysError(f"{where}: {got} (expected one or more of {', '.join(SCOPES)}, comma-separated)")
    return frozenset(scopes)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise KeysError(
            f"key name {name!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-' (starting with a letter or digit)"
        )
    return name


class KeyRing:
    """The keys the service accepts (empty: open mode)."""

    def __init__(self, keys: Sequence[ApiKey] = (), source: Path | None = None) -> None:
        self.keys = tuple(keys)
        self.source = source

    @property
    def open(self) -> bool:
        return not self.keys

    @classmethod
    def load(cls, path: Path | None) -> KeyRing:
        """The keys of `path` (None: no keys). Every bad line is reported with its number."""
        if path is None:
            return cls()
        return cls(read_keys(path), path)

    def identify(self, key: str) -> ApiKey | None:
        """The key whose digest matches `key`'s, comparing with every known digest in constant time."""
        presented = digest_of(key)
        found = None
        for k in self.keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(presented, k.digest):
                found = k
        return found


def read_keys(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise KeysError(
            f"{path}: no such key file (TRIAGE_API_KEYS_FILE); create a key with `triage keys create`"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise KeysError(f"{path}: cannot read the key file ({type(err).__name__})") from err
    keys: list[ApiKey] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            problems.append(f"line {number}: expected 3 fields 'NAME SCOPES sha256:HEX', got {len(parts)}")
            continue
        name, scopes, hashed = parts
        try:
            check_name(name)
            scope_set = parse_scopes(scopes, where="scopes")
        except KeysError as err:
            problems.append(f"line {number}: {err}")
            continue
        match = _HASH.fullmatch(hashed)
        if not match:
            # never echo the field: a plaintext key pasted here by mistake must not reach a log
            problems.append(f"line {number}: the third field is not 'sha256:' and 64 hex digits (a key itself?)")
            continue
        if name in seen:
            problems.append(f"line {number}: key name {name!r} again (first on line {seen[name]})")
            continue
        seen[name] = number
        keys.append(ApiKey(name, scope_set, bytes.fromhex(match.group(1))))
    if problems:
        raise KeysError(f"{path}: {len(problems)} bad line(s) in the key file:\n  " + "\n  ".join(problems))
    return keys


def create_key(path: Path, name: str, scopes: Iterable[str]) -> tuple[str, ApiKey]:
    """A new random key for `name` with `scopes`; its hash is added to `path` (created, mode 600, if
    missing). Returns the key, which is shown once and kept nowhere."""
    check_name(name)
    scope_set = parse_scopes(",".join(scopes))
    existing = read_keys(path) if path.exists() else []
    if any(k.name == name for k in existing):
        raise KeysError(f"{path} already has a key named {name!r}: pick another name, or delete its line to revoke it")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    entry = ApiKey(name, scope_set, digest_of(key))
    old = path.read_text(encoding="utf-8") if path.exists() else HEADER
    with atomic_write(path, perms=0o600) as f:
        f.write(old + ("" if old.endswith("\n") else "\n") + entry.line() + "\n")
    return key, entry


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_mode(host: str, keys: KeyRing, allow_open: bool) -> str:
    """How the service is reachable, in one line for the start-up log; refuses an unintended open service."""
    if not keys.open:
        return f"API keys required ({len(keys.keys)} key(s) from {keys.source})"
    if is_loopback(host):
        return f"OPEN: no API keys configured; listening on loopback ({host}) only, so only this machine can call it"
    if allow_open:
        return f"OPEN on {host}: no API keys, and TRIAGE_ALLOW_OPEN=true says open access is intended"
    raise ExposureError(
        f"refusing to serve on {host} without API keys: anyone who can reach it could classify, write feedback "
        "and reload the model. Create keys (triage keys create NAME --scopes classify) and set "
        "TRIAGE_API_KEYS_FILE, or set TRIAGE_ALLOW_OPEN=true if open access is intended"
    )
