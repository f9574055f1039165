"""Buyer ids are kept only as salted hashes (HMAC-SHA256), under a salt that is set or generated once."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from serving.cases.buyers import BuyerKeys, BuyerSaltError, buyer_key, load_buyer_salt
from serving.settings import Settings


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(_env_file=None, var_dir=tmp_path / "var", **kw)  # type: ignore[call-arg]


def test_a_buyer_key_is_the_hmac_of_the_normalised_id() -> None:
    key = buyer_key("A3KX9QZ0PLM7TW", b"salt")
    assert key == hmac.new(b"salt", b"a3kx9qz0plm7tw", hashlib.sha256).hexdigest()
    assert key != hashlib.sha256(b"a3kx9qz0plm7tw").hexdigest()  # salted, not a bare hash
    assert buyer_key("  a3kx9qz0plm7tw ", b"salt") == key  # trimmed, case-folded
    assert buyer_key("A3KX9QZ0PLM7TW", b"other salt") != key
    assert "a3kx9qz0plm7tw" not in key.lower()
    with pytest.raises(ValueError, match="salt"):
        buyer_key("x", b"")


def test_the_salt_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    s = settings(tmp_path)
    first = load_buyer_salt(s)
    assert len(first) == 64 and s.buyer_salt_file.is_file()
    assert stat.S_IMODE(s.buyer_salt_file.stat().st_mode) == 0o600
    assert load_buyer_salt(s) == first  # a restart keeps comparing buyers the same way
    assert load_buyer_salt(settings(tmp_path / "elsewhere")) != first


def test_a_configured_salt_wins(tmp_path: Path) -> None:
    s = settings(tmp_path, buyer_salt=SecretStr("shared across hosts"))
    assert load_buyer_salt(s) == b"shared across hosts"
    assert not s.buyer_salt_file.exists()


def test_an_empty_salt_file_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    s.buyer_salt_file.parent.mkdir(parents=True)
    s.buyer_salt_file.write_text("\n")
    with pytest.raises(BuyerSaltError, match="is empty"):
        load_buyer_salt(s)


def test_a_salt_file_is_written_only_when_the_first_buyer_id_arrives(tmp_path: Path) -> None:
    s = settings(tmp_path)
    keys = BuyerKeys(s)
    assert not s.buyer_salt_file.exists()  # a service that never sees a buyer id writes no secret
    first = keys.key("A3KX9QZ0PLM7TW")
    assert s.buyer_salt_file.is_file()
    assert BuyerKeys(s).key("a3kx9qz0plm7tw") == first  # the next start reads the same salt
    s.buyer_salt_file.write_text("")
    with pytest.raises(BuyerSaltError, match="is empty"):
        BuyerKeys(s)  # an existing salt is checked at start
