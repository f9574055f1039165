"""The one source of the current time: the service asks a `Clock`, so tests can freeze it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]  # returns a timezone-aware UTC datetime


def system_clock() -> datetime:
    """Now, in UTC: the clock the service runs on unless `create_app(clock=...)` is given another."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime (no offset) is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
