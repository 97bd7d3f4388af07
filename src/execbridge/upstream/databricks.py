"""Databricks' unified authentication, through Databricks' own SDK, as upstream ``Credentials``.

Job: find the workspace and a credential the way every Databricks tool does (``DATABRICKS_HOST`` and
``DATABRICKS_TOKEN``; a ``~/.databrickscfg`` profile named by ``DATABRICKS_CONFIG_PROFILE``, in the
file named by ``DATABRICKS_CONFIG_FILE``; OAuth machine-to-machine with ``DATABRICKS_CLIENT_ID`` and
``DATABRICKS_CLIENT_SECRET``; whatever else the SDK's default chain knows), give the gateway the
serving base URL ``https://<host>/serving-endpoints``, and an ``Authorization`` value per request,
refreshed before the token expires.

Must not: block the event loop, or let the SDK block anything for longer than the configured bound.
The SDK is synchronous and, when the host does not answer, can spend minutes in its own retries
while resolving host metadata or fetching a token. So every SDK call runs on a daemon thread of its
own (a stuck one never delays the process's exit) and is awaited for at most ``timeout_s``; the SDK's
own HTTP budget is set to a small multiple of that bound so abandoned threads end too.

Invariants:
- the fast path of ``authorization()`` is a clock read and two comparisons: the SDK is consulted only
  when the token is due for refresh;
- a token due for refresh but still valid keeps serving while one background refresh runs; only a
  token about to expire (or none) makes requests wait, and then all of them wait for the same refresh;
- failures become ``ConfigurationError`` at start-up (naming the host) and ``UpstreamError`` /
  ``UpstreamTimeout`` on a request (502 / 504 to the client).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import configparser
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from databricks.sdk.config import Config

from execbridge.errors import ConfigurationError, UpstreamError, UpstreamTimeout

__all__ = ["DatabricksCredentials"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often credentials of unknown lifetime (not a PAT, not OAuth with an expiry) are re-read from the
# SDK, which caches them itself; the re-read runs in the background and never delays a request.
_UNKNOWN_LIFETIME_REFRESH_S = 60.0
# The SDK (blocking mode) hands out a new OAuth token only within 40 s of expiry, and Azure Databricks
# refuses tokens with 30 s or less left: refresh in the background from 39 s before expiry, and make
# requests wait for the new token from 31 s before.
_REFRESH_BEFORE_S = 39.0
_REQUIRED_BEFORE_S = 31.0
_RETRY_FAILED_REFRESH_S = 2.0


@dataclass(frozen=True, slots=True)
class _Fetched:
    value: str
    ttl_s: float | None  # seconds the value stays valid from when it was fetched; None: unknown
    static: bool  # a personal access token: never changes


class DatabricksCredentials:
    """Build with ``await DatabricksCredentials.connect(timeout_s=…)``; then one per gateway."""

    def __init__(self, config: Config, *, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        # When tokens fall due is reckoned on this clock (tests pass one they move by hand).
        self._clock = clock
        self.host: str = config.host
        self.base_url = f"{self.host.rstrip('/')}/serving-endpoints"
        self.auth_type: str = config.auth_type or "unknown"
        self._timeout_s = timeout_s
        self._value: str | None = None
        self._refresh_at = 0.0  # readings of self._clock
        self._required_at = 0.0
        self._reinit = False
        self._lock = threading.Lock()
        self._inflight: concurrent.futures.Future[_Fetched] | None = None
        self._inflight_since = 0.0

    @classmethod
    async def connect(
        cls, *, timeout_s: float, clock: Callable[[], float] = time.monotonic, **config: Any
    ) -> DatabricksCredentials:
        """Resolve the workspace and fetch a first token, each within ``timeout_s``.

        ``config`` goes to the SDK's ``Config`` (``host``, ``token``, ``profile``, ``client_id``, …);
        anything not given comes from the environment and the profile file, as the SDK decides.
        """
        budget = max(1, math.ceil(timeout_s * 2))
        options = {"http_timeout_seconds": budget, "retry_timeout_seconds": budget, **config}
        # Blocking refresh on our own thread: the SDK then never starts threads of its own.
        options.setdefault("disable_async_token_refresh", True)
        where = _describe_target(config)
        try:
            resolved = await _bounded(_spawn(lambda: Config(**options)), timeout_s)
        except TimeoutError:
            raise ConfigurationError(
                f"Databricks: {where} did not answer within {timeout_s:g} s (upstream_auth_timeout_s); "
                "check the host and the network"
            ) from None
        except ValueError as exc:  # the SDK reports every configuration problem as ValueError
            raise ConfigurationError(f"Databricks authentication is not configured for {where}: {exc}") from exc
        if not resolved.host:
            raise ConfigurationError("Databricks: no workspace host (set DATABRICKS_HOST or a profile with host)")
        credentials = cls(resolved, timeout_s=timeout_s, clock=clock)
        try:
            await credentials.authorization()
        except UpstreamError as exc:
            raise ConfigurationError(f"Databricks: {exc.message}") from exc
        return credentials

    # ------------------------------------------------------------ per request

    async def authorization(self) -> str:
        value = self._value
        now = self._clock()
        if value is not None and now < self._refresh_at:
            return value
        if value is not None and now < self._required_at:
            self._start_refresh(now)  # due soon: refresh in the background, keep serving this one
            return value
        try:
            fetched = await _bounded(self._start_refresh(now), self._timeout_s)
        except TimeoutError:
            raise UpstreamTimeout(
                f"Databricks authentication at {self.host} did not answer within {self._timeout_s:g} s",
                code="upstream_auth_timeout",
            ) from None
        except Exception as exc:  # boundary: the SDK raises many types; the message is what matters
            raise UpstreamError(
                f"Databricks authentication ({self.auth_type}) at {self.host} failed: {exc}",
                code="upstream_auth_failed",
            ) from exc
        return fetched.value

    def invalidate(self) -> None:
        with self._lock:
            self._value = None
            self._refresh_at = self._required_at = 0.0
            self._reinit = True  # the SDK would hand back the same cached token otherwise

    # ------------------------------------------------------------ refreshing

    def _start_refresh(self, now: float) -> concurrent.futures.Future[_Fetched]:
        with self._lock:
            inflight = self._inflight
            # A refresh stuck past the bound is abandoned (its thread ends by the SDK's own timeout).
            if inflight is not None and (not inflight.done() and now - self._inflight_since <= self._timeout_s):
                return inflight
            reinit, self._reinit = self._reinit, False
            future = _spawn(lambda: self._fetch(reinit), on_done=self._apply)
            self._inflight, self._inflight_since = future, now
            return future

    def _fetch(self, reinit: bool) -> _Fetched:
        """On a worker thread: ask the SDK for fresh headers and how long they last."""
        config = self.config
        if reinit:
            config.init_auth()  # type: ignore[no-untyped-call]  # the SDK leaves this one unannotated
        try:
            # OAuth: one token call gives both the header and its expiry (two calls could each refresh).
            token = config.oauth_token()
        except ValueError:  # not an OAuth credential: the SDK's header factory, lifetime unknown
            token = None
        if token is not None:
            value = f"{token.token_type or 'Bearer'} {token.access_token}"
            expiry = token.expiry
            ttl = (expiry - datetime.now(tz=expiry.tzinfo)).total_seconds() if isinstance(expiry, datetime) else None
            return _Fetched(value, ttl, static=False)
        headers = config.authenticate()
        header = headers.get("Authorization") or headers.get("authorization")
        if not header:
            raise ValueError(f"the {self.auth_type} credentials gave no Authorization header")
        return _Fetched(header, None, static=self.auth_type == "pat")

    def _apply(self, future: concurrent.futures.Future[_Fetched]) -> None:
        """Done callback (on the worker thread): install the new value and when to refresh it."""
        now = self._clock()
        with self._lock:
            if self._inflight is future:
                self._inflight = None
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                log.warning("Databricks token refresh failed: %s", error)
                # Keep serving the current token while it lasts; try again shortly.
                self._refresh_at = now + _RETRY_FAILED_REFRESH_S
                return
            fetched = future.result()
            same = fetched.value == self._value
            self._value = fetched.value
            if fetched.static:
                self._refresh_at = self._required_at = math.inf
            elif fetched.ttl_s is None:
                self._refresh_at = now + _UNKNOWN_LIFETIME_REFRESH_S
                self._required_at = math.inf
            else:
                ttl = max(fetched.ttl_s, 0.0)
                self._refresh_at = now + ttl - min(_REFRESH_BEFORE_S, ttl / 2)
                self._required_at = now + ttl - min(_REQUIRED_BEFORE_S, ttl / 4)
                if same:  # the SDK did not think it due yet: ask again a little later, not at once
                    self._refresh_at = max(self._refresh_at, min(now + 1.0, self._required_at))


def _spawn(
    fn: Callable[[], T], on_done: Callable[[concurrent.futures.Future[T]], None] | None = None
) -> concurrent.futures.Future[T]:
    """Run ``fn`` on a new daemon thread: a call stuck in the SDK never holds up the process's exit.

    ``on_done`` is attached before the thread starts, so it always runs on that thread.
    """
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    if on_done is not None:
        future.add_done_callback(on_done)

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:  # boundary: handed to whoever awaits the future
            future.set_exception(exc)

    threading.Thread(target=run, name="execbridge-databricks-auth", daemon=True).start()
    return future


async def _bounded(future: concurrent.futures.Future[T], timeout_s: float) -> T:
    # shield: one waiter timing out must not cancel a refresh other requests are waiting for.
    return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout_s)


def _describe_target(config: dict[str, Any]) -> str:
    """The host the SDK is about to use, for error messages, found the way the SDK finds it."""
    host = config.get("host") or os.environ.get("DATABRICKS_HOST")
    if host:
        return f"host {host}"
    profile = config.get("profile") or os.environ.get("DATABRICKS_CONFIG_PROFILE") or "DEFAULT"
    path = Path(config.get("config_file") or os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg")
    parser = configparser.ConfigParser()
    try:
        parser.read(path.expanduser())
        host = parser.get(profile, "host", fallback=None) if parser.has_section(profile) else None
        host = host or parser.defaults().get("host")
    except configparser.Error:
        host = None
    return f"host {host} (profile {profile} in {path})" if host else f"profile {profile} in {path}"
