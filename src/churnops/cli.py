"""The `churnops` command line: thin commands that build Settings once and call jobs.

Heavy libraries (Great Expectations, MLflow, LightGBM) are imported inside the
commands that need them so `churnops --help` stays instant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from churnops import __version__
from churnops.errors import ChurnopsError

if TYPE_CHECKING:
    from rich.console import Console

    from churnops.settings import Settings

app = typer.Typer(
    name="churnops",
    help="Automated model lifecycle for churn prediction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Synthetic data.", no_args_is_help=True)
pipeline_app = typer.Typer(help="Validate, featurize, train, evaluate and register.", no_args_is_help=True)
models_app = typer.Typer(help="Registered model versions and aliases.", no_args_is_help=True)
config_app = typer.Typer(help="Effective settings.", no_args_is_help=True)
features_app = typer.Typer(
    help="Feature store: offline (SQL) -> online (Redis or in-process).", no_args_is_help=True
)
db_app = typer.Typer(help="SQL store schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(features_app, name="features")
app.add_typer(db_app, name="db")

WorkdirOption = Annotated[
    Path | None, typer.Option(help="Stage working directory [default: $CHURNOPS_HOME/pipeline].")
]
ParamsOption = Annotated[
    Path | None, typer.Option(help="params.yaml [default: ./params.yaml if present, else built-in defaults].")
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="Registered model name [default: the only one, or CHURNOPS_MODEL_NAME]."),
]


def _settings() -> Settings:
    from churnops.settings import Settings

    return Settings()


def _console(stderr: bool = True) -> Console:
    from rich.console import Console

    return Console(stderr=stderr)


def _configure_logging(settings: Settings, console: Console) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(
        console=console, show_path=False, show_level=False, markup=False, log_time_format="%X"
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(message)s", handlers=[handler], force=True
    )
    for noisy in ("alembic", "great_expectations", "urllib3", "git", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow configures its own loggers on import: its table-creation and pickling notes are noise here.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"churnops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """churnops: raw customer data to a governed, served, monitored churn model."""


# -- data -------------------------------------------------------------------------------


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Output file (.csv or .parquet).")],
    rows: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data).")] = 42,
    drift: Annotated[
        str | None, typer.Option(help="Drift scenario: price_increase, encoding_change or new_segment.")
    ] = None,
) -> None:
    """Generate synthetic subscription customers with known true churn probabilities."""
    from churnops.jobs.generate import generate

    settings, console = _settings(), _console()
    _configure_logging(settings, console)
    with console.status(f"generating {rows:,} customers"):
        summary = generate(rows, seed, out, drift)
    console.print(
        f"wrote {summary['rows']:,} rows to {out} (churn rate {summary['churn_rate']:.1%}, "
        f"oracle ROC AUC {summary['oracle_auc']:.4f}, drift {summary['drift']})"
    )


# -- pipeline ---------------------------------------------------------------------------


@pipeline_app.command("run")
def pipeline_run(
    data: Annotated[Path | None, typer.Option(help="CSV or Parquet file [default: synthetic data].")] = None,
    spec: Annotated[
        str, typer.Option(help="Built-in spec name (synthetic, telco) or a spec YAML path.")
    ] = "synthetic",
    params: ParamsOption = None,
    workdir: WorkdirOption = None,
    rows: Annotated[int, typer.Option(min=100, help="Rows to generate when --data is not given.")] = 20_000,
    search: Annotated[
        Literal["on", "off"] | None,
        typer.Option(help="Hyperparameter search (default: params.yaml training.search.enabled)."),
    ] = None,
) -> None:
    """Run ingest, validate, featurize, train, evaluate and register in one go."""
    from churnops.core.params import with_search
    from churnops.io.datasets import load_params, load_spec

    settings, console = _settings(), _console()
    _configure_logging(settings, console)
    spec_obj, params_obj = load_spec(spec), load_params(params)
    if search is not None:
        params_obj = with_search(params_obj, search == "on")
    if data is None:
        data = _default_data(settings, spec_obj.name, rows)
    result = _run_with_progress(data, spec_obj, params_obj, settings, workdir, console)
    _print_summary(result, console)


def _default_data(settings: Settings, spec_name: str, rows: int) -> Path:
    from churnops.errors import ConfigError
    from churnops.jobs.generate import generate

    if spec_name != "synthetic":
        raise ConfigError(f"--data is required with spec {spec_name!r} (only 'synthetic' has a generator)")
    out = settings.ensure_home() / "data" / f"synthetic-{rows}.csv"
    if not out.exists():
        generate(rows, 42, out)
    return out


def _run_with_progress(
    data: Path, spec: Any, params: Any, settings: Settings, workdir: Path | None, console: Console
) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from churnops.jobs.pipeline import STAGES, default_workdir, run_pipeline
    from churnops.jobs.workdir import Workdir

    wd = Workdir(workdir) if workdir else default_workdir(settings)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("pipeline", total=len(STAGES))

        def hook(stage: str, event: str) -> None:
            if event == "start":
                progress.update(task, description=stage)
            elif event == "done":
                progress.advance(task)
            else:
                progress.update(task, description=f"{stage}: {event.removeprefix('detail:')}")

        return run_pipeline(data, spec, params, settings, wd, hook)


def _print_summary(result: dict[str, Any], console: Console) -> None:
    reg, evaluation = result["register"], result["evaluate"]
    chosen = evaluation["chosen"]
    holdout = evaluation["candidates"][chosen]["holdout"]
    cv = evaluation.get("cv")
    cv_text = f", {cv['folds']}-fold CV ROC AUC {cv['mean']:.4f} ± {cv['std']:.4f}" if cv else ""
    console.print(
        f"[green]registered[/] {reg['model_name']} v{reg['version']} ({chosen}): holdout ROC AUC "
        f"{holdout['roc_auc']:.4f}{cv_text}; aliases: "
        f"{'champion' if reg['champion'] else 'challenger'} — {reg['reason']}"
    )


StageWorkdir = WorkdirOption


def _stage(
    name: str, workdir: Path | None, params: Path | None, data: Path | None = None, spec: str | None = None
) -> None:
    from churnops.io.datasets import load_params, load_spec
    from churnops.jobs.pipeline import default_workdir, run_stage
    from churnops.jobs.workdir import Workdir

    settings, console = _settings(), _console()
    _configure_logging(settings, console)
    wd = Workdir(workdir) if workdir else default_workdir(settings)
    run_stage(name, wd, load_params(params), settings, data, load_spec(spec) if spec else None)


@pipeline_app.command("ingest")
def pipeline_ingest(
    data: Annotated[Path, typer.Option(help="CSV or Parquet file.")],
    spec: Annotated[str, typer.Option(help="Built-in spec name or spec YAML path.")] = "synthetic",
    workdir: WorkdirOption = None,
    params: ParamsOption = None,
) -> None:
    """Stage 1: keep the spec's columns, write a content-hashed snapshot."""
    _stage("ingest", workdir, params, data, spec)


