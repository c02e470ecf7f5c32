"""`churnops keys`: create (the key is printed once), list, revoke."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from churnops.cli._common import JsonOption, database_errors, load_settings, make_console, print_json

app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what the key is for.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: predict, admin, audit.")],
    rate_limit: Annotated[
        str | None, typer.Option(help="N/second|minute|hour|day (default: CHURNOPS_RATE_LIMIT).")
    ] = None,
    signed: Annotated[bool, typer.Option("--signed", help="Require HMAC-signed requests.")] = False,
    expires_in_days: Annotated[float | None, typer.Option(min=0.001, help="Expire after D days.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print it once (it is stored only as an HMAC)."""
    from churnops.jobs.keys import create_key

    settings = load_settings()
    with database_errors():
        made = create_key(
            settings,
            name=name,
            scopes=scopes,
            rate_limit=rate_limit,
            signed=signed,
            expires_in_days=expires_in_days,
            created_by=f"cli:{getpass.getuser()}",
        )
    if as_json:
        print_json(made.shown_once())
        return
    typer.echo(f"key id: {made.record.key_id}")
    typer.echo(f"key:    {made.key}")
    if made.signing_secret:
        typer.echo(f"signing secret: {made.signing_secret}")
    make_console().print("Store it now: it is shown once. Send it as `X-API-Key`.")


@app.command("list")
def keys_list(as_json: JsonOption = False) -> None:
    """Every key (never a secret): id, name, scopes, limit, signing, expiry, revocation."""
    from churnops.jobs.keys import list_keys

    with database_errors():
        records = [r.public() for r in list_keys(load_settings())]
    if as_json:
        print_json(records)
        return
    from rich.table import Table

    table = Table("key id", "name", "scopes", "rate limit", "signed", "state")
    for r in records:
        state = "revoked" if r["revoked_at_us"] else "active"
        table.add_row(
            r["key_id"],
            r["name"],
            ",".join(r["scopes"]),
            r["rate_limit"] or "default",
            "yes" if r["signed"] else "no",
            state,
        )
    make_console(stderr=False).print(table)


@app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (not the key).")]) -> None:
    """Revoke a key: refused by every worker and replica within 2 s."""
    from churnops.jobs.keys import revoke_key

    with database_errors():
        revoke_key(load_settings(), key_id, principal=f"cli:{getpass.getuser()}")
    typer.echo(f"revoked {key_id}")
