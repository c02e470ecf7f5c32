"""`churnops privacy`: GDPR/CCPA access, erasure, opt-out and retention."""

from __future__ import annotations

from typing import Annotated

import typer

from churnops.cli._common import database_errors, load_settings, print_json

app = typer.Typer(help="GDPR/CCPA: export, erase, opt-out, purge.", no_args_is_help=True)

CustomerOption = Annotated[str, typer.Option("--customer", help="The customer's id (as in your data).")]


@app.command("export")
def privacy_export(customer: CustomerOption) -> None:
    """Every record held on a customer, decrypted, as JSON (GDPR Art. 15)."""
    from churnops.jobs.privacy import export_customer, open_privacy

    with database_errors(), open_privacy(load_settings(), epoch_days=_epoch_days()) as privacy:
        print_json(export_customer(privacy, customer))


@app.command("erase")
def privacy_erase(customer: CustomerOption) -> None:
    """Erase a customer: keys destroyed, features deleted everywhere, tombstone kept (GDPR Art. 17)."""
    from churnops.jobs.privacy import cli_principal, erase_customer, open_privacy

    with database_errors(), open_privacy(load_settings(), epoch_days=_epoch_days()) as privacy:
        result = erase_customer(privacy, customer, cli_principal())
    if result.get("already_erased"):
        typer.echo(f"customer already erased at {result['erased_at']}")
        return
    r = result
    typer.echo(
        f"erased: {r['data_keys_destroyed']} data keys destroyed, {r['offline_rows_deleted']} offline"
        f" rows and {r['online_vectors_deleted']} online vectors deleted; tombstone {r['event_id']}"
    )


@app.command("opt-out")
def privacy_opt_out(customer: CustomerOption) -> None:
    """CCPA opt-out: the customer is left out of every later training set."""
    from churnops.jobs.privacy import cli_principal, open_privacy, opt_out_customer

    with database_errors(), open_privacy(load_settings(), epoch_days=_epoch_days()) as privacy:
        result = opt_out_customer(privacy, customer, cli_principal())
    typer.echo(f"opted out (event {result['event_id']})")


@app.command("purge")
def privacy_purge(
    older_than_days: Annotated[
        int | None, typer.Option(help="Retention in days (default: params.yaml ledger.retention_days).")
    ] = None,
) -> None:
    """Shred ledger payloads past the retention period (their data keys are destroyed)."""
    from churnops.io.datasets import load_params
    from churnops.jobs.privacy import cli_principal, open_privacy, purge

    ledger = load_params(None).ledger
    days = older_than_days if older_than_days is not None else ledger.retention_days
    with database_errors(), open_privacy(load_settings(), epoch_days=ledger.key_epoch_days) as privacy:
        result = purge(privacy, days, ledger.key_epoch_days, cli_principal())
    typer.echo(
        f"purged: {result['data_keys_destroyed']} data keys of periods before {result['before']} destroyed"
    )


def _epoch_days() -> int:
    from churnops.io.datasets import load_params

    return load_params(None).ledger.key_epoch_days
