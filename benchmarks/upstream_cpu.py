"""CPU per model turn spent in ``OpenAIChatUpstream``, against the fake upstream's instant mode.

The fake runs in its own process (``python -m execbridge.upstream.fake --instant``), so the process
CPU time measured here (user + system) is the client's alone: payload building, HTTP, parsing, events.

    .venv/bin/python benchmarks/upstream_cpu.py [--uvloop] [-n 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import replace

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


async def measure(url: str, http: str, stream: bool, n: int) -> None:
    upstream = OpenAIChatUpstream(url, "key", trust_env=False, http=http)  # type: ignore[arg-type]
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
    latencies.sort()
    user = (after.user - before.user) / n * 1e6
    system = (after.system - before.system) / n * 1e6
    print(
        f"{http:5} stream={stream!s:5}  CPU/turn {user + system:4.0f} µs (user {user:3.0f}, sys {system:3.0f})"
        f"  wall p50 {latencies[n // 2] * 1e6:4.0f} µs  p99 {latencies[int(n * 0.99)] * 1e6:4.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    fake = subprocess.Popen(
        [sys.executable, "-m", "execbridge.upstream.fake", "--instant"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        for http in ("fast", "httpx"):
            for stream in (False, True):
                asyncio.run(measure(url, http, stream, args.n))
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
