"""`churnops audit`: verify the prediction ledger, summarise it, export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.cli._common import JsonOption, database_errors, load_settings, make_console, print_json

app = typer.Typer(help="The prediction ledger: verify, stats, export.", no_args_is_help=True)


@app.command("verify")
def audit_verify(as_json: JsonOption = False) -> None:
    """Check every chain and signed checkpoint; non-zero exit naming the first bad record."""
    from churnops.errors import DataError
    from churnops.jobs.audit import verify

    settings, console = load_settings(), make_console()
    with database_errors(), console.status("verifying the ledger"):
        result = verify(settings)
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "records": result.records,
                "chains": [
                    {
                        "writer_id": c.writer_id,
                        "records": c.records,
                        "checkpoints": c.checkpoints,
                        "problem": str(c.problem) if c.problem else None,
                    }
                    for c in result.chains
                ],
            }
        )
    if not result.ok:
        raise DataError(result.summary())
    if not as_json:
        typer.echo(result.summary())


@app.command("stats")
def audit_stats(as_json: JsonOption = False) -> None:
    """Records by kind, writers, checkpoints and the time span."""
    from churnops.jobs.audit import stats

    with database_errors():
        counts = stats(load_settings())
    if as_json:
        print_json(counts)
        return
    for key, value in counts.items():
        shown = value
        if isinstance(value, dict):  # records by kind: "event 2, prediction 40", not a dict's repr
            shown = ", ".join(f"{kind} {count:,}" for kind, count in value.items()) or "none"
        typer.echo(f"{key:14} {shown}")


@app.command("export")
def audit_export(
    since: Annotated[str, typer.Option(help="ISO date or time: records at or after it.")],
    out: Annotated[Path, typer.Option(help="JSON-lines file to write (pseudonymised, no payloads).")],
) -> None:
    """Export the ledger for a regulator or a warehouse: pseudonyms only, payloads left out."""
    from churnops.jobs.audit import export

    with database_errors():
        written = export(load_settings(), since, out)
    typer.echo(f"exported {written:,} records to {out}")
