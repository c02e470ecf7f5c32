"""`churnops config`: the effective settings."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from churnops.cli._common import load_settings

app = typer.Typer(help="Effective settings.", no_args_is_help=True)


@app.command("show")
def config_show(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Print the effective settings and resolved stores, secrets masked."""
    view = load_settings().public_view()
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    resolved = view.pop("resolved")
    for key, value in {**view, **{f"resolved.{k}": v for k, v in resolved.items()}}.items():
        typer.echo(f"{key:32} {value}")
