"""`churnops models`: registered versions, their status, and every alias move (through the gates)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from churnops.cli._common import (
    JsonOption,
    ModelOption,
    database_errors,
    load_settings,
    make_console,
    print_json,
)

app = typer.Typer(
    help="Registered model versions, aliases, promotion, rollback, approval.", no_args_is_help=True
)


@app.command("list")
def models_list(as_json: JsonOption = False, model: ModelOption = None) -> None:
    """List registered versions with aliases, status (pending_approval, rejected...), metrics and lineage."""
    from churnops.jobs.registry_access import registry_for

    settings = load_settings()
    versions = registry_for(settings).list_versions(model or settings.model_name)
    if as_json:
        typer.echo(json.dumps(versions, indent=2))
        return
    _print_versions(versions)


def _print_versions(versions: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(
        "model", "version", "aliases", "status", "roc_auc", "pr_auc", "threshold", "dataset", "run_id"
    )
    for v in versions:
        auc, pr = v["metrics"]["roc_auc"], v["metrics"]["pr_auc"]
        table.add_row(
            v["name"],
            v["version"],
            ",".join(v["aliases"]),
            v["status"],
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
    force: Annotated[
        bool, typer.Option("--force", help="Promote over failed gates or a pending approval (recorded).")
    ] = False,
    model: ModelOption = None,
) -> None:
    """Run the gates against the champion, then point `champion` at VERSION (or wait for approval)."""
    from churnops.jobs.models import promote
    from churnops.jobs.privacy import cli_principal

    with database_errors():
        move = promote(load_settings(), version, model, principal=cli_principal(), force=force)
    _report(move.to_dict())


@app.command("rollback")
def models_rollback(
    to: Annotated[
        str | None, typer.Option("--to", help="A former champion (default: the one replaced).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why, recorded with the event.")] = None,
    model: ModelOption = None,
) -> None:
    """Point `champion` back at the version the current one replaced (serving follows within 5 s)."""
    from churnops.jobs.models import rollback
    from churnops.jobs.privacy import cli_principal
    from churnops.jobs.promote import open_lifecycle

    with database_errors(), open_lifecycle(load_settings()) as lc:
        move = rollback(lc, to, principal=cli_principal(), model=model, reason=reason)
    _report(move.to_dict())


@app.command("approve")
def models_approve(
    version: Annotated[str, typer.Argument(help="A version pending approval.")], model: ModelOption = None
) -> None:
    """Approve a version that passed its gates (`gates.approval: required`): it becomes champion."""
    from churnops.jobs.models import approve
    from churnops.jobs.privacy import cli_principal
    from churnops.jobs.promote import open_lifecycle

    with database_errors(), open_lifecycle(load_settings()) as lc:
        move = approve(lc, version, cli_principal(), model)
    _report(move.to_dict())


@app.command("history")
def models_history(
    as_json: JsonOption = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Newest N events only.")] = None,
    model: ModelOption = None,
) -> None:
    """Every alias move and gate decision, newest first: who, when, from, to, why, the evidence."""
    from churnops.jobs.models import history
    from churnops.jobs.promote import open_lifecycle

    with database_errors(), open_lifecycle(load_settings()) as lc:
        rows = history(lc, model, limit)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table("at", "action", "from", "to", "outcome", "trigger", "principal", "reason")
    for row in rows:
        table.add_row(
            row["at"][:19],
            row["action"].removeprefix("models."),
            row["from"] or "-",
            row["to"] or "-",
            row["outcome"] or "-",
            row["trigger"] or "-",
            row["principal"] or "-",
            row["reason"] or "",
        )
    make_console(stderr=False).print(table)


def _report(move: dict[str, Any]) -> None:
    if move["outcome"] == "unchanged":
        typer.echo(move["reason"])
        return
    moved = "champion is now" if move["moved"] else "champion stays"
    current = move["version"] if move["moved"] else move["from"]
    typer.echo(f"{move['model']}: {moved} v{current or '-'} ({move['outcome']}): {move['reason']}")
