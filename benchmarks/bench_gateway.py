"""Gateway overhead and plain-request throughput, side by side with calling the upstream directly.

Starts the fake upstream in instant mode (its own process) and ``execbridge serve`` (its own process),
then, in one run:
- latency of a plain request sent straight to the fake (Chat Completions) vs through the gateway
  (Anthropic Messages), non-streaming and streaming; the difference is the gateway's added latency
  per model round trip (target ≤ 1 ms p50; streaming adds ≤ 1 ms to the first byte);
- CPU the gateway process spends per request under concurrent load, read from /proc (user + system),
  which does not depend on how busy the shared machine is (target ≤ 1 ms plain, ≤ 2 ms streamed;
  LiteLLM 1.106 spends 6.5 ms and 13 ms);
- both for a Chat Completions upstream and for an Anthropic-native one (``--upstream-format anthropic``:
  the fake answers ``/v1/messages`` too), each in its own gateway process, and the two side by side
  (target: the native path within the Chat Completions path's figures);
- OpenAI's Responses API (``POST /v1/responses``, stored as by default) on the Chat Completions path,
  next to ``/v1/messages`` (target: within the ``/v1/messages`` figures).
- the gateway's CPU per request with telemetry off (no metrics, usage or tracing), with the defaults
  (Prometheus metrics and usage per key), and with OpenTelemetry spans exported over OTLP/HTTP too (to a
  collector stand-in in this process), each in its own gateway, rounds interleaved; and what the hooks
  cost in-process when off (target: metrics and tracing cost < 0.1 ms CPU per request when off).

    .venv/bin/python benchmarks/bench_gateway.py [-n 2000] [--concurrency 8] [--only chat|anthropic|telemetry]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")
KEY = "bench-key"
MESSAGES_BODY = {"model": "fake-model", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]}
RESPONSES_BODY = {"model": "fake-model", "max_output_tokens": 64, "input": "Hello!"}
CHAT_BODY = {"model": "fake-model", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]}
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
# Started as root, serve would run the HTTP gateway in a child process (the privilege split), whose CPU
# the supervisor's /proc entry does not show; plain requests never reach the sandbox host anyway.
ONE_PROCESS = ["--no-privilege-split"] if os.geteuid() == 0 else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latencies(client: httpx.AsyncClient, url: str, body: dict, stream: bool, n: int) -> list[float]:
    """Sequential requests; for streams, the time to the first body byte."""
    body = {**body, "stream": stream} if stream else body
    samples: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        if stream:
            async with client.stream("POST", url, json=body, headers=HEADERS) as response:
                first = True
                async for _chunk in response.aiter_raw():
                    if first:
                        samples.append(time.perf_counter() - start)
                        first = False
        else:
            response = await client.post(url, json=body, headers=HEADERS)
            response.raise_for_status()
            samples.append(time.perf_counter() - start)
    return samples


async def load(client: httpx.AsyncClient, url: str, body: dict, n: int, concurrency: int) -> float:
    """``n`` requests over ``concurrency`` workers; returns wall seconds."""
    remaining = iter(range(n))

    async def worker() -> None:
        for _ in remaining:
            response = await client.post(url, json=body, headers=HEADERS)
            response.raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


@dataclass(frozen=True)
class UpstreamPath:
    """One way through the gateway: the upstream's own endpoint and body, and the gateway serving it."""

    name: str
    direct_url: str
    direct_body: dict[str, Any]
    gateway_url: str
    gateway_pid: int


