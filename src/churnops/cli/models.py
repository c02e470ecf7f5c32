"""`churnops models`: registered versions and their aliases."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from churnops.cli._common import ModelOption, load_settings, make_console

app = typer.Typer(help="Registered model versions and aliases.", no_args_is_help=True)


@app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    model: ModelOption = None,
) -> None:
    """List registered versions with aliases, metrics and lineage."""
    from churnops.jobs.pipeline import registry_for

    settings = load_settings()
    versions = registry_for(settings).list_versions(model or settings.model_name)
    if as_json:
        typer.echo(json.dumps(versions, indent=2))
        return
    _print_versions(versions)


def _print_versions(versions: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table("model", "version", "aliases", "roc_auc", "pr_auc", "threshold", "dataset", "run_id")
    for v in versions:
        auc, pr = v["metrics"]["roc_auc"], v["metrics"]["pr_auc"]
        table.add_row(
            v["name"],
            v["version"],
            ",".join(v["aliases"]),
            f"{auc:.4f}" if auc is not None else "-",
            f"{pr:.4f}" if pr is not None else "-",
            f"{v['threshold']:.3f}" if v["threshold"] is not None else "-",
            f"{v['dataset']['spec']} ({v['dataset']['rows']} rows)",
            v["run_id"] or "-",
        )
    make_console(stderr=False).print(table)


@app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Model version to make champion.")],
    model: ModelOption = None,
) -> None:
    """Point the `champion` alias at VERSION."""
    from churnops.jobs.models import promote

    settings = load_settings()
    name, previous = promote(settings, version, model)
    typer.echo(f"{name}: champion is now v{version} (was {'v' + previous if previous else 'unset'})")
