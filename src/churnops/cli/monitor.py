"""`churnops monitor`: drift, performance and cost of the served models; `run` keeps them computed."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from churnops.cli._common import (
    JsonOption,
    ModelOption,
    ParamsOption,
    configure_logging,
    database_errors,
    load_settings,
    make_console,
    print_json,
)

app = typer.Typer(help="Drift, performance and cost of the served models.", no_args_is_help=True)

WindowOption = Annotated[
    str | None,
    typer.Option(help="A duration (30s, 15m, 1h, 1d, 2w) or a number of predictions (5000)."),
]


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


@app.command("drift")
def monitor_drift(
    window: WindowOption = None,
    variant: Annotated[str | None, typer.Option(help="Only this variant.")] = None,
    metric: Annotated[str | None, typer.Option(help="Also list one statistic: psi or js_distance.")] = None,
    params_file: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per-feature PSI and Jensen-Shannon, unseen and missing shares, prediction drift (default window 1h)."""
    from churnops.io.datasets import load_params
    from churnops.jobs.monitor import drift, open_stores, window_of

    settings, params = load_settings(), load_params(params_file)
    parsed = window_of("drift", window)
    with database_errors(), open_stores(settings) as stores:
        answer = drift(stores.monitor, params, parsed, variant=variant, metric=metric)
    if as_json:
        print_json(answer)
        return
    typer.echo(f"drift over the {answer['window']}: {answer['status']}")
    for slot in answer["variants"]:
        typer.echo(f"\n{slot['variant']} (v{slot['model_version']}): {slot['message']}")
        report = slot.get("report")
        if report and report["n"]:
            _drift_table(report)


def _drift_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("feature", "kind", "PSI", "noise", "JS", "unseen", "missing", "status", "why")
    for f in report["features"]:
        table.add_row(
            f["feature"],
            f["kind"],
            _fmt(f["psi"]),
            _fmt(f["psi_noise"]),
            _fmt(f["js_distance"]),
            _fmt(f["unseen_share"], ".1%"),
            _fmt(f["missing_share"], ".1%"),
            f["status"],
            "; ".join(f["reasons"]),
        )
    table.add_row(
        "(prediction)", "", _fmt(report["prediction_psi"]), "", "", "", "", report["prediction_status"], ""
    )
    make_console(stderr=False).print(table)


