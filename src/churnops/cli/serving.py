"""`churnops score` and `churnops serve`: batch scoring and the HTTP service."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from churnops.cli._common import ModelOption, configure_logging, load_settings, make_console


def register(app: typer.Typer) -> None:
    """Top-level commands (not a group): `churnops score`, `churnops serve`."""
    app.command()(score)
    app.command()(serve)


def score(
    data: Annotated[
        Path, typer.Option(help="CSV or Parquet file of customers (the spec's id and features).")
    ],
    out: Annotated[Path, typer.Option(help="Output file (.csv or .parquet).")],
    model: ModelOption = None,
    version: Annotated[str, typer.Option(help="Version number or alias to score with.")] = "champion",
) -> None:
    """Batch scoring: probability, decision and top-3 reasons for every row, vectorised."""
    import gc

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from churnops.io.datasets import row_count
    from churnops.jobs.score import load_scoring_model, score_file

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    scoring = load_scoring_model(settings, model, version)
    gc.freeze()  # start-up objects stay put: the collector's full passes during scoring skip them
    columns = (TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,} rows"))
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("score", total=row_count(data))
        summary = score_file(scoring, data, out, lambda done: progress.update(task, completed=done))
    console.print(f"scored {int(summary['rows']):,} rows with {scoring.name} v{scoring.version} -> {out}")


def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: CHURNOPS_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: CHURNOPS_PORT or 8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: CHURNOPS_WORKERS or 1).")
    ] = None,
) -> None:
    """Serve /v1/predict from the registry's champion (OpenAPI at /docs)."""
    from churnops.serving import logs
    from churnops.serving.server import run

    settings = load_settings()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logs.configure(settings)
    run(settings, host or settings.serve_host, port or settings.serve_port, workers or settings.serve_workers)
