"""``execbridge doctor``: one line per sandbox protection, ok or MISSING; exits 1 if any is missing."""

from __future__ import annotations

import asyncio

import click

from execbridge.cli._context import CliContext
from execbridge.sandbox.doctor import diagnose


@click.command("doctor")
@click.pass_obj
def command(obj: CliContext) -> None:
    """Check that every sandbox protection works on this machine."""
    report = asyncio.run(diagnose(obj.settings()))
    click.echo(report.render())
    if not report.ok:
        click.echo(
            f"\n{len(report.missing)} protection(s) missing: the gateway refuses to run containers unless "
            "sandbox.allow_weak_isolation is set (EXECBRIDGE_SANDBOX__ALLOW_WEAK_ISOLATION=true).",
            err=True,
        )
        raise SystemExit(1)
