"""Soak: many clients for many minutes against a real ``execbridge serve``; nothing may grow without bound.

Starts the scripted fake upstream (in this process) and ``execbridge serve`` (as root: the supervisor,
the unprivileged gateway and the sandbox host), then runs ``--clients`` concurrent clients for
``--minutes``, each looping over a mix of requests through the official SDK: code execution streamed and
not, container reuse, an upload placed in the container and then deleted, a client that drops its
stream mid-way, and an upstream that fails (429, then 503). Containers go idle after ``--idle-evict``
seconds, so live containers stay bounded.

It samples, at the start, every minute and at the end (after the clients stop and idle eviction has
had its time): open descriptors, threads and RSS of each execbridge process, processes in the
instance's container cgroups, live containers, workspace mounts, loop devices and data-directory bytes.
It fails (exit 1) if a resource ends higher than after the warm-up by more than its slack.

    sudo .venv/bin/python benchmarks/soak.py [--clients 16] [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic
from _procfs import processes

from execbridge.testing import FakeUpstream, Turn

MODEL = "databricks-claude-sonnet-4-5"
KEY = "soak-key"
TOOLS = [{"type": "code_execution_20250825", "name": "code_execution"}]
BETAS = ["code-execution-2025-08-25", "files-api-2025-04-14"]
KINDS = ("code", "stream", "reuse", "upload", "drop", "fail")
# What may grow between the warm-up sample and the end, before it counts as a leak.
SLACK = {"fds": 40, "threads": 8, "rss_mb": 60, "sandboxed": 4, "live": 4, "mounts": 4, "loops": 4, "data_mb": 50}


def respond(request: dict[str, Any]) -> Any:
    """One model turn for any request: the last user text says what to do."""
    last = request["messages"][-1]
    text = last["content"] if isinstance(last["content"], str) else json.dumps(last["content"])
    if last["role"] == "tool":
        return Turn.text("Done: " + text[-40:])
    if "fail" in text:
        return random.choice([Turn.error(429, "slow down", retry_after=0), Turn.error(503, "busy")])
    if "slow" in text:
        return Turn.text("slow " * 40).but(chunk_chars=5, chunk_delay=0.05)
    return Turn.text("Running.").call("bash_code_execution", command="ls /workspace | head -3; echo $RANDOM")


async def client_loop(url: str, deadline: float, counts: dict[str, int]) -> None:
    client = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0)
    container: str | None = None
    try:
        for step in itertools.count():
            if time.monotonic() > deadline:
                return
            kind = KINDS[step % len(KINDS)]
            try:
                made = await one_request(client, kind, container, counts)
                container = made or container
            except anthropic.APIStatusError:
                counts["errors answered"] += 1
            except anthropic.APIConnectionError:
                counts["connection errors"] += 1
            counts[kind] += 1
    finally:
        await client.close()


async def one_request(client: anthropic.AsyncAnthropic, kind: str, container: str | None, counts: dict) -> str | None:
    """One request of ``kind``; the container it used, when the response said."""
    messages = [{"role": "user", "content": {"fail": "please fail", "drop": "slow please"}.get(kind, "run it")}]
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 256, "betas": BETAS, "tools": TOOLS}
    if kind == "upload":
        uploaded = await client.beta.files.upload(file=("data.csv", b"a,b\n1,2\n" * 100, "text/csv"))
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "run it"},
                    {"type": "container_upload", "file_id": uploaded.id},
                ],
            }
        ]
        try:
            await client.beta.messages.create(**args, messages=messages)
        finally:
            await client.beta.files.delete(uploaded.id)
        return None
    if kind in ("stream", "drop"):
        async with client.beta.messages.stream(**args, messages=messages, container=container) as stream:
            async for event in stream:
                if kind == "drop" and event.type == "content_block_delta":
                    return None  # the client goes away mid-stream
            message = await stream.get_final_message()
        return message.container.id if message.container else None
    # "code" starts a new container; "reuse" and "fail" go on in the last one.
    message = await client.beta.messages.create(
        **args, messages=messages, container=None if kind == "code" else container
    )
    return message.container.id if message.container else None


def sandboxed_processes(instance: str) -> int:
    """Processes in the instance's container cgroups (any hierarchy); cgroups come and go meanwhile."""
    pids: set[str] = set()
    roots = [p for p in (Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()) if p.is_dir()]
    for root in roots:
        top = root / "execbridge" / instance
        for directory, _, files in os.walk(top):  # os.walk ignores directories that vanish
            if "cgroup.procs" in files:
                try:
                    pids.update(Path(directory, "cgroup.procs").read_text().split())
                except OSError:
                    continue
    return len(pids)


