"""The request fields only Anthropic-native upstreams take: ``cache_control``, ``citations``,
``service_tier`` and the ``anthropic-beta`` values (docs/protocol.md §8.3).

Job: validate them as ``api/wire.py`` validates the rest (an ``InvalidRequest`` whose message starts
with the field path) and give their neutral values; ``wire`` calls these while it parses a request.
Chat Completions upstreams ignore what these carry; Anthropic-native ones get it back unchanged.

Must not: touch the network or decide anything about upstreams.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from execbridge.api._checks import MISSING, at, choice_error, fail, kind_of, opt_bool, wrong
from execbridge.types import CacheControl

__all__ = [
    "GATEWAY_BETAS",
    "cache_control",
    "citations",
    "citations_enabled",
    "request_betas",
    "service_tier",
]


def cache_control(block: dict[str, Any], path: str) -> CacheControl | None:
    """A block's ``cache_control`` (``{"type": "ephemeral", "ttl": "5m" | "1h"}``), or None."""
    raw = block.get("cache_control")
    if raw is None:
        return None
    if type(raw) is not dict:
        wrong(path, "cache_control", "an object", raw)
    cc_path = at(path, "cache_control")
    kind = raw.get("type", MISSING)
    if kind != "ephemeral":
        choice_error(kind, at(cc_path, "type"), ("ephemeral",))
    ttl = raw.get("ttl")
    if ttl is not None and ttl not in ("5m", "1h"):
        choice_error(ttl, at(cc_path, "ttl"), ("5m", "1h"))
    return CacheControl("ephemeral", ttl)


def citations(block: dict[str, Any], path: str) -> tuple[dict[str, Any], ...]:
    """A text block's ``citations``, carried as they are (their shape is the upstream's)."""
    raw = block.get("citations")
    if not raw:
        return ()
    if type(raw) is not list:
        wrong(path, "citations", "an array", raw)
    for i, item in enumerate(raw):
        if type(item) is not dict:
            fail(at(at(path, "citations"), i), f"expected a citation object, got {kind_of(item)}")
    return tuple(raw)


def citations_enabled(block: dict[str, Any], path: str) -> bool | None:
    raw = block.get("citations")
    if raw is None:
        return None
    if type(raw) is not dict:
        wrong(path, "citations", "an object", raw)
    return opt_bool(raw, "enabled", at(path, "citations"))


_SERVICE_TIERS: Final = ("auto", "standard_only")


def service_tier(raw: object) -> str | None:
    if raw is None:
        return None
    if raw not in _SERVICE_TIERS:
        choice_error(raw, "service_tier", _SERVICE_TIERS)
    return str(raw)


# Betas the gateway serves itself: they never go upstream (code execution is the gateway's own tool).
GATEWAY_BETAS: Final = re.compile(r"(code-execution|files-api|message-threads|skills)-\d{4}-\d{2}-\d{2}")


def request_betas(headers: Mapping[str, str]) -> tuple[str, ...]:
    """The ``anthropic-beta`` values for the upstream: every one the gateway does not serve itself."""
    raw = headers.get("anthropic-beta")
    if not raw:
        return ()
    values = (v.strip() for v in raw.split(","))
    return tuple(dict.fromkeys(v for v in values if v and GATEWAY_BETAS.fullmatch(v) is None))
