"""Whether the upstream accepts a client's own key, asked once per key and remembered for a while.

Job: in pass-through mode a client's key is whatever it sends; it becomes the owner of what it
creates. A key the upstream has never accepted must not create state on the gateway (a file, a
container), or anyone who reaches the port could fill the disk with made-up owners. Before such a key
writes, ask the upstream once, with the cheapest call it has (``list_models``: ``GET /models``, or
the Databricks serving-endpoints list), and remember the answer: accepted keys for ``ttl_s``, refused
ones for ``refused_ttl_s`` (so a flood of made-up keys costs the upstream one call per key, not one
per request).

Must not: keep raw keys (the cache is keyed by ``keys.key_id``-style digests), or let concurrent
requests with one new key each ask the upstream (they share one call).

Answers:
- 401/403 from the upstream → ``AuthenticationFailed`` (the client's 401);
- an upstream without a listing (404/405) cannot tell: the key is accepted, and the docs say so;
- any other upstream failure (5xx, 429, time-out) is raised as it is: nothing was written, the client
  may retry, and the answer is not remembered.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from execbridge.errors import AuthenticationFailed, UpstreamError
from execbridge.upstream.base import ModelCatalog

__all__ = ["UpstreamKeyCheck"]

_NO_LISTING = frozenset({404, 405})
_REFUSED = frozenset({401, 403})


class UpstreamKeyCheck:
    def __init__(
        self,
        catalog: ModelCatalog,
        *,
        ttl_s: float = 300.0,
        refused_ttl_s: float = 30.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._catalog = catalog
        self._ttl_s = ttl_s
        self._refused_ttl_s = refused_ttl_s
        self._max_keys = max_keys
        self._clock = clock
        self._known: OrderedDict[str, tuple[bool, float]] = OrderedDict()  # digest → (accepted, until)
        self._asking: dict[str, asyncio.Future[bool]] = {}
        self.upstream_calls = 0  # how often the upstream was asked (tests and metrics)

    async def check(self, key: str) -> None:
        """Return if the upstream accepts ``key``; raise ``AuthenticationFailed`` if it refuses it."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        known = self._known.get(digest)
        if known is not None and known[1] > self._clock():
            accepted = known[0]
        else:
            accepted = await self._ask_once(digest, key)
        if not accepted:
            raise AuthenticationFailed("invalid x-api-key: the upstream does not accept this key")

    async def _ask_once(self, digest: str, key: str) -> bool:
        asking = self._asking.get(digest)
        if asking is not None:
            return await asyncio.shield(asking)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asking[digest] = future
        try:
            accepted = await self._ask(key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: only the waiters that share it need to see it
            raise
        else:
            future.set_result(accepted)
            self._remember(digest, accepted)
            return accepted
        finally:
            del self._asking[digest]

    async def _ask(self, key: str) -> bool:
        self.upstream_calls += 1
        try:
            await self._catalog.list_models(key)
        except UpstreamError as exc:
            if exc.status in _REFUSED:
                return False
            if exc.status in _NO_LISTING:
                return True
            raise
        return True

    def _remember(self, digest: str, accepted: bool) -> None:
        ttl = self._ttl_s if accepted else self._refused_ttl_s
        self._known[digest] = (accepted, self._clock() + ttl)
        self._known.move_to_end(digest)
        while len(self._known) > self._max_keys:
            self._known.popitem(last=False)
