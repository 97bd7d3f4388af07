"""``execbridge sandbox-host``: the privileged half of ``serve`` — containers behind a Unix socket.

``serve`` started as root starts (and restarts) one itself; run it by hand to share it with a gateway
started with ``serve --sandbox-host unix:PATH``. It runs until SIGTERM or SIGINT, then stops every
container's processes (their files stay) like a stopping gateway does.
"""

from __future__ import annotations

import asyncio
import grp
import signal
import sys
from pathlib import Path

import click
import uvloop

from execbridge.cli._context import CliContext
from execbridge.config import Settings
from execbridge.errors import ExecbridgeError
from execbridge.sandbox.host_server import SandboxHostServer
from execbridge.wiring import open_local_containers


@click.command("sandbox-host")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to listen (default /run/execbridge/<instance>/sandbox.sock).",
)
@click.option("--group", default=None, help="Group that may connect (the gateway user's); without it only root may.")
@click.option("--allow-weak-isolation", is_flag=True, default=None, help="Run even if a sandbox protection is missing.")
@click.pass_obj
def command(cli: CliContext, socket_path: Path | None, group: str | None, allow_weak_isolation: bool | None) -> None:
    """Own this data directory's containers and serve them to gateways over a Unix socket."""
    settings = cli.settings(sandbox={"allow_weak_isolation": allow_weak_isolation})
    path = socket_path or settings.sandbox_socket_path
    gid = None
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise click.BadParameter(f"no group named {group!r}", param_hint="--group") from None
    try:
        # uvloop, as the gateway's uvicorn uses: it halves the cost of a round trip on the socket.
        uvloop.run(_serve(settings, path, gid))
    except ExecbridgeError as exc:
        raise click.ClickException(exc.message) from None


def _print_tasks() -> None:
    """SIGUSR1: every task's stack on stderr, to see what a host that does not stop is waiting for."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def _serve(settings: Settings, path: Path, gid: int | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _print_tasks)
    async with open_local_containers(settings) as manager:
        server = SandboxHostServer(manager, instance=settings.instance, max_upload_bytes=settings.max_file_bytes)
        async with server.listening(path, group=gid):
            click.echo(f"execbridge sandbox host listening on {path}", err=True)
            await stop.wait()
