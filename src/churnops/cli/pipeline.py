"""`churnops pipeline`: the whole pipeline, or one stage (what dvc.yaml calls)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from churnops.cli._common import (
    ParamsOption,
    WorkdirOption,
    configure_logging,
    load_settings,
    make_console,
)

if TYPE_CHECKING:
    from rich.console import Console

    from churnops.settings import Settings

app = typer.Typer(help="Validate, featurize, train, evaluate and register.", no_args_is_help=True)


@app.command("run")
def pipeline_run(
    data: Annotated[Path | None, typer.Option(help="CSV or Parquet file (default: synthetic data).")] = None,
    spec: Annotated[
        str, typer.Option(help="Built-in spec name (synthetic, telco) or a spec YAML path.")
    ] = "synthetic",
    params: ParamsOption = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Working directory (default: a new $CHURNOPS_HOME/runs/pipeline-...).")
    ] = None,
    rows: Annotated[int, typer.Option(min=100, help="Rows to generate when --data is not given.")] = 20_000,
    search: Annotated[
        Literal["on", "off"] | None,
        typer.Option(help="Hyperparameter search (default: params.yaml training.search.enabled)."),
    ] = None,
) -> None:
    """Run ingest, validate, featurize, train, evaluate and register in one go."""
    from churnops.core.params import with_search
    from churnops.io.datasets import load_params, load_spec

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    spec_obj, params_obj = load_spec(spec), load_params(params)
    if search is not None:
        params_obj = with_search(params_obj, search == "on")
    if data is None:
        data = _default_data(settings, spec_obj.name, rows)
    result = run_with_progress(data, spec_obj, params_obj, settings, workdir, console)
    print_summary(result, console)


def _default_data(settings: Settings, spec_name: str, rows: int) -> Path:
    from churnops.errors import ConfigError
    from churnops.jobs.generate import generate

    if spec_name != "synthetic":
        raise ConfigError(f"--data is required with spec {spec_name!r} (only 'synthetic' has a generator)")
    out = settings.ensure_home() / "data" / f"synthetic-{rows}.csv"
    if not out.exists():
        generate(rows, 42, out)
    return out


def run_with_progress(
    data: Path, spec: Any, params: Any, settings: Settings, workdir: Path | None, console: Console
) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from churnops.jobs.pipeline import STAGES, run_pipeline, run_workdir
    from churnops.jobs.workdir import Workdir

    wd = Workdir(workdir) if workdir else run_workdir(settings)
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


def print_summary(result: dict[str, Any], console: Console) -> None:
    reg, evaluation = result["register"], result["evaluate"]
    chosen = evaluation["chosen"]
    holdout = evaluation["candidates"][chosen]["holdout"]
    cv = evaluation.get("cv")
    cv_text = f", {cv['folds']}-fold CV ROC AUC {cv['mean']:.4f} ± {cv['std']:.4f}" if cv else ""
    console.print(
        f"[green]registered[/] {reg['model_name']} v{reg['version']} ({chosen}): holdout ROC AUC "
        f"{holdout['roc_auc']:.4f}{cv_text}; {reg['status']} — {reg['reason']}"
    )


def _stage(
    name: str, workdir: Path | None, params: Path | None, data: Path | None = None, spec: str | None = None
) -> None:
    from churnops.io.datasets import load_params, load_spec
    from churnops.jobs.pipeline import default_workdir, run_stage
    from churnops.jobs.workdir import Workdir

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    wd = Workdir(workdir) if workdir else default_workdir(settings)
    plan = wd.root / "plan.json"  # a lifecycle cycle's (the Airflow DAG runs the stages one by one)
    trigger = json.loads(plan.read_text())["trigger"] if plan.is_file() else "pipeline"
    run_stage(
        name, wd, load_params(params), settings, data, load_spec(spec) if spec else None, trigger=trigger
    )


@app.command("ingest")
def pipeline_ingest(
    data: Annotated[Path, typer.Option(help="CSV or Parquet file.")],
    spec: Annotated[str, typer.Option(help="Built-in spec name or spec YAML path.")] = "synthetic",
    workdir: WorkdirOption = None,
    params: ParamsOption = None,
) -> None:
    """Stage 1: keep the spec's columns, write a content-hashed snapshot."""
    _stage("ingest", workdir, params, data, spec)


@app.command("validate")
def pipeline_validate(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 2: run the expectation suite; non-zero exit when the data fails."""
    _stage("validate", workdir, params)


@app.command("featurize")
def pipeline_featurize(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 3: split, fit the feature transformer, fill the offline store."""
    _stage("featurize", workdir, params)


@app.command("train")
def pipeline_train(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 4: train the candidates within the budget."""
    _stage("train", workdir, params)


@app.command("evaluate")
def pipeline_evaluate(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 5: holdout metrics, threshold, slices, fairness, plots, model card."""
    _stage("evaluate", workdir, params)


@app.command("register")
def pipeline_register(workdir: WorkdirOption = None, params: ParamsOption = None) -> None:
    """Stage 6: MLflow runs, model version, aliases."""
    _stage("register", workdir, params)
