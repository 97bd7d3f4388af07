"""``execbridge keys create|ls|revoke``: the gateway's own API keys (see ``execbridge.keys``).

``create`` prints the new key once, alone on stdout (so ``KEY=$(execbridge keys create)`` works), and
what it is on stderr; nothing can show it again. ``ls`` never shows secrets, only ids. A running
gateway sees a new or revoked key on its next request: keys live in the shared SQLite store.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import click

from execbridge.cli._context import CliContext
from execbridge.keys import GatewayKeys
from execbridge.store.base import ApiKeyRecord
from execbridge.wiring import open_store


@click.group("keys")
def command() -> None:
    """Manage the API keys clients use when the gateway holds the upstream credential."""


@command.command("create")
@click.option("--name", default=None, help="A label to recognise the key by in `keys ls`.")
@click.pass_obj
def create(cli: CliContext, name: str | None) -> None:
    """Create a key and print it (shown this once only)."""

    async def run() -> tuple[ApiKeyRecord, str]:
        async with open_store(cli.settings()) as store:
            return await GatewayKeys(store.keys).create(name)

    record, secret = asyncio.run(run())
    click.echo(secret)
    label = f" ({record.name})" if record.name else ""
    click.echo(f"created {record.id}{label}: store the key now, it cannot be shown again", err=True)


@command.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@click.pass_obj
def list_keys(cli: CliContext, as_json: bool) -> None:
    """List keys (newest first), revoked ones included."""

    async def run() -> list[ApiKeyRecord]:
        async with open_store(cli.settings()) as store:
            return await GatewayKeys(store.keys).list()

    records = asyncio.run(run())
    if not records and not as_json:
        click.echo("no keys (create one with `execbridge keys create`)", err=True)
    for r in records:
        if as_json:
            row = {
                "id": r.id,
                "name": r.name,
                "created_at": _iso(r.created_at),
                "last_used_at": _iso(r.last_used_at),
                "revoked_at": _iso(r.revoked_at),
                "active": r.active,
            }
            click.echo(json.dumps(row))
        else:
            state = "active " if r.active else "revoked"
            used = _iso(r.last_used_at) or "never used"
            click.echo(f"{r.id}  {state}  {_iso(r.created_at)}  {used:<20}  {r.name or ''}".rstrip())


@command.command("revoke")
@click.argument("key_id")
@click.pass_obj
def revoke(cli: CliContext, key_id: str) -> None:
    """Revoke a key by id; requests with it are refused from then on."""

    async def run() -> bool:
        async with open_store(cli.settings()) as store:
            return await GatewayKeys(store.keys).revoke(key_id)

    if not asyncio.run(run()):
        raise click.ClickException(f"no active key with id {key_id}")
    click.echo(f"revoked {key_id}", err=True)


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None
