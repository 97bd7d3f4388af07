"""``execbridge doctor``: one line per sandbox protection, ok or MISSING; exits 1 if any is missing.

When an upstream is configured (``--upstream``/``--provider`` or settings), it is checked too
(``upstream/doctor.py``): reachable, authenticated, which models, and with ``--check-tools`` one tiny
tool-calling request.
"""

from __future__ import annotations

import asyncio

import click

from execbridge.cli._context import CliContext
from execbridge.config import Settings
from execbridge.errors import ConfigurationError
from execbridge.sandbox.capacity import check_leftovers, check_live_budget
from execbridge.sandbox.doctor import USERNS, DoctorReport, check_privilege_split, check_quotas, diagnose
from execbridge.sandbox.userns_policy import check_userns_policy
from execbridge.upstream.doctor import AUTHENTICATED, UpstreamCheck, UpstreamReport, diagnose_upstream
from execbridge.wiring import open_upstream, resolve_upstream


@click.command("doctor")
@click.option("--upstream", "upstream_url", default=None, help="Check this OpenAI-compatible base URL.")
@click.option("--provider", type=click.Choice(["openai", "databricks"]), default=None, help="As for serve.")
@click.option("--upstream-api-key", default=None, help="Key to check the upstream with (pass-through mode).")
@click.option("--check-tools", is_flag=True, help="Also send one tiny tool-calling request (costs a model call).")
@click.option("--model", default=None, help="Model for --check-tools (default: a listed Claude model, or the first).")
@click.pass_obj
def command(
    obj: CliContext,
    upstream_url: str | None,
    provider: str | None,
    upstream_api_key: str | None,
    check_tools: bool,
    model: str | None,
) -> None:
    """Check that every sandbox protection works on this machine, and the upstream if one is set."""
    settings = obj.settings(upstream_url=upstream_url, provider=provider)
    sandbox = asyncio.run(diagnose(settings))
    policy = asyncio.run(check_userns_policy(settings, probe_ok=sandbox.has(USERNS)))
    capacity = (check_live_budget(settings), check_leftovers())
    report = DoctorReport((*sandbox.checks, policy, check_privilege_split(settings), check_quotas(settings), *capacity))
    click.echo(report.render())
    upstream = asyncio.run(_upstream_report(settings, upstream_api_key, check_tools, model))
    if upstream is not None:
        click.echo(upstream.render())
    if not sandbox.ok:
        click.echo(
            f"\n{len(sandbox.missing)} protection(s) missing: the gateway refuses to run containers unless "
            "sandbox.allow_weak_isolation is set (EXECBRIDGE_SANDBOX__ALLOW_WEAK_ISOLATION=true).",
            err=True,
        )
    if not report.ok or (upstream is not None and not upstream.ok):
        raise SystemExit(1)


async def _upstream_report(
    settings: Settings, api_key: str | None, check_tools: bool, model: str | None
) -> UpstreamReport | None:
    if not settings.upstream_url and settings.provider != "databricks":
        return None
    try:
        target = await resolve_upstream(settings)
    except ConfigurationError as exc:
        return UpstreamReport((UpstreamCheck(AUTHENTICATED, False, exc.message),))
    async with open_upstream(settings, target) as upstream:
        return await diagnose_upstream(upstream, api_key=api_key, check_tools=check_tools, model=model)