def sample(data_dir: Path, instance: str) -> dict[str, float]:
    values: dict[str, float] = {"fds": 0, "threads": 0, "rss_mb": 0}
    for pid in processes(data_dir).values():
        try:
            values["fds"] += len(os.listdir(f"/proc/{pid}/fd"))
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        values["threads"] += int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        values["rss_mb"] += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    values["sandboxed"] = sandboxed_processes(instance)
    run_dir = f"/run/execbridge/{instance}"
    values["mounts"] = sum(run_dir in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
    values["live"] = values["mounts"]  # one workspace mount per live container
    listing = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True).stdout
    loops = json.loads(listing)["loopdevices"] if listing.strip() else []
    values["loops"] = sum(str(data_dir) in (d.get("back-file") or "") for d in loops)
    # Blocks in use: workspace images are sparse, their apparent size is their cap, not their cost.
    size = subprocess.run(["du", "-sk", str(data_dir)], capture_output=True, text=True).stdout
    values["data_mb"] = int(size.split()[0]) / 1024 if size else 0
    return values


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--idle-evict", type=float, default=30)
    parser.add_argument("--retention", type=float, default=120, help="Seconds before an unused container goes.")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="execbridge-soak-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    data_dir = work / "data"
    data_dir.mkdir()
    with FakeUpstream(respond=respond) as upstream:
        port = 18000 + random.randrange(1000)
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "EXECBRIDGE_DATA_DIR": str(data_dir),
            "EXECBRIDGE_SANDBOX__IDLE_EVICT_S": str(options.idle_evict),
            "EXECBRIDGE_SANDBOX__RETENTION_S": str(options.retention),
            "EXECBRIDGE_UPSTREAM_MAX_RETRIES": "1",
        }
        log = (work / "serve.log").open("wb")
        serve = subprocess.Popen(
            [sys.executable, "-m", "execbridge", "serve", "--port", str(port), "--upstream", upstream.databricks_url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            return soak(url, data_dir, work, options, serve, upstream)
        finally:
            serve.terminate()
            serve.wait(timeout=120)


def soak(
    url: str, data_dir: Path, work: Path, options: argparse.Namespace, serve: subprocess.Popen, upstream: FakeUpstream
) -> int:
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or serve.poll() is not None:
            print((work / "serve.log").read_text())
            return 1
        time.sleep(0.2)
    found = re.search(r"/run/execbridge/([0-9a-f]+)/", (work / "serve.log").read_text())
    instance = found.group(1) if found else "none"
    counts: dict[str, int] = {}
    counts.update(dict.fromkeys(KINDS, 0))
    counts.update({"errors answered": 0, "connection errors": 0})
    samples: list[tuple[float, dict[str, float]]] = [(0.0, sample(data_dir, instance))]
    started = time.monotonic()
    end = started + options.minutes * 60

    async def run() -> None:
        clients = [asyncio.create_task(client_loop(url, end, counts)) for _ in range(options.clients)]
        while time.monotonic() < end:
            await asyncio.sleep(min(60, max(0.1, end - time.monotonic())))
            samples.append(((time.monotonic() - started) / 60, sample(data_dir, instance)))
            upstream.requests.clear()  # the fake keeps what it was sent; this run does not need it
        await asyncio.gather(*clients)

    asyncio.run(run())
    # Idle containers are stopped and unused ones deleted (the janitor checks expiry every
    # retention/4); then the last sample.
    time.sleep(max(options.idle_evict * 2, options.retention * 1.5) + 10)
    samples.append(((time.monotonic() - started) / 60, sample(data_dir, instance)))
    print(
        f"requests: {sum(v for k, v in counts.items() if k in ('code', 'stream', 'reuse', 'upload', 'drop', 'fail'))}"
    )
    print("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    keys = list(samples[0][1])
    print(f"{'minute':>7} " + " ".join(f"{k:>9}" for k in keys))
    for minute, values in samples:
        print(f"{minute:7.1f} " + " ".join(f"{values[k]:9.1f}" for k in keys))
    warm = samples[min(1, len(samples) - 1)][1]
    last = samples[-1][1]
    grew = [k for k in keys if last[k] > warm[k] + SLACK[k]]
    print("leaks: " + (", ".join(f"{k} {warm[k]:.0f} → {last[k]:.0f}" for k in grew) if grew else "none"))
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
