"""`triage promote`: point a registry alias at a model version (promotion and rollback alike)."""

from __future__ import annotations

from dataclasses import dataclass

from loop.registry import (
    CHALLENGER,
    CHAMPION,
    ModelRef,
    RegistryError,
    delete_alias,
    get_version,
    list_versions,
    set_alias,
)
from serving.settings import Settings


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    previous: str | None  # the version that was champion before


def promote(settings: Settings, version: str | int, alias: str = CHAMPION) -> Promotion:
    """Point `alias` (default `champion`) at `version`: promotion and rollback alike.

    A version promoted to champion loses the `challenger` alias if it had it. Serving processes pick
    the change up at their next POST /admin/reload.
    """
    version = str(version)
    target = get_version(settings, ModelRef(settings.registered_model, version=version))
    if target is None:
        known = ", ".join(v.version for v in list_versions(settings)) or "none"
        raise RegistryError(f"{settings.registered_model!r} has no version {version} (versions: {known})")
    before = get_version(settings, ModelRef(settings.registered_model, alias=alias))
    set_alias(settings, alias, version)
    if alias == CHAMPION and CHALLENGER in target.aliases:
        delete_alias(settings, CHALLENGER)
    return Promotion(settings.registered_model, version, before.version if before else None)
