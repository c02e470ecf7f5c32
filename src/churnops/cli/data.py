"""`churnops data`: synthetic customers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.cli._common import configure_logging, load_settings, make_console

app = typer.Typer(help="Synthetic data.", no_args_is_help=True)


@app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Output file (.csv or .parquet).")],
    rows: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 42,
    drift: Annotated[
        str | None,
        typer.Option(help="Drift scenario: price_increase, encoding_change, new_segment or concept_drift."),
    ] = None,
) -> None:
    """Generate synthetic subscription customers with known true churn probabilities."""
    from churnops.jobs.generate import generate

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    with console.status(f"generating {rows:,} customers"):
        summary = generate(rows, seed, out, drift)
    console.print(
        f"wrote {summary['rows']:,} rows to {out} (churn rate {summary['churn_rate']:.1%}, "
        f"oracle ROC AUC {summary['oracle_auc']:.4f}, drift {summary['drift']})"
    )
