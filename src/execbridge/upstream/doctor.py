"""What ``execbridge doctor`` finds out about the upstream: reachable, authenticated, which models, and
(only when asked, as it costs a model call) whether tool calling works.

Each check is done by using the thing: listing the models is the reachability and authentication
probe; the tool check is one tiny non-streamed request that must come back with a call of the
offered function. Must not: raise for a failing upstream (a failure is a finding), or spend tokens
unless ``check_tools`` is set.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass

from execbridge.errors import UpstreamError, UpstreamTimeout
from execbridge.types import FunctionDef, Message, Text
from execbridge.upstream.base import ChatTurn, FunctionChoice, GatewayUpstream, ModelInfo, ToolCallDelta, Upstream

__all__ = ["UpstreamCheck", "UpstreamReport", "diagnose_upstream"]

REACHABLE = "upstream reachable"
AUTHENTICATED = "upstream authenticated"
MODELS = "upstream models"
TOOLS = "tool calling"
_SHOWN_MODELS = 8
_PING = FunctionDef(
    "ping", "Answers pong. Call it when asked to.", {"type": "object", "properties": {"note": {"type": "string"}}}
)


@dataclass(frozen=True, slots=True)
class UpstreamCheck:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok     ' if self.ok else 'FAILED '}  {self.name:<22} {self.detail}"


@dataclass(frozen=True, slots=True)
class UpstreamReport:
    checks: tuple[UpstreamCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def render(self) -> str:
        return "\n".join(c.line() for c in self.checks)


async def diagnose_upstream(
    upstream: GatewayUpstream,
    *,
    api_key: str | None = None,
    check_tools: bool = False,
    model: str | None = None,
) -> UpstreamReport:
    """``api_key``: a client key to use in pass-through mode; ``model``: the one to try tools with."""
    where = upstream.base_url
    checks: list[UpstreamCheck] = []
    models: list[ModelInfo] = []
    try:
        models = await upstream.list_models(api_key)
    except UpstreamError as exc:
        answered = exc.status is not None or exc.code == "upstream_credential_refused"
        if not answered:
            return UpstreamReport((UpstreamCheck(REACHABLE, False, f"{where}: {exc.message}"),))
        checks.append(UpstreamCheck(REACHABLE, True, where))
        if exc.status in (401, 403) or exc.code == "upstream_credential_refused":
            hint = "" if api_key or exc.code else " (pass-through mode: give a key with --upstream-api-key)"
            checks.append(UpstreamCheck(AUTHENTICATED, False, exc.message + hint))
            return UpstreamReport(tuple(checks))
        checks.append(UpstreamCheck(AUTHENTICATED, True, "not refused, but listing models failed"))
        checks.append(UpstreamCheck(MODELS, False, f"HTTP {exc.status}: {exc.message}"))
    else:
        checks.append(UpstreamCheck(REACHABLE, True, where))
        checks.append(UpstreamCheck(AUTHENTICATED, True, "models listed with the configured credential"))
        names = [m.id for m in models]
        more = f" (+{len(names) - _SHOWN_MODELS} more)" if len(names) > _SHOWN_MODELS else ""
        shown = ", ".join(names[:_SHOWN_MODELS]) + more
        checks.append(UpstreamCheck(MODELS, bool(names), shown or "the upstream lists no models"))
    if check_tools:
        checks.append(await _check_tools(upstream, api_key, model, [m.id for m in models]))
    return UpstreamReport(tuple(checks))


async def _check_tools(upstream: Upstream, api_key: str | None, model: str | None, listed: list[str]) -> UpstreamCheck:
    chosen = model or _pick(listed)
    if chosen is None:
        return UpstreamCheck(TOOLS, False, "no model to try: pass --model")
    turn = ChatTurn(
        model=chosen,
        messages=(Message("user", (Text("Call the ping function now, with note 'doctor'."),)),),
        max_tokens=256,
        functions=(_PING,),
        function_choice=FunctionChoice("required"),
        stream=False,
        api_key=api_key,
    )
    called: list[str] = []
    try:
        async with aclosing(upstream.stream_turn(turn)) as events:
            async for event in events:
                if isinstance(event, ToolCallDelta) and event.name:
                    called.append(event.name)
    except UpstreamTimeout as exc:
        return UpstreamCheck(TOOLS, False, f"{chosen}: timed out ({exc.message})")
    except UpstreamError as exc:
        return UpstreamCheck(TOOLS, False, f"{chosen}: {exc.message}")
    if _PING.name in called:
        return UpstreamCheck(TOOLS, True, f"{chosen} called the offered function")
    return UpstreamCheck(TOOLS, False, f"{chosen} answered without calling the offered function")


def _pick(listed: list[str]) -> str | None:
    """A chat model to try: a Claude one if there is one (the reason most people run this), else the first."""
    return next((m for m in listed if "claude" in m), listed[0] if listed else None)
