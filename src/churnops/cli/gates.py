"""`churnops gates`: the promotion gates of a version against the champion, one row per gate."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from churnops.cli._common import (
    JsonOption,
    ModelOption,
    ParamsOption,
    database_errors,
    load_settings,
    make_console,
    print_json,
)

app = typer.Typer(help="Promotion gates (params.yaml `gates:`).", no_args_is_help=True)


@app.command("check")
def gates_check(
    version: Annotated[str, typer.Argument(help="Model version to check against the champion.")],
    as_json: JsonOption = False,
    params: ParamsOption = None,
    model: ModelOption = None,
) -> None:
    """Measure and judge every gate for VERSION (nothing moves); exit 1 when a gate fails."""
    from churnops.io.datasets import load_params
    from churnops.jobs.gate_check import check_gates
    from churnops.jobs.promote import open_lifecycle

    settings, console = load_settings(), make_console()
    with database_errors(), open_lifecycle(settings, load_params(params)) as lc:
        name = lc.model(model)
        with console.status(f"measuring the gates of {name} v{version}"):
            check = check_gates(lc.registry, lc.params, name, version, pseudonym_key=lc.keys.pseudonym_key)
    if as_json:
        print_json(check.to_dict())
    else:
        _print(check.to_dict())
    if check.status == "failed":
        typer.echo(f"error: v{version} would be refused: {check.first_failure()}", err=True)
        raise typer.Exit(1)


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    against = f"champion v{report['champion']}" if report["champion"] else "no champion"
    evaluation = report.get("evaluation") or {}
    title = f"{report['model']} v{report['version']} vs {against}: {report['status']}"
    if evaluation.get("rows") is not None:
        title += f" ({evaluation['rows']} evaluation rows)"
    table = Table("gate", "value", "limit", "result", "reason", title=title)
    for verdict in report["verdicts"]:
        table.add_row(
            verdict["name"],
            _number(verdict["value"]),
            _number(verdict["limit"]),
            "[green]pass[/]" if verdict["passed"] else "[red]FAIL[/]",
            Text(verdict["reason"]),  # plain text: a reason may name a user's column with brackets
        )
    make_console(stderr=False).print(table)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value + 0.0:.4g}"  # + 0.0: a zero limit reads 0, not -0
