"""`churnops demo`: everything on embedded defaults, then serve."""

from __future__ import annotations

from typing import Annotated

import typer

from churnops.cli._common import configure_logging, load_settings, make_console
from churnops.cli.pipeline import print_summary, run_with_progress


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

    settings, console = load_settings(), make_console()
    configure_logging(settings, console)
    data = settings.ensure_home() / "data" / f"demo-{rows}.csv"
    generate(rows, 42, data)
    params = with_search(load_params(None), False)  # the demo stays quick: fixed parameters
    workdir = settings.home / "pipeline"  # the demo's one run, where its messages say
    result = run_with_progress(data, load_spec("synthetic"), params, settings, workdir, console)
    print_summary(result, console)
    console.print(f"model card: {workdir / 'evaluation' / 'model_card.md'}")
    console.print(f"validation report: {workdir / 'validation' / 'validation.html'}")
    console.print(f"browse runs: mlflow ui --backend-store-uri {settings.tracking_uri}")
    if not serve_after:
        return
    import pandas as pd

    customer = pd.read_csv(data, nrows=1)["customer_id"].iloc[0]
    auth = ""
    if settings.auth == "on":
        from churnops.jobs.keys import create_key

        made = create_key(settings, name="demo", scopes="predict,admin", created_by="demo")
        console.print(f"demo API key (shown once; `churnops keys revoke {made.record.key_id}` to drop it):")
        typer.echo(made.key)
        auth = f"-H 'X-API-Key: {made.key}' "
    console.print(
        f"serving on http://127.0.0.1:{port} (OpenAPI at /docs); try:\n"
        f"  curl -s localhost:{port}/v1/predict {auth}-H 'content-type: application/json' "
        f"""-d '{{"customer_id": "{customer}"}}'""",
        soft_wrap=True,
    )
    from churnops.serving import logs
    from churnops.serving.server import run

    logs.configure(settings)
    run(settings, settings.serve_host, port, 1)
