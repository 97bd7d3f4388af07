"""The ``execbridge`` command line: a thin client of the library's own async API.

Global options (``--data-dir``, ``--config``, ``--log-level``, ``--log-format``) are collected here; each subcommand
lives in its own module that exposes ``command`` (a click command or group) and is listed in
``COMMAND_MODULES``. Subcommands hold no logic of their own: they build settings, call the library
under ``asyncio.run`` and print.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from execbridge.cli import logs
from execbridge.cli._context import CliContext

# One module per subcommand, each exporting ``command``. ``serve`` joins as "execbridge.cli.serve".
COMMAND_MODULES: tuple[str, ...] = (
    "execbridge.cli.doctor",
    "execbridge.cli.keys",
    "execbridge.cli.sandbox",
    "execbridge.cli.sandbox_host",
    "execbridge.cli.serve",
)


@click.group()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (default $EXECBRIDGE_DATA_DIR or ~/.local/share/execbridge).",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML settings file (flags > EXECBRIDGE_* environment > this file > defaults).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    envvar="EXECBRIDGE_LOG_LEVEL",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="EXECBRIDGE_LOG_FORMAT",
    help="json: one object a line, with the request's id, owner and container (at --log-level info, "
    "one access line per request).",
)
@click.pass_context
def main(
    ctx: click.Context, data_dir: Path | None, config: Path | None, log_level: str, log_format: logs.LogFormat
) -> None:
    """Server-side code execution for models behind OpenAI-compatible APIs."""
    logs.configure(log_level, log_format)
    ctx.obj = CliContext(data_dir=data_dir, config=config, log_level=log_level, log_format=log_format)


for _name in COMMAND_MODULES:
    main.add_command(importlib.import_module(_name).command)

__all__ = ["main"]
