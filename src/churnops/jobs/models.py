"""Model management jobs: promote (and later rollback) by moving aliases."""

from __future__ import annotations

from churnops.errors import NotFound, RegistryError
from churnops.io.registry import CHALLENGER, CHAMPION, MlflowRegistry
from churnops.settings import Settings


def resolve_model_name(registry: MlflowRegistry, requested: str | None) -> str:
    """The requested name, or the only registered model; otherwise ask for --model."""
    names = registry.model_names()
    if requested:
        if requested not in names:
            raise NotFound(
                f"no registered model named {requested!r} (registered: {', '.join(names) or 'none'})"
            )
        return requested
    if len(names) == 1:
        return names[0]
    if not names:
        raise NotFound("no registered model yet: run `churnops pipeline run` first")
    raise RegistryError(f"several registered models ({', '.join(names)}): choose one with --model")


def promote(settings: Settings, version: str, model: str | None = None) -> tuple[str, str | None]:
    """Move `champion` to VERSION; returns the model name and the previous champion version."""
    from churnops.jobs.pipeline import registry_for

    registry = registry_for(settings)
    name = resolve_model_name(registry, model or settings.model_name)
    if not version.isdigit() or not registry.version_exists(name, version):
        raise NotFound(f"{name} has no version {version!r}")
    previous = registry.alias_version(name, CHAMPION)
    registry.set_alias(name, CHAMPION, version)
    if registry.alias_version(name, CHALLENGER) == version:
        registry.delete_alias(name, CHALLENGER)
    return name, previous
