"""Library mode: the whole gateway inside this process, for a program, a notebook or a test suite.

``execbridge.open(upstream=..., data_dir=...)`` opens the same services ``execbridge serve`` runs on
(engine, store, sandbox, Files API) and hands out ``httpx2`` clients whose transport gives each request
to the gateway's ASGI app directly (``library/transport.py``): the official SDKs work unchanged, with
no server and no port::

    with execbridge.open(upstream="http://127.0.0.1:8000/v1", data_dir="./eb") as gateway:
        client = anthropic.Anthropic(api_key=key, base_url=gateway.base_url, http_client=gateway.http_client())

``with`` runs the gateway on an event loop of its own in a background thread, so sync clients (and async
clients on any other loop, a notebook's included) can use it; ``async with`` runs it on the caller's loop.

Containers run in this process when it is root (as ``serve --no-privilege-split`` does); otherwise in a
running ``execbridge sandbox-host`` when one answers on this data directory's socket; otherwise the
sandbox cannot start and the error says which protections are missing (as ``execbridge doctor`` does).

Must not: behave differently from ``serve`` once a request is inside the app.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx2

from execbridge.api.app import create_app
from execbridge.config import Settings, load_settings
from execbridge.errors import SandboxUnavailable
from execbridge.library.transport import ASGIStreamTransport, CrossLoopTransport, SyncTransport, run_on
from execbridge.sandbox.host_client import host_answers
from execbridge.telemetry import Sink
from execbridge.wiring import Services, open_services

BASE_URL: Final = "http://execbridge.local"
"""What the clients address; no name is looked up and nothing listens there."""


def open(
    upstream: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
    sinks: Sequence[Sink] = (),
    **overrides: Any,
) -> LocalGateway:
    """A gateway in this process, to use as ``with`` (sync or async clients) or ``async with``.

    ``upstream`` is the model server's base URL (``--upstream``), ``data_dir`` where the store, files and
    container workspaces live; any other setting (``config.Settings``) may be passed by name, or a whole
    ``settings`` object instead of all of these. ``sinks`` receive telemetry besides those the settings ask
    for (``telemetry.Sink``: an OpenTelemetry sink on a provider of the program's own, say).
    """
    if settings is None:
        path = Path(data_dir) if data_dir is not None else None
        settings = load_settings(upstream_url=upstream, data_dir=path, **overrides)
    elif upstream is not None or data_dir is not None or overrides:
        raise TypeError("pass either settings or upstream/data_dir/overrides, not both")
    return LocalGateway(settings, sinks)


class LocalGateway:
    """The gateway's services and app, open in this process, and clients that reach it."""

    base_url: Final = BASE_URL

    def __init__(self, settings: Settings, sinks: Sequence[Sink] = ()) -> None:
        self.settings = settings
        self._sinks = tuple(sinks)
        self._services: Services | None = None
        self._transport: ASGIStreamTransport | None = None
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where the app runs
        self._thread: threading.Thread | None = None  # the loop's, when ``with`` made one
        self._clients: list[httpx2.Client | httpx2.AsyncClient] = []

    @property
    def services(self) -> Services:
        """The open services (the engine, the containers, the files): for what no HTTP route offers."""
        if self._services is None:
            raise RuntimeError("the gateway is not open: use it as `with execbridge.open(...)`")
        return self._services

    # ------------------------------------------------------------------ clients

    def http_client(self, **kwargs: Any) -> httpx2.Client:
        """A sync client for ``anthropic.Anthropic(http_client=...)`` / ``openai.OpenAI(...)``; closed
        with the gateway. ``kwargs`` go to ``httpx2.Client`` (not ``transport``)."""
        transport, loop = self._open_parts()
        client = httpx2.Client(transport=SyncTransport(transport, loop), base_url=BASE_URL, **kwargs)
        self._clients.append(client)
        return client

    def async_http_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        """An async client for ``anthropic.AsyncAnthropic(http_client=...)``, on the loop it is first used
        on; closed with the gateway (when that is ``async with``, or the client's loop is still open)."""
        transport, loop = self._open_parts()
        async_transport: httpx2.AsyncBaseTransport = transport
        if self._thread is not None:  # the app has a loop of its own: the client's is another one
            async_transport = CrossLoopTransport(transport, loop)
        client = httpx2.AsyncClient(transport=async_transport, base_url=BASE_URL, **kwargs)
        self._clients.append(client)
        return client

    def _open_parts(self) -> tuple[ASGIStreamTransport, asyncio.AbstractEventLoop]:
        if self._transport is None or self._loop is None:
            raise RuntimeError("the gateway is not open: use it as `with execbridge.open(...)`")
        return self._transport, self._loop

    # ------------------------------------------------------------------ lifetime

    async def _aopen(self) -> None:
        stack = AsyncExitStack()
        try:
            settings = await _with_sandbox(self.settings)
            services = await stack.enter_async_context(_opened(settings, self._sinks))
        except BaseException:
            await stack.aclose()
            raise
        app = create_app(_no_lifespan)
        # A transport runs no ASGI lifespan: the services were opened here, for as long as the gateway is.
        app.state.services = services
        self.settings, self._services, self._stack = settings, services, stack
        self._transport = ASGIStreamTransport(app)
        self._loop = asyncio.get_running_loop()

    async def _aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            if isinstance(client, httpx2.Client):
                client.close()  # its transport holds no socket; only the streams it left open
        stack, self._stack = self._stack, None
        self._services = self._transport = None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Self:
        await self._aopen()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        for client in self._clients:
            if isinstance(client, httpx2.AsyncClient):
                await client.aclose()
        await self._aclose()
        self._loop = None

    def __enter__(self) -> Self:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="execbridge-library", daemon=True)
        thread.start()
        self._thread = thread
        try:
            run_on(loop, self._aopen())
        except BaseException:
            self._stop_loop(loop)
            raise
        return self

    def start(self) -> Self:
        """``with`` without the block, for a notebook whose cells come one at a time; ``close()`` ends it."""
        return self.__enter__()

    def close(self) -> None:
        self.__exit__(None, None, None)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        loop = self._loop
        assert loop is not None
        try:
            run_on(loop, self._aclose())
        finally:
            self._stop_loop(loop)

    def _stop_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        run_on(loop, _cancel_the_rest())
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
        loop.close()
        self._loop = self._thread = None


