"""Usage per key (``execbridge keys usage``): requests, tokens and code-execution seconds per owner.

Totals gather in memory from the telemetry hooks and are added to the store (``UsageStore.add``) when the
app's edge flushes after a request, at most every ``flush_every_s`` (0: after every request), and when the
gateway closes. Files stored are read from the Files API's own table when usage is listed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from execbridge.store.base import UsageStore
from execbridge.telemetry import RequestReport, Sink, ToolReport, TurnReport

log = logging.getLogger(__name__)

# Requests that run the model: the ones a key's usage counts.
COUNTED_ROUTES = frozenset({"/v1/messages", "/v1/responses"})


@dataclass(slots=True)
class _Pending:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    code_execution_s: float = 0.0


class UsageSink(Sink):
    def __init__(self, store: UsageStore, *, flush_every_s: float = 1.0) -> None:
        self._store = store
        self._flush_every_s = flush_every_s
        self._pending: dict[str, _Pending] = {}
        self._flushed_at = time.monotonic()

    def _of(self, owner: str) -> _Pending:
        pending = self._pending.get(owner)
        if pending is None:
            pending = self._pending[owner] = _Pending()
        return pending

    def request_finished(self, handle: Any, report: RequestReport) -> None:
        if report.owner is not None and report.route in COUNTED_ROUTES:
            self._of(report.owner).requests += 1

    def turn_finished(self, handle: Any, report: TurnReport) -> None:
        pending = self._of(report.owner)
        pending.input_tokens += report.usage.input_tokens
        pending.output_tokens += report.usage.output_tokens

    def tool_finished(self, handle: Any, report: ToolReport) -> None:
        self._of(report.owner).code_execution_s += report.duration_s

    async def flush(self) -> None:
        if self._pending and time.monotonic() - self._flushed_at >= self._flush_every_s:
            await self._write()

    async def aclose(self) -> None:
        await self._write()

    async def _write(self) -> None:
        """Add the pending totals to the store; what could not be written stays pending for the next time."""
        pending, self._pending = self._pending, {}
        self._flushed_at = time.monotonic()
        now = datetime.now(UTC)
        while pending:
            owner, p = next(iter(pending.items()))
            try:
                await self._store.add(
                    owner,
                    requests=p.requests,
                    input_tokens=p.input_tokens,
                    output_tokens=p.output_tokens,
                    code_execution_s=p.code_execution_s,
                    at=now,
                )
            except Exception as exc:  # boundary: usage is kept for the next flush, never dropped
                log.warning("usage totals could not be written (kept for the next try): %s", exc)
                for unwritten, q in pending.items():
                    self._merge(unwritten, q)
                return
            del pending[owner]

    def _merge(self, owner: str, p: _Pending) -> None:
        into = self._of(owner)
        into.requests += p.requests
        into.input_tokens += p.input_tokens
        into.output_tokens += p.output_tokens
        into.code_execution_s += p.code_execution_s
