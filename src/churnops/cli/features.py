"""`churnops features`: offline store -> online store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from churnops.cli._common import configure_logging, database_errors, load_settings, make_console

if TYPE_CHECKING:
    from churnops.settings import Settings

app = typer.Typer(help="Feature store: offline (SQL) -> online (Redis or in-process).", no_args_is_help=True)


@app.command("materialize")
def features_materialize(
    version: Annotated[str | None, typer.Option(help="Feature-set version (default: the newest).")] = None,
) -> None:
    """Write every customer's latest feature vector to the online store (pipelined, with progress)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from churnops.io.datasets import load_params
    from churnops.jobs.materialize import materialize

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    version = version or _champion_feature_set(settings)
    columns = (TextColumn("materialize"), BarColumn(), TextColumn("{task.completed:,} entities"))
    with (
        database_errors(),
        Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as bar,
    ):
        task = bar.add_task("materialize", total=None)
        result = materialize(
            settings,
            version,
            lambda done, total: bar.update(task, completed=done, total=total),
            params=load_params(None).online_store,
        )
    if result["store"] == "memory":
        console.print(result["message"])
        return
    console.print(
        f"materialized {result['entities']:,} vectors of {result['version']} into {result['url']} "
        f"in {result['seconds']:.2f} s (TTL {result['ttl_seconds']} s)"
    )


def _champion_feature_set(settings: Settings) -> str | None:
    """The feature set the serving champion reads (None: no champion yet, use the newest set)."""
    from churnops.errors import ChurnopsError
    from churnops.jobs.registry_access import registry_for

    registry = registry_for(settings)
    try:
        name = registry.resolve_name(settings.model_name)
    except ChurnopsError:
        return None
    return registry.alias_tags(name, "champion").get("feature_set_version")