@app.command("performance")
def monitor_performance(
    window: WindowOption = None,
    metric: Annotated[str | None, typer.Option(help="One metric per cohort, e.g. roc_auc, brier.")] = None,
    kind: Annotated[str | None, typer.Option(help="realised or estimated (with --metric).")] = None,
    params_file: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Realised metrics per cohort as labels mature, and the label-free estimate (default window 60d)."""
    from churnops.io.datasets import load_params
    from churnops.jobs.monitor import open_stores, performance, window_of

    settings, params = load_settings(), load_params(params_file)
    parsed = window_of("performance", window)
    with database_errors(), open_stores(settings) as stores:
        answer = performance(stores.feedback, params, parsed, metric=metric, kind=kind)
    if as_json:
        print_json(answer)
        return
    typer.echo(f"performance over the {answer['window']}: {answer['status']}: {answer['message']}")
    if answer["cohorts"]:
        _performance_table(answer)
    for check in answer["calibration"]:
        typer.echo(_estimate_line(check))


def _estimate_line(check: dict[str, Any]) -> str:
    """'estimate for champion v1: unchecked: 0 labels in matured cohorts < min 2000'."""
    verdict = {True: "reliable", False: "UNRELIABLE", None: "unchecked"}[check["reliable"]]
    # A reason may already start with the verdict ("unchecked: 0 labels ..."): say it once.
    reasons = "; ".join(check["reasons"]).removeprefix(f"{verdict}: ")
    line = f"estimate for {check['variant']} v{check['version']}: {verdict}"
    return f"{line}: {reasons}" if reasons else line


def _performance_table(answer: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("variant", "version", "cohort", "predicted", "labelled", "mature", "ROC AUC", "est. AUC")
    table.add_column("Brier")
    table.add_column("status")
    for c in answer["cohorts"]:
        auc = c["realised"].get("roc_auc")
        interval = f"{auc['value']:.3f} [{_fmt(auc['low'])}, {_fmt(auc['high'])}]" if auc else "-"
        brier = c["realised"].get("brier")
        table.add_row(
            c["variant"],
            c["version"],
            c["start_date"],
            f"{c['n_predicted']:,}",
            f"{c['label_coverage']:.0%}",
            "yes" if c["mature"] else "no",
            interval,
            _fmt(c["estimated"].get("roc_auc")),
            _fmt(brier["value"]) if brier else "-",
            c["realised_status"],
        )
    make_console(stderr=False).print(table)


@app.command("cost")
def monitor_cost(
    window: WindowOption = None,
    params_file: ParamsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measured cost per 1,000 predictions per variant, against its trailing baseline (default window 1h)."""
    from churnops.errors import ConfigError
    from churnops.io.datasets import load_params
    from churnops.jobs.monitor import cost, open_stores, window_of

    settings, params = load_settings(), load_params(params_file)
    parsed = window_of("cost", window)
    with database_errors(), open_stores(settings) as stores:
        answer = cost(stores.monitor, params, parsed)
    if answer["status"] == "not_configured":
        raise ConfigError(answer["message"])
    if as_json:
        print_json(answer)
        return
    typer.echo(f"cost over the {answer['window']}: {answer['message']}")
    for v in answer["variants"]:
        anomaly = answer["anomaly"].get(v["variant"], {})
        typer.echo(
            f"  {v['variant']:<12} {v['predictions']:>10,} predictions  "
            f"${_fmt(v['per_1000_usd'], '.3g')} per 1,000  (CPU {v['cpu_seconds']:.2f} s, "
            f"request CPU {v['request_cpu_seconds']:.2f} s)  {anomaly.get('message', '')}"
        )


@app.command("run")
def monitor_run(
    every: Annotated[str, typer.Option(help="How often to recompute (a duration: 30s, 5m, 1h).")] = "5m",
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    params_file: ParamsOption = None,
) -> None:
    """Recompute drift, performance and cost, store the reports, roll old counts up; stops on SIGTERM."""
    from churnops.core.windows import parse_window
    from churnops.errors import InvalidRequest
    from churnops.io.datasets import load_params
    from churnops.jobs.monitor import open_stores, run_once

    settings, params, console = load_settings(), load_params(params_file), make_console()
    configure_logging(settings, console)
    interval = parse_window(every, "every").seconds
    if interval is None:
        raise InvalidRequest(f"every: {every!r} must be a duration (30s, 5m, 1h)", "every")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with database_errors(), open_stores(settings) as stores:
        while not stop.is_set():
            reports = run_once(stores, params)
            for kind, body in reports.items():
                typer.echo(f"{kind}: {body.get('status')}: {body.get('message')}")
            if once:
                return
            try:
                stop.wait(interval)
            except KeyboardInterrupt:
                break
    typer.echo("monitor run stopped", err=True)


@app.command("profile")
def monitor_profile(
    version: Annotated[str, typer.Argument(help="The model version that has no reference profile.")],
    data: Annotated[
        Path | None, typer.Option(help="Rows the version was trained on (default: the pipeline workdir's).")
    ] = None,
    model: ModelOption = None,
    params_file: ParamsOption = None,
) -> None:
    """Backfill the reference profile of a version trained before profiles existed."""
    from churnops.io.datasets import load_params
    from churnops.jobs.monitor_profile import backfill_profile

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    with console.status(f"profiling v{version}"):
        result = backfill_profile(settings, load_params(params_file), version, data, model)
    typer.echo(
        f"{result['model_name']} v{version}: reference profile {result['fingerprint']} from "
        f"{result['rows']:,} rows; served from the next load of that version (restart or alias move)"
    )
