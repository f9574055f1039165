"""Credentials never reach a message or a log: URLs without their user info, texts without secrets."""

from __future__ import annotations

import re
from collections.abc import Iterable

_USERINFO = re.compile(r"(\w[\w+.-]*://)[^/\s@?#]+@")


def mask_url(url: str) -> str:
    """`url` with its user info masked and its query and fragment dropped (either may hold credentials):
    `postgresql://u:pw@db/triage?sslkey=x` -> `postgresql://***@db/triage`."""
    return _USERINFO.sub(r"\1***@", re.split(r"[?#]", url.strip(), maxsplit=1)[0])


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the user info of every URL in it, and every given secret, masked."""
    out = _USERINFO.sub(r"\1***@", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, "<secret>")
    return out
