"""``execbridge serve``: run the gateway (uvicorn, one process) until interrupted.

Before the server starts, a preflight resolves the upstream (Databricks auth within its bound) and
checks the key policy, so a misconfiguration is one clear line and exit status 1, not a traceback
from inside the server's start-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from pathlib import Path

import click
import uvicorn

from execbridge.api.app import create_app
from execbridge.api.drain import Drain
from execbridge.cli._context import CliContext
from execbridge.cli.supervisor import Supervisor
from execbridge.config import Settings
from execbridge.errors import ConfigurationError
from execbridge.keys import key_gate
from execbridge.sandbox.gateway_user import GatewayUser, SplitError
from execbridge.wiring import UpstreamTarget, open_services, open_store, resolve_upstream

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8787).")
@click.option("--upstream", "upstream_url", default=None, help="OpenAI-compatible base URL of the model server.")
@click.option(
    "--provider",
    type=click.Choice(["openai", "databricks"]),
    default=None,
    help="databricks: workspace and credentials from Databricks unified auth (DATABRICKS_HOST/TOKEN, "
    "DATABRICKS_CONFIG_PROFILE, OAuth M2M). Default openai: any OpenAI-compatible --upstream.",
)
@click.option(
    "--upstream-format",
    type=click.Choice(["auto", "anthropic", "chat"]),
    default=None,
    help="anthropic: the upstream speaks Anthropic's Messages API (--upstream is the base before /v1/messages); "
    "chat: OpenAI Chat Completions. Default auto: anthropic when the URL's path ends in /anthropic; with "
    "--provider databricks, Claude models use /serving-endpoints/anthropic and others Chat Completions.",
)
@click.option(
    "--upstream-api-key",
    default=None,
    help="Key for the upstream. Without it, each client's own key (x-api-key / Bearer) is passed through.",
)
@click.option("--max-iterations", type=int, default=None, help="Server-tool rounds per request before pause_turn.")
@click.option("--allow-weak-isolation", is_flag=True, default=None, help="Run even if a sandbox protection is missing.")
@click.option(
    "--sandbox-host",
    default=None,
    help="unix:PATH of a running `execbridge sandbox-host` to keep containers in (default: started as root, "
    "serve starts its own; otherwise containers run in this process).",
)
@click.option(
    "--gateway-user", default=None, help="User the gateway runs as when started as root (default execbridge)."
)
@click.option(
    "--privilege-split/--no-privilege-split",
    default=None,
    help="Started as root: run the HTTP gateway unprivileged beside a root sandbox host (default), or all as root.",
)
@click.option(
    "--playground/--no-playground",
    default=None,
    help="Serve the browser playground at /playground (default on).",
)
@click.pass_obj
def command(
    cli: CliContext,
    host: str | None,
    port: int | None,
    upstream_url: str | None,
    provider: str | None,
    upstream_format: str | None,
    upstream_api_key: str | None,
    max_iterations: int | None,
    allow_weak_isolation: bool | None,
    sandbox_host: str | None,
    gateway_user: str | None,
    privilege_split: bool | None,
    playground: bool | None,
) -> None:
    """Serve the Anthropic Messages API with code execution on an OpenAI-compatible or Anthropic-native upstream."""
    settings = cli.settings(
        host=host,
        port=port,
        upstream_url=upstream_url,
        provider=provider,
        upstream_format=upstream_format,
        upstream_api_key=upstream_api_key,
        max_iterations=max_iterations,
        sandbox_host=sandbox_host,
        gateway_user=gateway_user,
        privilege_split=privilege_split,
        playground=playground,
        sandbox={"allow_weak_isolation": allow_weak_isolation},
    )
    if not settings.upstream_url and settings.provider != "databricks":
        raise click.UsageError("no upstream: pass --upstream URL (or --provider databricks)")
    if settings.sandbox_host is None and settings.privilege_split and os.geteuid() == 0:
        sys.exit(_split(cli, settings, host, port, upstream_url, provider, upstream_format, max_iterations, playground))
    if settings.sandbox_host is not None and not settings.sandbox_host.startswith("unix:"):
        raise click.BadParameter("must be unix:PATH", param_hint="--sandbox-host")
    try:
        target = asyncio.run(_preflight(settings))
    except ConfigurationError as exc:
        raise click.ClickException(exc.message) from None
    app = create_app(lambda: open_services(settings, target))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        access_log=False,  # api/request_log.py writes one line per request, with the request's fields
        log_config=None,  # the root logger's handler (cli/logs.py) formats uvicorn's lines too
        log_level=cli.log_level,
        # The app ends what is still in flight at shutdown_grace_s (api/drain.py); uvicorn's own cut-off
        # is the backstop for a request that produces no event at all (an upstream gone silent).
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + _BACKSTOP_S,
    )
    click.echo(f"execbridge listening on http://{settings.host}:{settings.port} → {target.base_url}", err=True)
    _DrainingServer(config, app.state.drain, settings.shutdown_grace_s).run()


_BACKSTOP_S = 10
"""Past the grace period: two engine heartbeats (5 s each), so a request running a command ends cleanly."""


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, which first tells the app to drain (api/drain.py) when it is asked to stop."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace_s: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._drain.begin(self._grace_s)
        await super().shutdown(sockets)


def _split(
    cli: CliContext,
    settings: Settings,
    host: str | None,
    port: int | None,
    upstream_url: str | None,
    provider: str | None,
    upstream_format: str | None,
    max_iterations: int | None,
    playground: bool | None,
) -> int:
    """Run as the privilege split's supervisor (``supervisor.py``); the gateway's exit status."""
    args: list[str] = []
    for flag, value in (
        ("--host", host),
        ("--port", port),
        ("--upstream", upstream_url),
        ("--provider", provider),
        ("--upstream-format", upstream_format),
        ("--max-iterations", max_iterations),
    ):
        if value is not None:
            args += [flag, str(value)]
    if settings.sandbox.allow_weak_isolation:
        args.append("--allow-weak-isolation")
    if playground is not None:
        args.append("--playground" if playground else "--no-playground")
    env = {k: v for k, v in os.environ.items() if k != "EXECBRIDGE_CONFIG"}
    if settings.upstream_api_key is not None:  # by environment, not on a command line others can read
        env["EXECBRIDGE_UPSTREAM_API_KEY"] = settings.upstream_api_key.get_secret_value()
    config = cli.config or (Path(os.environ["EXECBRIDGE_CONFIG"]) if os.environ.get("EXECBRIDGE_CONFIG") else None)
    try:
        user = GatewayUser.named(settings.gateway_user)
        supervisor = Supervisor(
            settings,
            user,
            config_file=config,
            log_level=cli.log_level,
            log_format=cli.log_format,
            serve_args=args,
            env=env,
        )
        click.echo(
            f"execbridge: gateway runs as {user.name!r}; containers in a root sandbox host at {supervisor.socket_path}",
            err=True,
        )
        return supervisor.run()
    except SplitError as exc:
        raise click.ClickException(str(exc)) from None


async def _preflight(settings: Settings) -> UpstreamTarget:
    async with open_store(settings) as store:
        await key_gate(settings, store.keys, announce=False)  # the server itself announces at start-up
    return await resolve_upstream(settings)
