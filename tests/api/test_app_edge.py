"""The app's edge (``api.app.RequestIdMiddleware``) at the ASGI level: early error answers read the rest
of the body first, unexpected exceptions are answered in the envelope instead of closing the connection."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from execbridge.api import app as app_module
from execbridge.api.app import RequestIdMiddleware


def scope(*headers: tuple[bytes, bytes], method: str = "POST") -> Scope:
    return {"type": "http", "method": method, "path": "/v1/messages", "headers": list(headers)}


class Client:
    """Plays uvicorn: hands out body chunks, records what the app sent and in which order."""

    def __init__(self, chunks: list[bytes], *, then_wait: bool = False) -> None:
        self.chunks = list(chunks)
        self.then_wait = then_wait
        self.log: list[str] = []
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        if not self.chunks:
            if self.then_wait:
                await asyncio.Event().wait()  # a client that stopped sending mid-body
            raise AssertionError("the body was read past its end")
        chunk = self.chunks.pop(0)
        self.log.append("received")
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks) or self.then_wait}

    async def send(self, message: Message) -> None:
        self.log.append(message["type"])
        self.sent.append(message)

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])


def answering(status: int, *, read_body: bool = False) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if read_body:
            while (await receive()).get("more_body"):
                pass
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"answer"})

    return app


async def test_an_early_error_reads_the_rest_of_the_body_then_closes() -> None:
    client = Client([b"a", b"b", b"c"])
    await RequestIdMiddleware(answering(413))(scope((b"content-length", b"3")), client.receive, client.send)
    assert client.log == ["received"] * 3 + ["http.response.start", "http.response.body"]
    assert client.headers()[b"connection"] == b"close"
    assert client.headers()[b"request-id"].startswith(b"req_")


async def test_a_chunked_body_is_read_to_its_end_too() -> None:
    client = Client([b"a", b"b"])
    await RequestIdMiddleware(answering(400))(scope((b"transfer-encoding", b"chunked")), client.receive, client.send)
    assert client.log == ["received", "received", "http.response.start", "http.response.body"]


async def test_a_client_waiting_for_100_continue_is_answered_at_once() -> None:
    client = Client([])  # reading anything would fail: this client sends nothing before an answer
    headers = ((b"content-length", b"999999999"), (b"expect", b"100-continue"))
    await RequestIdMiddleware(answering(413))(scope(*headers), client.receive, client.send)
    assert client.log == ["http.response.start", "http.response.body"]
    assert client.headers()[b"connection"] == b"close"


async def test_reading_the_rest_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "DRAIN_SECONDS", 0.01)
    client = Client([b"a"], then_wait=True)
    await RequestIdMiddleware(answering(413))(scope((b"content-length", b"100")), client.receive, client.send)
    assert client.log == ["received", "http.response.start", "http.response.body"]
    assert client.headers()[b"connection"] == b"close"


async def test_answers_after_the_whole_body_keep_the_connection() -> None:
    for status in (200, 400):
        client = Client([b"a", b"b"])
        app = answering(status, read_body=True)
        await RequestIdMiddleware(app)(scope((b"content-length", b"2")), client.receive, client.send)
        assert b"connection" not in client.headers()


async def test_a_request_without_a_body_is_not_read() -> None:
    client = Client([])
    await RequestIdMiddleware(answering(404))(scope(method="GET"), client.receive, client.send)
    assert client.log == ["http.response.start", "http.response.body"]
    assert b"connection" not in client.headers()


async def test_an_unexpected_exception_is_answered_in_the_envelope() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("/home/secret")

    client = Client([])
    await RequestIdMiddleware(broken)(scope(method="GET"), client.receive, client.send)
    assert client.sent[0]["status"] == 500
    body = orjson.loads(client.sent[1]["body"])
    assert body["error"] == {"type": "api_error", "message": "Internal server error"}
    assert body["request_id"].encode() == client.headers()[b"request-id"]


async def test_an_exception_after_the_answer_started_is_raised() -> None:
    async def breaks_midway(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    client = Client([])
    with pytest.raises(RuntimeError):
        await RequestIdMiddleware(breaks_midway)(scope(method="GET"), client.receive, client.send)
    assert [m["type"] for m in client.sent] == ["http.response.start"]
