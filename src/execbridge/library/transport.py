"""httpx2 transports that hand a client's requests to the gateway's ASGI app in the same process.

The official SDKs (``anthropic``, ``openai``) send through ``httpx2``; given one of these transports in
their ``http_client`` they talk to execbridge with no socket and no server.

Why not the ready-made ones: ``httpx2.ASGITransport`` collects the whole response before returning
it, so a streamed message would arrive in one piece at its end, and an SDK that stops reading early
could not stop the tool loop; ``a2wsgi`` (ASGI behind ``httpx2.WSGITransport``, for sync clients)
streams, but leaves the app's task waiting forever when the client closes a stream early. Here the
app runs as a task owned by the response: its body streams chunk by chunk as the app sends it, and
closing the response early tells the app the client went away (``http.disconnect``) and cancels it —
the same thing a closed socket does to ``execbridge serve``.

- ``ASGIStreamTransport``: async clients on the app's own event loop.
- ``CrossLoopTransport``: async clients on another event loop (a notebook's) than the app's.
- ``SyncTransport``: sync clients; the app runs on an event loop in another thread.

Must not: interpret requests or responses; every byte goes through the app as over HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Coroutine, Iterator, MutableMapping
from contextlib import suppress
from typing import Any, Final, TypeVar

import httpx2
from starlette.types import ASGIApp, Message

_T = TypeVar("_T")

_QUEUED_MESSAGES: Final = 64
"""Response messages the app may send ahead of the client's reading (a socket buffer's part)."""

_CLIENT: Final = ("127.0.0.1", 0)


class _AppFailed:
    """Put on a response's queue when the app raised instead of answering."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE: Final = object()  # the app returned

_Queue = asyncio.Queue[Message | _AppFailed | object]


class ASGIStreamTransport(httpx2.AsyncBaseTransport):
    """Serves each request by running ``app`` as a task; the response streams as the app sends it."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": _CLIENT,
            "root_path": "",
        }
        queue: _Queue = asyncio.Queue(_QUEUED_MESSAGES)
        gone = asyncio.Event()
        body_given = False

        async def receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            await queue.put(dict(message))

        async def run() -> None:
            try:
                await self._app(scope, receive, send)
            except Exception as error:  # handed to the client, which raises it
                await queue.put(_AppFailed(error))
            else:
                await queue.put(_DONE)

        task = asyncio.create_task(run(), name=f"execbridge {request.method} {request.url.path}")
        stream = _ResponseStream(queue, task, gone)
        try:
            start = await stream.next_message()
        except BaseException:
            await stream.aclose()
            raise
        if start is None or start["type"] != "http.response.start":
            await stream.aclose()
            raise httpx2.RemoteProtocolError("the app ended without starting a response")
        return httpx2.Response(start["status"], headers=start.get("headers", []), stream=stream)


class _ResponseStream(httpx2.AsyncByteStream):
    """A response's body as the app sends it; closing it ends the app's task (the task's owner)."""

    def __init__(
        self, queue: asyncio.Queue[Message | _AppFailed | object], task: asyncio.Task[None], gone: asyncio.Event
    ) -> None:
        self._queue = queue
        self._task = task
        self._gone = gone
        self._ended = False

    async def next_message(self) -> Message | None:
        """The app's next message; ``None`` once it has returned."""
        if self._ended:
            return None
        item = await self._queue.get()
        if isinstance(item, _AppFailed):
            self._ended = True
            raise item.error
        if item is _DONE:
            self._ended = True
            return None
        assert isinstance(item, dict)
        return item

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (message := await self.next_message()) is not None:
            if message["type"] != "http.response.body":
                continue
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def aclose(self) -> None:
        self._gone.set()  # a streaming response notices the client is gone, as after a closed socket
        if not self._task.done():
            # Unblock a ``send`` waiting on the full queue, then end the app's work at once.
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on ``loop`` (another thread's) and wait for it here; an interrupt (Ctrl+C in a
    notebook) cancels it there too."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        with suppress(concurrent.futures.CancelledError, concurrent.futures.TimeoutError, Exception):
            future.result(timeout=5)
        raise


def _copy(request: httpx2.Request, content: bytes) -> httpx2.Request:
    return httpx2.Request(request.method, request.url, headers=request.headers, content=content)


class CrossLoopTransport(httpx2.AsyncBaseTransport):
    """An async client on one event loop, the app on another (in another thread)."""

    def __init__(self, inner: ASGIStreamTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    async def _there(self, coro: Coroutine[Any, Any, _T]) -> _T:
        # Cancelling the wrapped future here cancels the task on the app's loop.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        content = await request.aread()
        response = await self._there(self._inner.handle_async_request(_copy(request, content)))
        stream = response.stream
        assert isinstance(stream, _ResponseStream)
        return httpx2.Response(response.status_code, headers=response.headers, stream=_CrossLoopStream(stream, self))


class _CrossLoopStream(httpx2.AsyncByteStream):
    def __init__(self, stream: _ResponseStream, transport: CrossLoopTransport) -> None:
        self._stream = stream
        self._transport = transport

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self._stream)
        while True:
            try:
                chunk = await self._transport._there(_next(chunks))
            except StopAsyncIteration:
                return
            yield chunk

    async def aclose(self) -> None:
        await self._transport._there(self._stream.aclose())


class SyncTransport(httpx2.BaseTransport):
    """A sync client in any thread but the app loop's; each step runs on the app's loop."""

    def __init__(self, inner: ASGIStreamTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if _running_loop() is self._loop:
            raise RuntimeError(
                "a sync client cannot wait for the event loop it runs on: use async_http_client() inside "
                "`async with execbridge.open(...)`, or open it with a plain `with`"
            )
        response = run_on(self._loop, self._inner.handle_async_request(_copy(request, request.read())))
        stream = response.stream
        assert isinstance(stream, _ResponseStream)
        return httpx2.Response(response.status_code, headers=response.headers, stream=_SyncStream(stream, self._loop))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _SyncStream(httpx2.SyncByteStream):
    def __init__(self, stream: _ResponseStream, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop

    def __iter__(self) -> Iterator[bytes]:
        chunks = aiter(self._stream)
        while True:
            try:
                chunk = run_on(self._loop, _next(chunks))
            except StopAsyncIteration:
                return
            yield chunk

    def close(self) -> None:
        run_on(self._loop, self._stream.aclose())


async def _next(chunks: AsyncIterator[bytes]) -> bytes:
    return await anext(chunks)