async def measure(
    client: httpx.AsyncClient,
    path: UpstreamPath,
    n: int,
    concurrency: int,
    route: str = "/v1/messages",
    request_body: dict[str, Any] = MESSAGES_BODY,
) -> dict[str, float]:
    """The figures of one gateway route (``/v1/messages`` or ``/v1/responses``) against the upstream."""
    direct_url, direct_body = path.direct_url, path.direct_body
    messages_url = f"{path.gateway_url}{route}"
    MESSAGES_BODY = request_body  # the route's body, under the name the code below reads
    for url, body in ((direct_url, direct_body), (messages_url, MESSAGES_BODY)):  # warm up both paths
        await latencies(client, url, body, False, 50)
    print(f"\n== {path.name} upstream, {route} ==")
    print(f"latency, sequential, n={n // 4} each (ms)")
    print(f"{'':28}{'p50':>8}{'p99':>8}")
    rows = {}
    for label, url, body, stream in (
        ("upstream direct", direct_url, direct_body, False),
        ("through gateway", messages_url, MESSAGES_BODY, False),
        ("upstream direct, 1st byte", direct_url, direct_body, True),
        ("through gateway, 1st byte", messages_url, MESSAGES_BODY, True),
    ):
        samples = await latencies(client, url, body, stream, n // 4)
        rows[label] = (pct(samples, 0.5) * 1e3, pct(samples, 0.99) * 1e3)
        print(f"{label:28}{rows[label][0]:8.2f}{rows[label][1]:8.2f}")
    figures = {
        "added": rows["through gateway"][0] - rows["upstream direct"][0],
        "added_stream": rows["through gateway, 1st byte"][0] - rows["upstream direct, 1st byte"][0],
    }
    print(f"gateway added latency p50: {figures['added']:.2f} ms (target ≤ 1 ms)")
    print(f"gateway added time to first byte p50 (streaming): {figures['added_stream']:.2f} ms (target ≤ 1 ms)")

    print(f"throughput and gateway CPU, n={n}, concurrency={concurrency}")
    for label, body in (("plain", MESSAGES_BODY), ("streamed", {**MESSAGES_BODY, "stream": True})):
        before = cpu_seconds(path.gateway_pid)
        wall = await load(client, messages_url, body, n, concurrency)
        cpu_ms = figures[f"cpu_{label}"] = (cpu_seconds(path.gateway_pid) - before) / n * 1e3
        direct_wall = await load(
            client, direct_url, {**direct_body, "stream": body.get("stream", False)}, n, concurrency
        )
        target = 1.0 if label == "plain" else 2.0
        litellm_ms = 6.5 if label == "plain" else 13.0
        print(
            f"{label:9} gateway {n / wall:7.0f} req/s, upstream direct {n / direct_wall:7.0f} req/s; "
            f"gateway CPU {cpu_ms:.3f} ms/request (target ≤ {target} ms; LiteLLM {litellm_ms} ms, "
            f"ratio {litellm_ms / cpu_ms:.1f}x less CPU)"
        )
    return figures


async def run(n: int, concurrency: int, paths: list[UpstreamPath]) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
        results = {path.name: await measure(client, path, n, concurrency) for path in paths}
        chat_path = next((p for p in paths if p.name == "Chat Completions"), None)
        if chat_path is not None:
            stored = await measure(client, chat_path, n, concurrency, "/v1/responses", RESPONSES_BODY)
            unstored = {**RESPONSES_BODY, "store": False}
            not_stored = await measure(client, chat_path, n, concurrency, "/v1/responses", unstored)
            messages = results["Chat Completions"]
            print("\n/v1/responses next to /v1/messages, Chat Completions upstream (target: within /v1/messages)")
            print(f"{'':40}{'messages':>10}{'responses':>10}{'store off':>10}")
            for key, label in (
                ("added", "added latency p50 (ms)"),
                ("added_stream", "added time to first byte p50 (ms)"),
                ("cpu_plain", "gateway CPU per plain request (ms)"),
                ("cpu_streamed", "gateway CPU per streamed request (ms)"),
            ):
                print(f"{label:40}{messages[key]:10.3f}{stored[key]:10.3f}{not_stored[key]:10.3f}")
    if len(results) == 2:
        chat, native = results["Chat Completions"], results["Anthropic-native"]
        print("\nAnthropic-native next to Chat Completions (target: within the Chat Completions figures)")
        for key, label in (
            ("added", "added latency p50 (ms)"),
            ("added_stream", "added time to first byte p50 (ms)"),
            ("cpu_plain", "gateway CPU per plain request (ms)"),
            ("cpu_streamed", "gateway CPU per streamed request (ms)"),
        ):
            print(f"{label:40}{chat[key]:8.3f}{native[key]:8.3f}")


# Each configuration's environment on top of the gateway's own: telemetry off, the defaults, and tracing too.
TELEMETRY_CONFIGS: dict[str, dict[str, str]] = {
    "off": {"EXECBRIDGE_METRICS": "false", "EXECBRIDGE_USAGE": "false", "EXECBRIDGE_TRACING": "off"},
    "metrics + usage (default)": {"EXECBRIDGE_TRACING": "off"},
    "metrics + usage + OTLP spans": {"EXECBRIDGE_TRACING": "otlp"},
}


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector stand-in: takes each export and answers 200 (an empty ExportTraceServiceResponse)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def hooks_off_us(n: int = 200_000) -> float:
    """Microseconds of CPU the telemetry hooks take per request when off: the edge's lookup and checks,
    and the engine's wrappers for one model turn and one tool execution (they return what they are given)."""
    from execbridge.api.app import _telemetry_of
    from execbridge.engine.observed import observed_tool, observed_turn
    from execbridge.telemetry import OFF

    class _App:
        class state:  # stands for Starlette's app.state
            services = None

    scope = {"app": _App}
    stream = object()
    coroutine = object()
    start = time.process_time()
    for _ in range(n):
        telemetry = _telemetry_of(scope)
        if telemetry.enabled:
            raise AssertionError
        observed_turn(OFF, stream, "m", "owner")  # type: ignore[arg-type]
        observed_tool(OFF, coroutine, "bash_code_execution", "id", "container", "owner")  # type: ignore[arg-type]
        if telemetry.enabled:
            raise AssertionError
    return (time.process_time() - start) / n * 1e6


async def measure_telemetry(fake_url: str, gateways: dict[str, tuple[str, int]], n: int, concurrency: int) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    rounds = 3
    cpu: dict[tuple[str, str], list[float]] = {}
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
        for url, _pid in gateways.values():
            await latencies(client, f"{url}/v1/messages", MESSAGES_BODY, False, 50)
        for _ in range(rounds):  # interleaved, so a busier moment of the shared machine hits every config
            for name, (url, pid) in gateways.items():
                for label, body in (("plain", MESSAGES_BODY), ("streamed", {**MESSAGES_BODY, "stream": True})):
                    before = cpu_seconds(pid)
                    await load(client, f"{url}/v1/messages", body, n // rounds, concurrency)
                    cpu.setdefault((name, label), []).append((cpu_seconds(pid) - before) / (n // rounds) * 1e3)
    print(f"\n== telemetry: gateway CPU per request (ms), median of {rounds} interleaved rounds of {n // rounds} ==")
    print(f"{'':34}{'plain':>10}{'streamed':>10}{'+plain':>10}{'+streamed':>10}")
    base = {label: statistics.median(cpu[("off", label)]) for label in ("plain", "streamed")}
    for name in gateways:
        plain, streamed = (statistics.median(cpu[(name, label)]) for label in ("plain", "streamed"))
        print(f"{name:34}{plain:10.3f}{streamed:10.3f}{plain - base['plain']:10.3f}{streamed - base['streamed']:10.3f}")
    print(f"hooks when off, in-process: {hooks_off_us():.2f} µs per request (target: < 100 µs)")


def telemetry_gateways(fake_port: int, root: str) -> tuple[dict[str, tuple[str, int]], list[subprocess.Popen[bytes]]]:
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    gateways: dict[str, tuple[str, int]] = {}
    processes: list[subprocess.Popen[bytes]] = []
    for i, (name, extra) in enumerate(TELEMETRY_CONFIGS.items()):
        port = free_port()
        env = {
            **os.environ,
            "EXECBRIDGE_DATA_DIR": f"{root}/telemetry-{i}",
            "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
            **extra,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "execbridge", "serve", "--port", str(port),
             "--upstream", f"http://127.0.0.1:{fake_port}/v1", *ONE_PROCESS],
            env=env,
        )  # fmt: skip
        processes.append(process)
        wait_for(f"http://127.0.0.1:{port}/", process)
        gateways[name] = (f"http://127.0.0.1:{port}", process.pid)
    return gateways, processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--only", choices=["chat", "anthropic", "telemetry"], help="measure one upstream format, or telemetry, only"
    )
    args = parser.parse_args()

    fake_port, gateway_port, native_port = free_port(), free_port(), free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "execbridge.testing", "--instant", "--port", str(fake_port)],
        stdout=subprocess.DEVNULL,
    )
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryDirectory() as native_dir:
        env = {**os.environ, "EXECBRIDGE_DATA_DIR": data_dir, "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0"}
        gateway = subprocess.Popen(
            [sys.executable, "-m", "execbridge", "serve", "--port", str(gateway_port),
             "--upstream", f"http://127.0.0.1:{fake_port}/v1", *ONE_PROCESS],
            env=env,
        )  # fmt: skip
        # The same fake answers Anthropic's /v1/messages too: the native route, in its own gateway.
        native = subprocess.Popen(
            [sys.executable, "-m", "execbridge", "serve", "--port", str(native_port),
             "--upstream", f"http://127.0.0.1:{fake_port}", "--upstream-format", "anthropic", *ONE_PROCESS],
            env={**env, "EXECBRIDGE_DATA_DIR": native_dir},
        )  # fmt: skip
        try:
            fake_url = f"http://127.0.0.1:{fake_port}/v1"
            wait_for(f"{fake_url}/models", fake)
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            native_url = f"http://127.0.0.1:{native_port}"
            wait_for(f"{gateway_url}/", gateway)
            wait_for(f"{native_url}/", native)
            paths = [
                UpstreamPath("Chat Completions", f"{fake_url}/chat/completions", CHAT_BODY, gateway_url, gateway.pid),
                UpstreamPath("Anthropic-native", f"{fake_url}/messages", MESSAGES_BODY, native_url, native.pid),
            ]
            if args.only:
                paths = [p for p in paths if p.name.lower().startswith(args.only)]
            if paths:
                asyncio.run(run(args.n, args.concurrency, paths))
            if args.only in (None, "telemetry"):
                gateways, extra = telemetry_gateways(fake_port, data_dir)
                try:
                    asyncio.run(measure_telemetry(fake_url, gateways, args.n, args.concurrency))
                finally:
                    for process in extra:
                        process.terminate()
                        process.wait(10)
        finally:
            for process in (gateway, native, fake):
                process.terminate()
            for process in (gateway, native, fake):
                process.wait(10)


if __name__ == "__main__":
    main()
