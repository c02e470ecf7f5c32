"""`churnops feedback`: delayed churn labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.cli._common import JsonOption, database_errors, load_settings, make_console, print_json

app = typer.Typer(help="Delayed churn labels joined to the predictions they judge.", no_args_is_help=True)


@app.command("import")
def feedback_import(
    data: Annotated[
        Path, typer.Option(help="CSV/Parquet: prediction_id or customer_id, churned, observed_at (optional).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Import a label file: validated whole, then joined; prints what joined, what did not and why."""
    from rich.progress import BarColumn, Progress, TextColumn

    from churnops.io.datasets import load_params
    from churnops.jobs.feedback import import_labels

    settings, console = load_settings(), make_console()
    window = load_params(None).ledger.label_window_days
    columns = (TextColumn("labels"), BarColumn(), TextColumn("{task.completed:,} read"))
    with database_errors(), Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("labels", total=None)
        summary = import_labels(settings, data, window, lambda n: bar.advance(task, n))
    if as_json:
        print_json(summary.as_dict() | {"conflict_details": summary.details[:20]})
        return
    s = summary
    typer.echo(
        f"{s.received:,} labels: {s.joined:,} predictions labelled, {s.unmatched:,} unmatched,"
        f" {s.duplicates:,} duplicates, {s.conflicts:,} conflicts, {s.erased:,} erased customers"
    )
    for line in summary.details[:5]:
        typer.echo(f"  conflict: {line}")
