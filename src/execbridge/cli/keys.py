"""``execbridge keys create|ls|revoke|usage``: the gateway's own API keys (see ``execbridge.keys``), and
what each key has used.

``create`` prints the new key once, alone on stdout (so ``KEY=$(execbridge keys create)`` works), and
what it is on stderr; nothing can show it again. ``ls`` never shows secrets, only ids. A running
gateway sees a new or revoked key on its next request: keys live in the shared SQLite store.

``usage`` lists every owner that used the gateway: a gateway key's id (with its name), or in
pass-through mode the digest of a client's own key (no secret is ever stored). A running gateway writes
its totals at most every ``usage_flush_s`` seconds and when it stops.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import click

from execbridge.cli._context import CliContext
from execbridge.keys import GatewayKeys
from execbridge.store.base import ApiKeyRecord, UsageRecord
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


@command.command("usage")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per key.")
@click.pass_obj
def usage(cli: CliContext, as_json: bool) -> None:
    """Requests, tokens in and out, code-execution seconds and files stored, per key (most input tokens first)."""

    async def run() -> tuple[list[UsageRecord], dict[str, str | None]]:
        async with open_store(cli.settings()) as store:
            names = {k.id: k.name for k in await store.keys.list()}
            return await store.usage.list(), names

    records, names = asyncio.run(run())
    if not records and not as_json:
        click.echo("no usage yet", err=True)
        return
    if not as_json:
        click.echo(
            f"{'KEY':<44}  {'REQUESTS':>8}  {'TOKENS IN':>10}  {'TOKENS OUT':>10}  {'EXEC S':>9}  {'FILES':>5}  "
            f"{'FILE BYTES':>11}  NAME"
        )
    for r in records:
        name = names.get(r.owner)
        if as_json:
            row = {
                "key": r.owner,
                "name": name,
                "gateway_key": r.owner in names,
                "requests": r.requests,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "code_execution_seconds": round(r.code_execution_s, 3),
                "files": r.files,
                "file_bytes": r.file_bytes,
                "last_used_at": _iso(r.last_used_at),
            }
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{r.owner:<44}  {r.requests:>8}  {r.input_tokens:>10}  {r.output_tokens:>10}  "
                f"{r.code_execution_s:>9.1f}  {r.files:>5}  {r.file_bytes:>11}  {name or ''}".rstrip()
            )
