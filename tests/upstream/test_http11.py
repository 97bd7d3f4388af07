"""The fast HTTP/1.1 path, against hand-written servers that misbehave in the ways real ones do."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from execbridge.upstream._http11 import Http11Endpoint

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw TCP server on 127.0.0.1; yields its URL and a list that counts connections."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1/chat/completions", connections
    finally:
        srv.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


def response(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


def endpoint(url: str, read_timeout_s: float = 2.0) -> Http11Endpoint:
    return Http11Endpoint(url, connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


async def post(ep: Http11Endpoint, body: bytes = b"{}") -> tuple[int, dict[str, str], bytes]:
    async with ep.post(body, b"authorization: Bearer k\r\n") as r:
        return r.status_code, r.headers, await r.aread()


async def test_keep_alive_reuses_one_connection():
    seen: list[bytes] = []

    async def handler(reader, writer):
        while True:
            seen.append(await read_request(reader))
            writer.write(response(b"ok"))

    async with server(handler) as (url, connections):
        ep = endpoint(url)
        for _ in range(3):
            assert await post(ep, b'{"a":1}') == (200, {"content-length": "2"}, b"ok")
        await ep.aclose()
    assert len(connections) == 1
    assert seen[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"authorization: Bearer k\r\n" in seen[0] and seen[0].endswith(b'\r\n\r\n{"a":1}')


async def test_silently_closed_pooled_connection_is_retried_on_a_fresh_one():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(response(b"ok"))
        await writer.drain()
        # closes without "connection: close", as servers do when their keep-alive timer fires

    async with server(handler) as (url, connections):
        ep = endpoint(url)
        assert (await post(ep))[2] == b"ok"
        await asyncio.sleep(0.05)
        assert (await post(ep))[2] == b"ok"
        await ep.aclose()
    assert len(connections) == 2


async def test_connection_close_and_eof_delimited_body():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async with server(handler) as (url, connections):
        ep = endpoint(url)
        assert (await post(ep))[2] == b"until the end"
        assert (await post(ep))[2] == b"until the end"
        await ep.aclose()
    assert len(connections) == 2


async def test_chunked_gzip_body_is_decoded():
    packed = gzip.compress(b'{"hello": "world"}' * 100)

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n")
        for i in range(0, len(packed), 10):
            piece = packed[i : i + 10]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        writer.write(b"0\r\n\r\n")
        await asyncio.sleep(1)

    async with server(handler) as (url, _):
        ep = endpoint(url)
        assert (await post(ep))[2] == b'{"hello": "world"}' * 100
        await ep.aclose()


async def test_large_body_with_back_pressure():
    big = b"x" * (3 << 20)

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(response(big))
        await writer.drain()
        await asyncio.sleep(1)

    async with server(handler) as (url, _):
        ep = endpoint(url)
        async with ep.post(b"{}") as r:
            total = 0
            async for chunk in r.aiter_bytes():
                total += len(chunk)
                await asyncio.sleep(0)  # a slow consumer
        assert total == len(big)
        await ep.aclose()


async def test_abandoned_response_closes_the_connection():
    closed = asyncio.Event()

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # returns at EOF: the client went away
        closed.set()

    async with server(handler) as (url, connections):
        ep = endpoint(url)
        async with ep.post(b"{}") as r:
            async for _ in r.aiter_bytes():
                break
        await asyncio.wait_for(closed.wait(), 30)  # a bound for a hang, not a speed check
        await ep.aclose()
    assert len(connections) == 1


async def test_read_timeout():
    async def handler(reader, writer):
        await read_request(reader)
        await asyncio.sleep(2)

    async with server(handler) as (url, _):
        ep = endpoint(url, read_timeout_s=0.1)
        with pytest.raises(httpx.ReadTimeout):
            await post(ep)
        await ep.aclose()


async def test_malformed_response():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async with server(handler) as (url, _):
        ep = endpoint(url)
        with pytest.raises(httpx.RemoteProtocolError):
            await post(ep)
        await ep.aclose()


async def test_disconnect_mid_body():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a little")
        await writer.drain()

    async with server(handler) as (url, _):
        ep = endpoint(url)
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            await post(ep)
        await ep.aclose()


async def test_connection_refused():
    async with server(lambda r, w: asyncio.sleep(0)) as (url, _):
        pass  # closed again: nothing listens on that port now
    ep = endpoint(url)
    with pytest.raises(httpx.ConnectError):
        await post(ep)
    await ep.aclose()


def test_rejects_other_schemes():
    with pytest.raises(ValueError, match="unsupported"):
        Http11Endpoint("ftp://example.com/x", connect_timeout_s=1, read_timeout_s=1)


async def test_reused_connection_dropped_before_answering_is_retried_once():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(response(b"ok"))
        await read_request(reader)  # the second request on this connection gets no answer

    async with server(handler) as (url, connections):
        ep = endpoint(url)
        assert (await post(ep))[2] == b"ok"
        assert (await post(ep))[2] == b"ok"
        await ep.aclose()
    assert len(connections) == 2


async def test_fresh_connection_dropped_before_answering_is_an_error():
    async def handler(reader, writer):
        await read_request(reader)

    async with server(handler) as (url, _):
        ep = endpoint(url)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await post(ep)
        await ep.aclose()
