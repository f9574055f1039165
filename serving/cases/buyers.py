"""Buyer ids, stored only as salted hashes: enough to count a buyer's earlier cases, never the id itself.

`buyer_key` is HMAC-SHA256 of the normalised id (trimmed, case-folded) under a secret salt: without the salt
nobody can test a guessed id against the database. The salt comes from `TRIAGE_BUYER_SALT`; if that is
empty, one is generated into `var_dir/buyer-salt` (mode 600) when the first buyer id arrives and kept, so
keys stay comparable across restarts. Several hosts on one database must share the salt: set
TRIAGE_BUYER_SALT on each.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from typing import overload

from serving.errors import TriageError
from serving.files import atomic_write
from serving.settings import Settings

log = logging.getLogger("triage.serving")
SALT_BYTES = 32


class BuyerSaltError(TriageError):
    """The buyer-id salt file cannot be read or written."""


def buyer_key(buyer_id: str, salt: bytes) -> str:
    """The stored identity of a buyer: HMAC-SHA256(salt, trimmed and case-folded id), hex."""
    if not salt:
        raise ValueError("a buyer key needs a salt")
    return hmac.new(salt, buyer_id.strip().casefold().encode("utf-8"), hashlib.sha256).hexdigest()


class BuyerKeys:
    """`buyer_key` under the configured salt. A salt that exists is read (and checked) at once; a salt file
    is generated only when the first buyer id arrives, so a service that never sees one writes none."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._salt = load_buyer_salt(settings, create=False)

    def key(self, buyer_id: str) -> str:
        if self._salt is None:
            with self._lock:
                if self._salt is None:
                    self._salt = load_buyer_salt(self._settings)
        assert self._salt is not None
        return buyer_key(buyer_id, self._salt)


@overload
def load_buyer_salt(settings: Settings) -> bytes: ...
@overload
def load_buyer_salt(settings: Settings, create: bool) -> bytes | None: ...


def load_buyer_salt(settings: Settings, create: bool = True) -> bytes | None:
    """`settings.buyer_salt`, or the salt kept in `settings.buyer_salt_file` (generated the first time,
    unless `create` is false: then None)."""
    given = settings.buyer_salt.get_secret_value()
    if given:
        return given.encode("utf-8")
    path = settings.buyer_salt_file
    if not create and not path.exists():
        return None
    try:
        if not path.is_file():
            with atomic_write(path, perms=0o600) as f:
                f.write(secrets.token_hex(SALT_BYTES) + "\n")
            log.info("generated the buyer-id salt in %s (set TRIAGE_BUYER_SALT to share one across hosts)", path)
        salt = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise BuyerSaltError(
            f"{path}: cannot keep the buyer-id salt ({err.strerror}); set TRIAGE_BUYER_SALT or make "
            f"{settings.var_dir} writable"
        ) from err
    if not salt:
        raise BuyerSaltError(f"{path} is empty: delete it to generate a new salt, or set TRIAGE_BUYER_SALT")
    return salt.encode("utf-8")
