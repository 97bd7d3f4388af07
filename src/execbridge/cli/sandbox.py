"""``execbridge sandbox exec|ls|rm|gc``: run code in a container, list containers, delete one, remove
what dead instances left on this machine.

``exec`` prints exactly one JSON object on stdout:
``{"container_id", "stdout", "stderr", "return_code", "duration_ms"}`` plus ``"error_code"`` when the
command could not run to completion. A program that fails is still exit status 0 here (its status is
in the JSON); the CLI exits 1 only when it could not do what was asked (unknown container, …).

When a sandbox host serves the data directory (``serve`` started as root runs one), the commands
are its requests, made as root: any owner may be named. Otherwise the CLI runs the containers
itself, holding the data directory's lock while it runs, and keeps no spare containers (it would
only throw them away).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import click
import orjson

from execbridge.cli._context import CliContext
from execbridge.config import Settings
from execbridge.errors import ExecbridgeError
from execbridge.sandbox import instances
from execbridge.sandbox.base import ContainerService
from execbridge.sandbox.host_client import host_answers
from execbridge.wiring import open_containers

DEFAULT_OWNER = "cli"


def _settings(obj: CliContext, sandbox_host: str | None) -> Settings:
    return obj.settings(sandbox_host=sandbox_host, sandbox={"spare_containers": 0})


@asynccontextmanager
async def _containers(settings: Settings) -> AsyncIterator[ContainerService]:
    """The running sandbox host's containers when one answers, else this process's own."""
    if settings.sandbox_host is None and await host_answers(settings.sandbox_socket_path):
        settings = settings.model_copy(update={"sandbox_host": f"unix:{settings.sandbox_socket_path}"})
    async with open_containers(settings) as containers:
        yield containers


_host_option = click.option(
    "--sandbox-host",
    default=None,
    help="unix:PATH of the sandbox host to ask (default: this data directory's, when one is running).",
)


def _fail(exc: ExecbridgeError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(1)


@click.group("sandbox")
def command() -> None:
    """Containers: run code, list, delete; collect dead instances' leftovers."""


@command.command("exec")
@click.option("--container", "container_id", default=None, help="Container id; a new one when omitted.")
@click.option("--bash", "bash", default=None, help="Shell command to run.")
@click.option("--python", "python", default=None, help="Python code to run.")
@click.option("--timeout", type=float, default=None, help="Wall-clock limit in seconds.")
@click.option("--owner", default=DEFAULT_OWNER, show_default=True, help="Owner key of the container.")
@_host_option
@click.pass_obj
def exec_(
    obj: CliContext,
    container_id: str | None,
    bash: str | None,
    python: str | None,
    timeout: float | None,
    owner: str,
    sandbox_host: str | None,
) -> None:
    """Run one bash command or Python program and print the result as JSON."""
    if (bash is None) == (python is None):
        raise click.UsageError("give exactly one of --bash or --python")

    async def run() -> dict[str, Any]:
        async with _containers(_settings(obj, sandbox_host)) as manager:
            cid = container_id or (await manager.create(owner)).id
            async with manager.lease(cid, owner) as session:
                if bash is not None:
                    result = await session.run_bash(bash, timeout=timeout)
                else:
                    assert python is not None
                    result = await session.run_python(python, timeout=timeout)
        out: dict[str, Any] = {
            "container_id": cid,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "return_code": result.return_code,
            "duration_ms": round(result.duration_ms, 3),
        }
        if result.error_code is not None:
            out["error_code"] = result.error_code
        return out

    try:
        click.echo(orjson.dumps(asyncio.run(run())).decode())
    except ExecbridgeError as exc:
        _fail(exc)


@command.command("ls")
@click.option("--owner", default=None, help="Only this owner's containers (default: all).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_host_option
@click.pass_obj
def ls(obj: CliContext, owner: str | None, as_json: bool, sandbox_host: str | None) -> None:
    """List containers, most recently used first."""

    async def run() -> list[dict[str, Any]]:
        async with _containers(_settings(obj, sandbox_host)) as manager:
            return [
                {
                    "id": info.id,
                    "owner": info.owner,
                    "created_at": info.created_at.isoformat(),
                    "last_used_at": info.last_used_at.isoformat(),
                    "expires_at": info.expires_at.isoformat(),
                }
                async for info in manager.list(owner)
            ]

    try:
        rows = asyncio.run(run())
    except ExecbridgeError as exc:
        _fail(exc)
        return
    for row in rows:
        if as_json:
            click.echo(orjson.dumps(row).decode())
        else:
            click.echo(f"{row['id']}  {row['owner']}  last used {row['last_used_at']}  expires {row['expires_at']}")


@command.command("rm")
@click.argument("container_id")
@click.option("--owner", default=None, help="The container's owner (default: whoever owns it).")
@_host_option
@click.pass_obj
def rm(obj: CliContext, container_id: str, owner: str | None, sandbox_host: str | None) -> None:
    """Delete a container and its workspace."""

    async def run() -> None:
        async with _containers(_settings(obj, sandbox_host)) as manager:
            key = owner
            if key is None:  # an operator's command: find the owner rather than ask for it
                owners = [i.owner async for i in manager.list() if i.id == container_id]
                key = owners[0] if owners else ""
            await manager.delete(container_id, key)

    try:
        asyncio.run(run())
    except ExecbridgeError as exc:
        _fail(exc)


@command.command("gc")
@click.option("--instance", "only", multiple=True, help="Only this instance (repeatable; default: every dead one).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed, remove nothing.")
def gc(only: tuple[str, ...], dry_run: bool) -> None:
    """Remove what dead instances left on this machine: cgroups, their processes, old-style mounts.

    An instance is live while its manager holds /run/execbridge/<instance>/lock; a live one is never
    touched. Needs root.
    """
    found = [i for i in instances.scan() if not only or i.name in only]
    for instance in found:
        if instance.state == "live":
            click.echo(f"{instance.name}: live ({instance.holder or 'processes running'}), left alone")
            continue
        if dry_run:
            click.echo(f"{instance.name}: dead, would remove {instance.leftovers()}")
            continue
        left = asyncio.run(instances.collect(instance))
        if left.state == "live":
            click.echo(f"{instance.name}: came back to life, left alone")
        elif left.cgroups or left.mounts or left.processes:
            click.echo(f"{instance.name}: removed {instance.leftovers()}; could not remove {left.leftovers()}")
        else:
            click.echo(f"{instance.name}: removed {instance.leftovers()}")
