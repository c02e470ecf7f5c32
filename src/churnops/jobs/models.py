"""Model management jobs: promote (and later rollback) by moving aliases."""

from __future__ import annotations

from churnops.errors import NotFound
from churnops.io.registry import CHALLENGER, CHAMPION
from churnops.settings import Settings


def promote(settings: Settings, version: str, model: str | None = None) -> tuple[str, str | None]:
    """Move `champion` to VERSION; returns the model name and the previous champion version."""
    from churnops.jobs.pipeline import registry_for

    registry = registry_for(settings)
    name = registry.resolve_name(model or settings.model_name)
    if not version.isdigit() or not registry.version_exists(name, version):
        raise NotFound(f"{name} has no version {version!r}")
    previous = registry.alias_version(name, CHAMPION)
    registry.set_alias(name, CHAMPION, version)
    if registry.alias_version(name, CHALLENGER) == version:
        registry.delete_alias(name, CHALLENGER)
    return name, previous
