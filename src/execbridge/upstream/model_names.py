"""Model names: what the client asked for → the name the upstream serves it under.

Clients send Anthropic names (``claude-sonnet-4-5``, dated ones like ``claude-sonnet-4-5-20250929``)
or the upstream's own names (``databricks-claude-sonnet-4-5``). ``ModelNames`` resolves either to
the upstream's name, in this order:

1. the configured map, by the exact name, then by the name without its ``-YYYYMMDD`` date;
2. the provider's default rule: on Databricks, ``claude-…`` → ``databricks-claude-…`` (dates
   dropped, as Databricks names carry none); elsewhere the name is passed on unchanged.

Must not: do I/O, or change what the client sees (responses echo the name the client sent; only the
upstream request uses the resolved one). Invariant: resolving is a dict lookup after the first time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

__all__ = ["ModelNames"]

_DATE = re.compile(r"-\d{8}$")

Provider = Literal["openai", "databricks"]


class ModelNames:
    def __init__(self, mapping: Mapping[str, str] | None = None, *, provider: Provider = "openai") -> None:
        self._mapping = dict(mapping or {})
        self._provider = provider
        self._resolved: dict[str, str] = {}

    def upstream(self, name: str) -> str:
        found = self._resolved.get(name)
        if found is None:
            found = self._resolve(name)
            if len(self._resolved) < 10_000:  # names come from clients: bound what they can make us keep
                self._resolved[name] = found
        return found

    def _resolve(self, name: str) -> str:
        undated = _DATE.sub("", name)
        mapped = self._mapping.get(name) or self._mapping.get(undated)
        if mapped:
            return mapped
        if self._provider == "databricks" and undated.startswith("claude-"):
            return "databricks-" + undated
        return name
