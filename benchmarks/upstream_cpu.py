"""CPU per model turn spent in ``OpenAIChatUpstream``, against the fake upstream's instant mode.

The fake runs in its own process (``python -m execbridge.testing --instant``), so the process
CPU time measured here (user + system) is the client's alone: payload building, HTTP, parsing, events.
``--aiohttp`` adds the same turns with aiohttp as the transport (``pip install -e '.[bench]'``): the
measurement behind keeping ``_http11`` (docs/architecture.md, Upstream).

    .venv/bin/python benchmarks/upstream_cpu.py [--uvloop] [--aiohttp] [-n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from types import TracebackType
from typing import Any

from execbridge.types import FunctionDef, Message, Text
from execbridge.upstream.base import ChatTurn
from execbridge.upstream.openai_chat import OpenAIChatUpstream

BASH = FunctionDef("bash_code_execution", "Run bash", {"type": "object", "properties": {"command": {"type": "string"}}})
TURN = ChatTurn(
    model="fake-model",
    messages=(Message("user", (Text("Hello, how are you?"),)),),
    max_tokens=256,
    system="You are helpful.",
    functions=(BASH,),
)


class _AiohttpExchange:
    """One POST through an aiohttp session, shaped like the client's other transports' responses."""

    def __init__(self, session: Any, url: str, body: bytes) -> None:
        self._request = session.post(url, data=body, headers={"authorization": "Bearer key"})

    async def __aenter__(self) -> _AiohttpExchange:
        self._response = await self._request.__aenter__()
        self.status_code = self._response.status
        self.headers = self._response.headers
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self._request.__aexit__(*exc)

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    async def aread(self) -> bytes:
        return await self._response.read()


async def measure(url: str, http: str, stream: bool, n: int) -> None:
    upstream = OpenAIChatUpstream(url, "key", trust_env=False, http="httpx" if http == "aiohttp" else http)  # type: ignore[arg-type]
    session = None
    if http == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            timeout=aiohttp.ClientTimeout(sock_connect=10, sock_read=300),
            headers={"user-agent": "execbridge", "content-type": "application/json"},
            skip_auto_headers=("Accept-Encoding",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        target = url + "/chat/completions"
        # The measurement harness swaps the transport under the client: everything else is the same.
        upstream._post = lambda body, auth: _AiohttpExchange(session, target, body)  # type: ignore[method-assign]
    turn = replace(TURN, stream=stream)

    async def one() -> None:
        async for _ in upstream.stream_turn(turn):
            pass

    for _ in range(300):  # warm the pool, the caches and the branch predictors
        await one()
    latencies = []
    before = os.times()
    for _ in range(n):
        start = time.perf_counter()
        await one()
        latencies.append(time.perf_counter() - start)
    after = os.times()
    await upstream.aclose()
    if session is not None:
        await session.close()
    latencies.sort()
    user = (after.user - before.user) / n * 1e6
    system = (after.system - before.system) / n * 1e6
    print(
        f"{http:7} stream={stream!s:5}  CPU/turn {user + system:4.0f} µs (user {user:3.0f}, sys {system:3.0f})"
        f"  wall p50 {latencies[n // 2] * 1e6:4.0f} µs  p99 {latencies[int(n * 0.99)] * 1e6:4.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--aiohttp", action="store_true", help="also measure aiohttp as the transport")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    fake = subprocess.Popen(
        [sys.executable, "-m", "execbridge.testing", "--instant"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        for http in ("fast", "httpx", *(("aiohttp",) if args.aiohttp else ())):
            for stream in (False, True):
                asyncio.run(measure(url, http, stream, args.n))
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
