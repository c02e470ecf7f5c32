"""`churnops experiments`: A/B/n tests over pinned model versions, with shadows and bandits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnops.cli._common import JsonOption, database_errors, load_settings, make_console, print_json

app = typer.Typer(help="A/B/n experiments: create, list, show, results, stop, promote.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(help="Experiment name.")]


@app.command("create")
def experiments_create(
    file: Annotated[Path, typer.Option("--file", help="Experiment definition (YAML or JSON).")],
    as_json: JsonOption = False,
) -> None:
    """Start an experiment: arms pinned to versions with weights, optional shadows, fixed or bandit."""
    from churnops.core.experiments import parse_experiment_text
    from churnops.errors import DataError
    from churnops.jobs.experiments import create, open_experiments
    from churnops.jobs.privacy import cli_principal

    if not file.is_file():
        raise DataError(f"{file}: no such file")
    definition = parse_experiment_text(file.read_text(), source=str(file))
    with database_errors(), open_experiments(load_settings()) as ctx:
        created = create(ctx, definition, cli_principal())
    if as_json:
        print_json(created)
        return
    arms = ", ".join(f"{a['name']}=v{a['version']} ({a['weight']:g})" for a in created["definition"]["arms"])
    typer.echo(f"experiment {created['name']} running: {arms}; every worker follows within 2 s")


@app.command("list")
def experiments_list(as_json: JsonOption = False) -> None:
    """Every experiment, newest first."""
    from churnops.jobs.experiments import describe, open_experiments

    with database_errors(), open_experiments(load_settings()) as ctx:
        listed = [describe(e) for e in ctx.store.all()]
    if as_json:
        print_json(listed)
        return
    for item in listed:
        arms = len(item["definition"]["arms"])
        typer.echo(f"{item['name']:24} {item['status']:9} rev {item['revision']:<3} {arms} arms")


@app.command("show")
def experiments_show(name: NameArgument) -> None:
    """Definition, bucket counts per arm and the history of weights."""
    from churnops.jobs.experiments import describe, open_experiments

    with database_errors(), open_experiments(load_settings()) as ctx:
        print_json(describe(ctx.store.get(name)) | {"history": ctx.store.history(name)})


@app.command("results")
def experiments_results(name: NameArgument, as_json: JsonOption = False) -> None:
    """Per arm: counts, AUC / log loss / Brier / recall / profit with intervals, SRM, sequential tests."""
    from churnops.io.datasets import load_params
    from churnops.jobs.experiments import open_experiments, results

    console = make_console()
    with database_errors(), open_experiments(load_settings()) as ctx, console.status("computing results"):
        page = results(ctx, name, load_params(None).business)
    if as_json:
        print_json(page)
        return
    srm = page["srm"]
    typer.echo(f"{page['experiment']} ({page['status']}), primary metric {page['primary_metric']}")
    typer.echo(f"  sample ratio mismatch: p = {srm['p_value']:.3g}{' ALARM' if srm['alarm'] else ''}")
    for arm in page["arms"]:
        decision = arm.get("decision") or {}
        verdict = decision.get("decision", "control" if arm["control"] else "")
        typer.echo(
            f"  {arm['name']:16} served {arm['served']:>8,}  labelled {arm['labelled']:>7,}  {verdict}"
            + (f" ({decision['reason']})" if decision.get("reason") else "")
        )


@app.command("stop")
def experiments_stop(name: NameArgument) -> None:
    """Stop routing traffic by the experiment (every worker falls back to the champion within 2 s)."""
    from churnops.jobs.experiments import open_experiments, stop
    from churnops.jobs.privacy import cli_principal

    with database_errors(), open_experiments(load_settings()) as ctx:
        done = stop(ctx, name, cli_principal())
    typer.echo(f"experiment {done['name']} stopped (revision {done['revision']})")


@app.command("promote")
def experiments_promote(
    name: NameArgument, arm: Annotated[str, typer.Argument(help="The arm whose version becomes champion.")]
) -> None:
    """Promote an arm's pinned version to champion and end the experiment."""
    from churnops.jobs.experiments import open_experiments, promote
    from churnops.jobs.privacy import cli_principal

    with database_errors(), open_experiments(load_settings()) as ctx:
        done = promote(ctx, name, arm, cli_principal())
    typer.echo(f"{done['model']}: champion is now v{done['version']} (arm {arm} of {name})")


@app.command("reweight")
def experiments_reweight(
    name: NameArgument,
    weight: Annotated[list[str], typer.Option("--weight", help="ARM=WEIGHT, repeatable.")],
) -> None:
    """Change arm weights of a running experiment: only the customers whose bucket changes arm move."""
    from churnops.errors import InvalidRequest
    from churnops.jobs.experiments import open_experiments, reweight
    from churnops.jobs.privacy import cli_principal

    weights = {}
    for item in weight:
        arm, _, value = item.partition("=")
        try:
            weights[arm] = float(value)
        except ValueError as err:
            raise InvalidRequest(f"--weight {item!r}: expected ARM=NUMBER", "weight") from err
    with database_errors(), open_experiments(load_settings()) as ctx:
        done = reweight(ctx, name, weights, cli_principal())
    typer.echo(
        f"experiment {name}: revision {done['revision']}, {done['moved_share']:.2%} of customers moved"
    )
