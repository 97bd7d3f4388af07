"""The in-process transports on their own, with small ASGI apps: chunks arrive as the app sends them,
a response closed early tells the app the client left and ends it, the app's failures reach the client,
and the same holds across event loops and for sync clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx2
import pytest
from starlette.types import Message, Receive, Scope, Send

from execbridge.library.transport import ASGIStreamTransport, CrossLoopTransport, SyncTransport, run_on


class Gated:
    """Sends ``first``, waits until the test opens the gate, sends ``second``; records what it saw."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.seen: list[str] = []
        self.cancelled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive()
        self.seen.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()} {request['body']!r}")
        await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"gated")]})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        await send({"type": "http.response.body", "body": b"second", "more_body": False})


async def test_the_body_streams_as_the_app_sends_it() -> None:
    app = Gated()
    transport = ASGIStreamTransport(app)
    async with (
        httpx2.AsyncClient(transport=transport, base_url="http://x") as client,
        client.stream("POST", "/echo?a=1", content=b"payload") as response,
    ):
        assert (response.status_code, response.headers["x-app"]) == (201, "gated")
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"first"  # while the app still waits: nothing was held back
        app.gate.set()
        assert [c async for c in chunks] == [b"second"]
    assert app.seen == ["POST /echo?a=1 b'payload'"]


async def test_closing_a_response_early_ends_the_app() -> None:
    app = Gated()
    disconnected: list[Message] = []

    async def watching(scope: Scope, receive: Receive, send: Send) -> None:
        async def later() -> None:
            await receive()  # the body
            disconnected.append(await receive())

        watcher = asyncio.create_task(later())
        try:
            await app(scope, receive, send)
        finally:
            await watcher

    transport = ASGIStreamTransport(watching)
    async with (
        httpx2.AsyncClient(transport=transport, base_url="http://x") as client,
        client.stream("GET", "/") as response,
    ):
        assert await anext(response.aiter_bytes()) == b"first"
    assert app.cancelled  # ended when the response closed, not left waiting
    assert disconnected == [{"type": "http.disconnect"}]


async def test_an_app_that_fails_raises_in_the_client() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("the app broke")

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async with httpx2.AsyncClient(transport=ASGIStreamTransport(broken), base_url="http://x") as client:
        with pytest.raises(RuntimeError, match="the app broke"):
            await client.get("/")
    async with httpx2.AsyncClient(transport=ASGIStreamTransport(silent), base_url="http://x") as client:
        with pytest.raises(httpx2.RemoteProtocolError, match="without starting a response"):
            await client.get("/")


@pytest.fixture
def app_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def _gated_on(loop: asyncio.AbstractEventLoop) -> Gated:
    async def make() -> Gated:
        return Gated()  # its Event belongs to the app's loop

    return run_on(loop, make())


def test_a_sync_client_streams_and_closes_early(app_loop: asyncio.AbstractEventLoop) -> None:
    app, left = _gated_on(app_loop), _gated_on(app_loop)
    transport = SyncTransport(ASGIStreamTransport(app), app_loop)
    with httpx2.Client(transport=transport, base_url="http://x") as client, client.stream("GET", "/") as response:
        chunks = response.iter_bytes()
        assert next(chunks) == b"first"
        app_loop.call_soon_threadsafe(app.gate.set)
        assert list(chunks) == [b"second"]
    with httpx2.Client(transport=SyncTransport(ASGIStreamTransport(left), app_loop), base_url="http://x") as client:
        with client.stream("GET", "/") as response:
            assert next(response.iter_bytes()) == b"first"
        assert left.cancelled  # the response closed before the app finished: the app was ended
    assert not app.cancelled


async def test_an_async_client_on_another_loop(app_loop: asyncio.AbstractEventLoop) -> None:
    app = _gated_on(app_loop)
    transport = CrossLoopTransport(ASGIStreamTransport(app), app_loop)
    async with httpx2.AsyncClient(transport=transport, base_url="http://x") as client:
        async with client.stream("PUT", "/there", content=b"x") as response:
            chunks = response.aiter_bytes()
            assert await anext(chunks) == b"first"
        # Left early: the app, on its own loop, was cancelled before the response finished closing.
        assert app.cancelled

        app.cancelled = False
        app_loop.call_soon_threadsafe(app.gate.set)
        answer = await client.get("/")
    assert (answer.status_code, answer.content) == (201, b"firstsecond")
    assert app.seen == ["PUT /there? b'x'", "GET /? b''"]


async def test_a_sync_client_on_the_apps_own_loop_is_refused() -> None:
    loop = asyncio.get_running_loop()
    transport = SyncTransport(ASGIStreamTransport(Gated()), loop)
    with httpx2.Client(transport=transport, base_url="http://x") as client, pytest.raises(RuntimeError, match="async"):
        client.get("/")
