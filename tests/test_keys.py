"""API keys: the hashed key file, `triage keys create`, and the refusal to serve open on a reachable address."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from serving.keys import ExposureError, KeyRing, KeysError, access_mode, create_key, read_keys
from tests.processes import clean_env, run_triage


def test_a_created_key_is_kept_only_as_its_hash(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    key, entry = create_key(file, "helpdesk", ["classify", "feedback"])
    text = file.read_text()
    assert key not in text and key.startswith("tk_") and len(key) > 40
    assert f"helpdesk classify,feedback sha256:{hashlib.sha256(key.encode()).hexdigest()}" in text
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    second, _ = create_key(file, "ops", ["admin"])
    ring = KeyRing.load(file)
    found = ring.identify(key)
    assert found is not None and found.name == "helpdesk" and found.scopes == {"classify", "feedback"}
    found = ring.identify(second)
    assert found is not None and found.name == "ops" and found.scopes == {"admin"}
    assert ring.identify(key[:-1]) is None and ring.identify("") is None and ring.identify("\udcff") is None
    with pytest.raises(KeysError, match="already has a key named 'ops'"):
        create_key(file, "ops", ["classify"])
    with pytest.raises(KeysError, match="unknown scope"):
        create_key(file, "x", ["clasify"])
    with pytest.raises(KeysError, match="key name"):
        create_key(file, "two words", ["admin"])


def test_a_bad_key_file_is_refused_line_by_line_without_echoing_a_key(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    good = "a" * 64
    file.write_text(
        "# comment\n\n"
        f"ok classify sha256:{good}\n"
        "short classify\n"
        f"badscope read sha256:{good}\n"
        "plain admin tk_ThisIsAPlaintextKeyPastedByMistake\n"
        f"ok admin sha256:{good}\n"
    )
    with pytest.raises(KeysError) as err:
        read_keys(file)
    msg = str(err.value)
    assert "4 bad line(s)" in msg
    assert "line 4: expected 3 fields" in msg
    assert "line 5: scopes: unknown scope(s) 'read'" in msg
    assert "line 6: the third field is not 'sha256:'" in msg and "tk_ThisIs" not in msg
    assert "line 7: key name 'ok' again (first on line 3)" in msg
    with pytest.raises(KeysError, match="no such key file"):
        read_keys(tmp_path / "missing")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_no_keys_is_open_on_loopback_only(host: str) -> None:
    assert "OPEN" in access_mode(host, KeyRing(), allow_open=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "triage.internal"])
def test_no_keys_on_a_reachable_address_needs_allow_open(host: str, tmp_path: Path) -> None:
    with pytest.raises(ExposureError, match="TRIAGE_ALLOW_OPEN=true"):
        access_mode(host, KeyRing(), allow_open=False)
    assert "TRIAGE_ALLOW_OPEN=true" in access_mode(host, KeyRing(), allow_open=True)
    file = tmp_path / "keys"
    create_key(file, "helpdesk", ["classify"])
    assert "API keys required (1 key(s)" in access_mode(host, KeyRing.load(file), allow_open=False)


def test_keys_create_prints_the_key_alone_on_its_last_line(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    env = clean_env() | {"TRIAGE_API_KEYS_FILE": str(file)}
    run = run_triage("keys", "create", "helpdesk", "--scopes", "classify,feedback,admin", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    key = run.stdout.splitlines()[-1]
    assert key.startswith("tk_") and " " not in key
    assert run.stdout.count(key) == 1 and key not in file.read_text()
    found = KeyRing.load(file).identify(key)
    assert found is not None and found.scopes == {"classify", "feedback", "admin"}
    listed = run_triage("keys", "list", env=env, cwd=tmp_path)
    assert listed.stdout.split() == ["helpdesk", "admin,classify,feedback"] and key not in listed.stdout
    bad = run_triage("keys", "create", "x", "--scopes", "everything", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "unknown scope(s) 'everything'" in bad.stderr and "Traceback" not in bad.stderr


def test_serve_refuses_a_reachable_address_without_keys(tmp_path: Path) -> None:
    """Refused before anything is loaded or bound; TRIAGE_ALLOW_OPEN=true passes the check (and then fails
    here only for want of a model)."""
    env = clean_env() | {"TRIAGE_MODELS_DIR": str(tmp_path / "none")}
    run = run_triage("serve", "--host", "0.0.0.0", "--port", "1", env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "refusing to serve on 0.0.0.0 without API keys" in run.stderr and "TRIAGE_API_KEYS_FILE" in run.stderr
    assert "Traceback" not in run.stderr
    env["TRIAGE_ALLOW_OPEN"] = "true"
    run = run_triage("serve", "--host", "0.0.0.0", "--port", "1", env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 2 and "no trained model" in run.stderr, run.stderr
    env |= {"TRIAGE_ALLOW_OPEN": "false", "TRIAGE_API_KEYS_FILE": str(tmp_path / "keys")}
    (tmp_path / "keys").write_text("broken line\n")
    run = run_triage("serve", "--host", "0.0.0.0", "--port", "1", env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 2 and "line 1: expected 3 fields" in run.stderr, run.stderr
