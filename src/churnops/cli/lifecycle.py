"""`churnops lifecycle`: the closed loop — one cycle, a watching daemon, and its status."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from churnops.cli._common import (
    JsonOption,
    ParamsOption,
    configure_logging,
    database_errors,
    load_settings,
    make_console,
    print_json,
)

app = typer.Typer(
    help="Triggers -> retrain -> gates -> promote or reject; bake and rollback.", no_args_is_help=True
)

SpecOption = Annotated[
    str | None, typer.Option(help="Spec to retrain with (default: the champion's; 'synthetic' before one).")
]


@app.command("run")
def lifecycle_run(
    params: ParamsOption = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain even when no trigger fires.")] = False,
    spec: SpecOption = None,
    as_json: JsonOption = False,
) -> None:
    """One cycle: judge the bake, check the triggers, retrain and gate when one fires."""
    from churnops.io.datasets import load_params, load_spec
    from churnops.jobs.lifecycle import run_cycle
    from churnops.jobs.privacy import cli_principal

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    with database_errors(), console.status("lifecycle cycle"):
        result = run_cycle(
            settings,
            load_params(params),
            principal=cli_principal(),
            force=force,
            spec=load_spec(spec) if spec else None,
        )
    if as_json:
        print_json(result.to_dict())
    else:
        typer.echo(result.line())
    if result.outcome == "failed":
        raise typer.Exit(1)


@app.command("watch")
def lifecycle_watch(
    every: Annotated[str, typer.Option("--every", help="Time between cycles: 30s, 5m, 1h, 1d.")],
    params: ParamsOption = None,
    spec: SpecOption = None,
) -> None:
    """Run a cycle every DURATION until SIGINT/SIGTERM (the cycle under way finishes first)."""
    from churnops.core.lifecycle_params import parse_duration
    from churnops.io.datasets import load_params, load_spec
    from churnops.jobs.lifecycle import CycleResult, watch
    from churnops.jobs.privacy import cli_principal

    seconds = parse_duration(every, "--every")
    if seconds <= 0:
        raise typer.BadParameter("must be longer than 0", param_hint="--every")
    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    load_params(params)  # a bad params file fails now, not at the first cycle
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        typer.echo(f"{signal.Signals(signum).name}: stopping after the cycle under way", err=True)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)

    def report(result: CycleResult) -> None:
        typer.echo(result.line(), err=False)

    typer.echo(f"watching: a cycle every {every} (SIGINT or SIGTERM stops)", err=True)
    with database_errors():
        cycles = watch(
            settings,
            lambda: load_params(params),
            seconds,
            stop,
            report,
            principal=cli_principal(),
            spec=load_spec(spec) if spec else None,
        )
    typer.echo(f"stopped after {cycles} cycles", err=True)


# -- the steps of a cycle, one command each (what dags/churnops_lifecycle.py runs as tasks) ----------

SKIP_EXIT = 99  # Airflow's BashOperator marks a task skipped on this code (and skips what follows)
WorkdirArg = Annotated[Path, typer.Option("--workdir", help="The run's working directory.")]


@app.command("bake")
def lifecycle_bake(params: ParamsOption = None) -> None:
    """Step 1: judge the bake under way (a breach rolls back to the replaced champion), then the trial
    under way (a breach rejects the candidate; a trial that held promotes it)."""
    from churnops.io.datasets import load_params
    from churnops.jobs.lifecycle_steps import BAKE_OVER, bake_step
    from churnops.jobs.lifecycle_trial import trial_step
    from churnops.jobs.privacy import cli_principal
    from churnops.jobs.promote import open_lifecycle

    with database_errors(), open_lifecycle(load_settings(), load_params(params)) as lc:
        baked = bake_step(lc, cli_principal())
        settled = baked is None or baked.outcome in BAKE_OVER
        trialled = trial_step(lc, cli_principal()) if settled else None
    typer.echo(baked.line() if baked else "no bake under way")
    typer.echo(trialled.line() if trialled else "no trial under way")


@app.command("plan")
def lifecycle_plan(
    workdir: WorkdirArg,
    params: ParamsOption = None,
    force: Annotated[bool, typer.Option("--force", help="Retrain even when no trigger fires.")] = False,
    spec: SpecOption = None,
) -> None:
    """Step 2: check the triggers; when one fires, write the retraining data and spec into WORKDIR
    (`input.parquet`, `spec.yaml`, `plan.json`); exit 99 (skip) when none does or a bake runs."""
    from churnops.io.datasets import load_params, load_spec
    from churnops.jobs.lifecycle_steps import plan, prepare
    from churnops.jobs.promote import BAKE, TRIAL, open_lifecycle
    from churnops.jobs.workdir import Workdir

    with database_errors(), open_lifecycle(load_settings(), load_params(params)) as lc:
        for under_way in (BAKE, TRIAL):
            if lc.state.get(under_way) is not None:
                typer.echo(f"a {under_way} is under way: nothing is retrained meanwhile")
                raise typer.Exit(SKIP_EXIT)
        planned = plan(lc, Path.cwd(), force=force)
        if not planned.triggers:
            typer.echo("; ".join(planned.reasons()))
            raise typer.Exit(SKIP_EXIT)
        prepared = prepare(lc, planned, Workdir(workdir), load_spec(spec) if spec else None)
    typer.echo(f"retraining on {prepared['data']} ({'; '.join(planned.reasons())})")


@app.command("record")
def lifecycle_record(workdir: WorkdirArg, params: ParamsOption = None) -> None:
    """Last step: record the cycle planned in WORKDIR (promoted, pending, rejected or failed; a candidate
    `in_trial` has its trial started here)."""
    from churnops.io.datasets import load_params
    from churnops.jobs.lifecycle_steps import PLAN, CycleResult, outcome_of, record
    from churnops.jobs.lifecycle_trial import after_registration
    from churnops.jobs.privacy import cli_principal
    from churnops.jobs.promote import open_lifecycle
    from churnops.jobs.workdir import Workdir, read_json

    wd = Workdir(workdir)
    if not (wd.root / PLAN).is_file():
        typer.echo("nothing was planned: no cycle to record")
        return
    prepared = read_json(wd.root / PLAN)
    result = CycleResult(
        "failed",
        [t["reason"] for t in prepared["triggers"]],
        triggers=prepared["triggers"],
        run_dir=str(wd.root),
        data=prepared["data_info"],
        started_us=prepared["started_us"],
    )
    with database_errors(), open_lifecycle(load_settings(), load_params(params)) as lc:
        result = after_registration(lc, outcome_of(wd, result), cli_principal())
        result = record(lc, result, cli_principal(), prepared)
    typer.echo(result.line())


@app.command("status")
def lifecycle_status(params: ParamsOption = None, as_json: JsonOption = False) -> None:
    """Champion, challenger, pending approvals, the bake or trial, the last cycle and recent events."""
    from churnops.io.datasets import load_params
    from churnops.jobs.lifecycle import status

    with database_errors():
        report = status(load_settings(), load_params(params))
    if as_json:
        print_json(report)
        return
    _print_status(report)


def _print_status(report: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    def when(at_us: int | None) -> str:
        return "-" if not at_us else datetime.fromtimestamp(at_us / 1e6, tz=UTC).isoformat(timespec="seconds")

    def version(value: str | None) -> str:
        return f"v{value}" if value else "none"

    bake, last = report["bake"], report["last_cycle"]
    lines = [
        f"model: {report['model'] or '-'}  champion: {version(report['champion'])}  "
        f"challenger: {version(report['challenger'])}  "
        f"pending approval: {report['pending_approval'] or 'none'}",
        f"cycle running: {'yes' if report['cycle_running'] else 'no'}",
        f"bake: v{bake['version']} until {when(bake['until_us'])}, inconclusive without its predictions "
        f"at {when(bake.get('deadline_us'))} (replaced v{bake['previous']})"
        if bake
        else "bake: none",
        _trial_line(report.get("trial"), when),
        f"last cycle: {last['outcome']} at {when(last.get('finished_us'))}: {'; '.join(last['reasons'])}"
        if last
        else "last cycle: none",
    ]
    for event in report["recent_events"]:
        details = event["details"]
        lines.append(
            f"  {when(event['at_us'])} {event['action']} {details.get('outcome', '')}: "
            f"{details.get('reason') or '; '.join(details.get('reasons', []))}"
        )
    typer.echo("\n".join(lines))


def _trial_line(trial: dict[str, Any] | None, when: Any) -> str:
    if not trial:
        return "trial: none"
    if trial.get("experiment") is None:
        return f"trial: v{trial['version']} ({trial['mode']}) waits for the running experiment to end"
    return (
        f"trial: v{trial['version']} ({trial['mode']}, experiment {trial['experiment']}) against "
        f"v{trial['champion']} until {when(trial.get('until_us'))} at least, inconclusive without its "
        f"predictions at {when(trial.get('deadline_us'))}"
    )