@pipeline_app.command("validate")
def pipeline_validate(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 2: run the expectation suite; non-zero exit when the data fails."""
    _stage("validate", workdir, params)


@pipeline_app.command("featurize")
def pipeline_featurize(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 3: split, fit the feature transformer, fill the offline store."""
    _stage("featurize", workdir, params)


@pipeline_app.command("train")
def pipeline_train(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 4: train the candidates within the budget."""
    _stage("train", workdir, params)


@pipeline_app.command("evaluate")
def pipeline_evaluate(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 5: holdout metrics, threshold, slices, fairness, plots, model card."""
    _stage("evaluate", workdir, params)


@pipeline_app.command("register")
def pipeline_register(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 6: MLflow runs, model version, aliases."""
    _stage("register", workdir, params)


# -- models -----------------------------------------------------------------------------


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    model: ModelOption = None,
) -> None:
    """List registered versions with aliases, metrics and lineage."""
    from churnops.jobs.pipeline import registry_for

    settings = _settings()
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
    _console(stderr=False).print(table)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Model version to make champion.")],
    model: ModelOption = None,
) -> None:
    """Point the `champion` alias at VERSION."""
    from churnops.jobs.models import promote

    settings = _settings()
    name, previous = promote(settings, version, model)
    typer.echo(f"{name}: champion is now v{version} (was {'v' + previous if previous else 'unset'})")


# -- scoring and serving ------------------------------------------------------------------


@app.command()
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

    settings, console = _settings(), _console()
    _configure_logging(settings, console)
    scoring = load_scoring_model(settings, model, version)
    gc.freeze()  # start-up objects stay put: the collector's full passes during scoring skip them
    columns = (TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,} rows"))
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("score", total=row_count(data))
        summary = score_file(scoring, data, out, lambda done: progress.update(task, completed=done))
    console.print(f"scored {int(summary['rows']):,} rows with {scoring.name} v{scoring.version} -> {out}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address [default: CHURNOPS_HOST or 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: CHURNOPS_PORT or 8000].")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes [default: CHURNOPS_WORKERS or 1].")
    ] = None,
) -> None:
    """Serve /v1/predict from the registry's champion (OpenAPI at /docs)."""
    from churnops.serving import logs
    from churnops.serving.server import run

    settings = _settings()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logs.configure(settings)
    run(settings, host or settings.serve_host, port or settings.serve_port, workers or settings.serve_workers)


# -- feature store and database ------------------------------------------------------------


@features_app.command("materialize")
def features_materialize(
    version: Annotated[str | None, typer.Option(help="Feature-set version [default: the newest].")] = None,
) -> None:
    """Write every customer's latest feature vector to the online store (pipelined, with progress)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from churnops.io.datasets import load_params
    from churnops.jobs.materialize import materialize

    settings, console = _settings(), _console()
    _configure_logging(settings, console)
    version = version or _champion_feature_set(settings)
    columns = (TextColumn("materialize"), BarColumn(), TextColumn("{task.completed:,} entities"))
    with (
        _database_errors(),
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
    from churnops.jobs.pipeline import registry_for

    registry = registry_for(settings)
    try:
        name = registry.resolve_name(settings.model_name)
    except ChurnopsError:
        return None
    return registry.alias_tags(name, "champion").get("feature_set_version")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending Alembic migrations to the offline store's database (SQLite or PostgreSQL)."""
    from churnops.jobs.db import upgrade

    settings = _settings()
    with _database_errors():
        revision = upgrade(settings)
    typer.echo(f"database at revision {revision}")


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """An unreachable database is a user-facing condition: one line, not a traceback."""
    from redis.exceptions import RedisError
    from sqlalchemy.exc import OperationalError

    from churnops.errors import ConfigError

    try:
        yield
    except OperationalError as err:
        raise ConfigError(f"database unreachable: {str(err.orig).strip().splitlines()[0]}") from err
    except RedisError as err:
        raise ConfigError(f"online store unreachable: {err}") from err


# -- config -----------------------------------------------------------------------------


@config_app.command("show")
def config_show(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Print the effective settings and resolved stores, secrets masked."""
    view = _settings().public_view()
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    resolved = view.pop("resolved")
    for key, value in {**view, **{f"resolved.{k}": v for k, v in resolved.items()}}.items():
        typer.echo(f"{key:32} {value}")


# -- demo -------------------------------------------------------------------------------


@app.command()
def demo(
    rows: Annotated[int, typer.Option(min=1000, help="Synthetic customers to generate.")] = 20_000,
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the champion at the end.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port for the service.")] = 8000,
) -> None:
    """Everything on embedded defaults: generate data, run the pipeline, then serve the champion."""
    from churnops.core.params import with_search
    from churnops.io.datasets import load_params, load_spec
    from churnops.jobs.generate import generate

    settings, console = _settings(), _console()
    _configure_logging(settings, console)
    data = settings.ensure_home() / "data" / f"demo-{rows}.csv"
    generate(rows, 42, data)
    params = with_search(load_params(None), False)  # the demo stays quick: fixed parameters
    result = _run_with_progress(data, load_spec("synthetic"), params, settings, None, console)
    _print_summary(result, console)
    workdir = settings.home / "pipeline"
    console.print(f"model card: {workdir / 'evaluation' / 'model_card.md'}")
    console.print(f"validation report: {workdir / 'validation' / 'validation.html'}")
    console.print(f"browse runs: mlflow ui --backend-store-uri {settings.tracking_uri}")
    if not serve_after:
        return
    import pandas as pd

    customer = pd.read_csv(data, nrows=1)["customer_id"].iloc[0]
    console.print(
        f"serving on http://127.0.0.1:{port} (OpenAPI at /docs); try:\n"
        f"  curl -s localhost:{port}/v1/predict -H 'content-type: application/json' "
        f"""-d '{{"customer_id": "{customer}"}}'"""
    )
    from churnops.serving import logs
    from churnops.serving.server import run

    logs.configure(settings)
    run(settings, settings.serve_host, port, 1)


def _fast_exit() -> None:
    """Leave the heap of pandas, numba and MLflow objects to the OS: without this the collector
    walks it during interpreter shutdown, ~0.4 s per command (measured for `churnops score`)."""
    import gc

    gc.freeze()


def main() -> None:
    """Entry point: one clear line and a non-zero exit for every user error."""
    try:
        app()
    except SystemExit:
        _fast_exit()
        raise
    except ChurnopsError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:
        if os.environ.get("CHURNOPS_DEBUG"):
            raise
        typer.echo(
            f"error: unexpected {type(err).__name__}: {err} (set CHURNOPS_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(1)