async def _cancel_the_rest() -> None:
    """Requests a client left unfinished (a stream never closed) end with the gateway."""
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


def _no_lifespan() -> Any:
    raise AssertionError("library mode opens the services itself")


async def _with_sandbox(settings: Settings) -> Settings:
    """Where this process's containers run: in-process as root, else a sandbox host answering on this
    data directory's socket; otherwise in-process, which fails with what is missing."""
    if settings.sandbox_host is not None or os.geteuid() == 0:
        return settings
    socket_path = settings.sandbox_socket_path
    if await host_answers(socket_path):
        return settings.model_copy(update={"sandbox_host": f"unix:{socket_path}"})
    return settings


class _opened:
    """``open_services``, with the way out named when the sandbox cannot start in this process."""

    def __init__(self, settings: Settings, sinks: Sequence[Sink]) -> None:
        self._inner = open_services(settings, sinks=sinks)
        self._settings = settings

    async def __aenter__(self) -> Services:
        try:
            return await self._inner.__aenter__()
        except SandboxUnavailable as error:
            if self._settings.sandbox_host is not None:
                raise
            raise SandboxUnavailable(
                f"{error.message}. Library mode runs containers in this process only as root; otherwise it uses "
                f"a sandbox host listening at {self._settings.sandbox_socket_path}: start one as root on the same "
                "data directory (`execbridge sandbox-host --group GROUP`, GROUP being one of yours) and open "
                "again. `execbridge doctor` shows every check"
            ) from error

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self._inner.__aexit__(*exc)
