"""Costs as live containers grow (issue 15): the curve from a few to ``--max`` live containers.

Prints, in one run:
- in-process (``ContainerManager``, as the sandbox host runs it): at each checkpoint of live
  containers, a new container → its first ``print(1)``, p50/p90, with a spare from the pool and
  without one (cold: image, mount, spawn), next to a bare ``python3 -c 'print(1)'`` measured at the
  same checkpoint; the sustained creation rate while filling up to the checkpoint (one-shot
  containers: create + one command each, back to back) and this process's CPU per new container
  (which the machine's other load does not move); this process's file descriptors per live
  container, mounts in its mount namespace, and PSS per idle container (a sample of them);
  then the time to delete them all, per container;
- through a real ``execbridge serve`` (root: supervisor, unprivileged gateway, sandbox host) and the
  scripted fake upstream: 16 concurrent SDK clients, each request a new container running one bash
  command, until ``--max`` containers are live; requests/s per stretch of live containers, the last
  stretch over the first (target: within 1.2x), the gateway's and the host's descriptors per live
  container, and how long SIGTERM takes to stop it all, and what it leaves behind.

Outside CI (it takes the machine for minutes). Bounded: every phase has a deadline and everything it
made is removed at the end (temporary data directories, containers, the gateway). Needs root.

    .venv/bin/python benchmarks/bench_scale.py --max 400          # development: about 3 minutes
    .venv/bin/python benchmarks/bench_scale.py --max 2000         # the full curve: under 15 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from _procfs import processes, pss_kib

from execbridge.config import Settings, load_settings
from execbridge.sandbox.base import ContainerInfo
from execbridge.sandbox.doctor import DoctorReport, diagnose
from execbridge.sandbox.manager import ContainerManager
from execbridge.store.sqlite import SqliteStore

BARE = "/usr/bin/python3"
CLIENTS = 16
MODEL = "databricks-claude-sonnet-4-5"
KEY = "scale-key"
TOOLS = [{"type": "code_execution_20250825", "name": "code_execution"}]
BETAS = ["code-execution-2025-08-25"]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def checkpoints(top: int) -> list[int]:
    marks = [m for m in (10, 100, 200, 400, 800, 1200, 1600, 2000) if m < top]
    return [*marks, top]


def bare_ms(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([BARE, "-c", "print(1)"], stdout=subprocess.DEVNULL, check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def fd_count(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def mount_count(pid: int | str = "thread-self") -> int:
    try:
        return len(Path(f"/proc/{pid}/mountinfo").read_text().splitlines())
    except OSError:
        return 0


def settings_for(data_dir: Path, uid_base: int, top: int, **sandbox: object) -> Settings:
    return load_settings(
        None,
        data_dir=data_dir,
        sandbox={
            "uid_base": uid_base,
            "max_containers": top + 500,
            "max_live_containers": top + 500,
            "max_live_per_owner": top + 500,
            "idle_evict_s": 3600.0,
            **sandbox,
        },
    )


async def first_result(m: ContainerManager, owner: str) -> tuple[float, ContainerInfo]:
    t0 = time.perf_counter()
    info = await m.create(owner)
    async with m.lease(info.id, owner) as s:
        r = await s.run_python("print(1)")
    elapsed = (time.perf_counter() - t0) * 1000
    if r.stdout != "1\n":
        raise SystemExit(f"a new container answered {r!r}")
    return elapsed, info


async def in_process(top: int, samples: int, root: Path, report: DoctorReport) -> None:
    print(f"\n== in-process ContainerManager, up to {top} live containers ==", flush=True)
    header = (
        f"{'live':>6} {'bare p50':>9} {'spare p50':>10} {'p90':>7} {'cold p50':>9} {'p90':>7} "
        f"{'cold/bare':>9} {'fill/s':>7} {'CPU ms':>7} {'fds/ctr':>8} {'mounts':>7} {'PSS MiB':>8}"
    )
    print(header)
    rows: list[dict[str, float]] = []
    pool_settings = settings_for(root / "pool", 600_000, top, spare_containers=2)
    cold_settings = settings_for(root / "cold", 600_000 + top + 1000, top, spare_containers=0)
    pool_store = await SqliteStore.open(pool_settings.database_path)
    cold_store = await SqliteStore.open(cold_settings.database_path)
    made: list[tuple[ContainerManager, ContainerInfo]] = []
    fds_before = fd_count()
    try:
        async with (
            ContainerManager(pool_settings, pool_store, report=report) as pool_m,
            ContainerManager(cold_settings, cold_store, report=report) as cold_m,
        ):
            assert pool_m.pool is not None
            await pool_m.pool.wait_full(timeout=60)
            fds_base = fd_count()
            for mark in checkpoints(top):
                fill = mark - len(made) - 2 * samples
                t0, cpu0 = time.perf_counter(), time.process_time()
                for _ in range(max(0, fill)):
                    made.append((pool_m, (await first_result(pool_m, "fill"))[1]))
                fill_rate = fill / (time.perf_counter() - t0) if fill > 0 else float("nan")
                # This process's own CPU per new container: what the machine's other load does not move.
                fill_cpu = (time.process_time() - cpu0) / fill * 1000 if fill > 0 else float("nan")
                spare: list[float] = []
                cold: list[float] = []
                bare: list[float] = []
                for _ in range(samples):  # interleaved, so all three see the same machine
                    bare += bare_ms(1)
                    await pool_m.pool.wait_full(timeout=60)
                    ms, info = await first_result(pool_m, "spare")
                    spare.append(ms)
                    made.append((pool_m, info))
                    ms, info = await first_result(cold_m, "cold")
                    cold.append(ms)
                    made.append((cold_m, info))
                await pool_m.pool.wait_full(timeout=60)
                live = len(made)
                fds = (fd_count() - fds_base) / live
                pss = [
                    sum(pss_kib(pid) for pid in entry.live.pids()) / 1024
                    for m, info in random.sample(made, min(20, live))
                    if (entry := m._entries.get(info.id)) is not None and entry.live is not None
                ]
                row = {
                    "live": live,
                    "bare": pct(bare, 50),
                    "spare50": pct(spare, 50),
                    "spare90": pct(spare, 90),
                    "cold50": pct(cold, 50),
                    "cold90": pct(cold, 90),
                    "fill": fill_rate,
                    "cpu": fill_cpu,
                    "fds": fds,
                    "mounts": mount_count(),
                    "pss": statistics.mean(pss) if pss else float("nan"),
                }
                rows.append(row)
                print(
                    f"{live:6d} {row['bare']:9.1f} {row['spare50']:10.1f} {row['spare90']:7.1f} "
                    f"{row['cold50']:9.1f} {row['cold90']:7.1f} {row['cold50'] / row['bare']:9.2f} "
                    f"{fill_rate:7.1f} {fill_cpu:7.2f} {fds:8.2f} {row['mounts']:7d} {row['pss']:8.2f}",
                    flush=True,
                )
            deletions: list[float] = []
            t_all = time.perf_counter()
            for m, info in made:
                t0 = time.perf_counter()
                await m.delete(info.id, info.owner)
                deletions.append((time.perf_counter() - t0) * 1000)
            answered = time.perf_counter() - t_all
            for m in (pool_m, cold_m):
                if hasattr(m, "settle"):  # deletion in the background (this branch); before, delete waited
                    await m.settle()
            total = time.perf_counter() - t_all
            print(
                f"deleting {len(made)} live containers: each answered in p50 {pct(deletions, 50):.1f} ms, "
                f"p90 {pct(deletions, 90):.1f} ms (target ≤ 10 ms, off the request path); all answered in "
                f"{answered:.1f} s, everything gone in {total:.1f} s ({total / len(made) * 1000:.1f} ms each)"
            )
            made.clear()
    finally:
        await pool_store.close()
        await cold_store.close()
    print(f"descriptors of this process: {fds_before} before, {fd_count()} after")
    if len(rows) >= 2:
        first = next((r for r in rows if r["live"] >= 100), rows[0])
        last = rows[-1]
        print(
            f"{int(last['live'])} live over {int(first['live'])} live (target within 1.2x): spare p50 "
            f"{last['spare50'] / first['spare50']:.2f}x, cold p50 {last['cold50'] / first['cold50']:.2f}x, "
            f"cold p90/p50 at {int(last['live'])}: {last['cold90'] / last['cold50']:.2f} (target ≤ 2); "
            f"cold/bare {last['cold50'] / last['bare']:.2f} (target ≤ 1.5)"
        )
        # The machine's load moves between checkpoints: the same ratio with each checkpoint's latency
        # over the bare python3 measured next to it.
        print(
            "normalised by bare python3 at each checkpoint: spare "
            f"{(last['spare50'] / last['bare']) / (first['spare50'] / first['bare']):.2f}x, cold "
            f"{(last['cold50'] / last['bare']) / (first['cold50'] / first['bare']):.2f}x"
        )


# ---------------------------------------------------------------- through the gateway


def respond(request: dict[str, Any]) -> Any:
    from execbridge.testing import Turn

    if request["messages"][-1]["role"] == "tool":
        return Turn.text("Done.")
    return Turn.text("Running.").call("bash_code_execution", command="echo $((6 * 7))")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def leftovers(data_dir: Path, instance: str) -> dict[str, int]:
    """Mounts (in every mount namespace we can see from here), loop devices and cgroups of ``instance``."""
    table = Path("/proc/self/mountinfo").read_text().splitlines()
    mounts = sum(f"/run/execbridge/{instance}/" in line for line in table)
    loops = 0
    for name in os.listdir("/sys/block"):
        with contextlib.suppress(OSError):
            if str(data_dir) in Path(f"/sys/block/{name}/loop/backing_file").read_text():
                loops += 1
    cgroups = 0
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        parent = hierarchy / "execbridge" / instance
        with contextlib.suppress(OSError):
            cgroups += sum(1 for c in parent.iterdir() if c.is_dir())
    return {"mounts": mounts, "loops": loops, "cgroups": cgroups}


async def through_gateway(top: int, root: Path, deadline_s: float) -> None:
    import anthropic
    import httpx

    from execbridge.testing import FakeUpstream

    print(f"\n== through execbridge serve: {CLIENTS} clients, a new container per request, up to {top} ==", flush=True)
    data_dir = root / "gateway"
    data_dir.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with FakeUpstream(respond=respond) as upstream:
        env = {
            **os.environ,
            "EXECBRIDGE_DATA_DIR": str(data_dir),
            "EXECBRIDGE_SANDBOX__UID_BASE": "900000",
            "EXECBRIDGE_SANDBOX__MAX_CONTAINERS": str(top + 500),
            "EXECBRIDGE_SANDBOX__MAX_LIVE_CONTAINERS": str(top + 500),
            "EXECBRIDGE_SANDBOX__MAX_LIVE_PER_OWNER": str(top + 500),
            "EXECBRIDGE_SANDBOX__IDLE_EVICT_S": "3600",
        }
        log = (root / "serve.log").open("wb")
        serve = subprocess.Popen(
            [sys.executable, "-m", "execbridge", "serve", "--port", str(port), "--upstream", upstream.databricks_url],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            started = time.monotonic()
            async with httpx.AsyncClient() as probe:
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await probe.get(f"{url}/readyz")).status_code == 200:
                            break
                    if serve.poll() is not None or time.monotonic() - started > 60:
                        raise SystemExit("serve did not start:\n" + (root / "serve.log").read_text()[-3000:])
                    await asyncio.sleep(0.2)
            procs = processes(data_dir)
            base_fds = {role: fd_count(pid) for role, pid in procs.items()}
            done: list[float] = []  # completion times of successful requests
            errors = 0
            issued = 0
            finish_by = time.monotonic() + deadline_s

            async def client() -> None:
                nonlocal errors, issued
                sdk = anthropic.AsyncAnthropic(base_url=url, api_key=KEY, max_retries=0, timeout=120)
                try:
                    while issued < top and time.monotonic() < finish_by:
                        issued += 1
                        try:
                            message = await sdk.beta.messages.create(
                                model=MODEL,
                                max_tokens=64,
                                betas=BETAS,
                                tools=TOOLS,  # type: ignore[arg-type]
                                messages=[{"role": "user", "content": "run it"}],
                            )
                        except anthropic.APIError as exc:
                            errors += 1
                            print(f"  error: {exc}", flush=True)
                            continue
                        if message.container is None:
                            errors += 1
                            continue
                        done.append(time.monotonic())
                finally:
                    await sdk.close()

            t0 = time.monotonic()
            await asyncio.gather(*(client() for _ in range(CLIENTS)))
            live = len(done)
            fds = {role: fd_count(pid) for role, pid in procs.items()}
            pss_host = pss_kib(procs.get("sandbox-host", 0)) / 1024
            stretches = 8
            size = max(1, live // stretches)
            rates = []
            for i in range(0, size * stretches, size):
                window = done[i : i + size]
                begin = t0 if i == 0 else done[i - 1]
                rates.append((i + size, size / max(1e-6, window[-1] - begin)))
            print(f"{'live':>6} {'req/s':>7}")
            for upto, rate in rates:
                print(f"{upto:6d} {rate:7.1f}")
            if len(rates) >= 2:
                print(
                    f"requests: {live} ok, {errors} errors; last stretch over first: {rates[-1][1] / rates[0][1]:.2f}x "
                    "(target within 1.2x)"
                )
            for role in procs:
                per = (fds[role] - base_fds[role]) / max(1, live)
                print(f"{role}: {base_fds[role]} → {fds[role]} descriptors ({per:.2f} per live container)")
            print(f"sandbox host RSS/PSS: {pss_host:.0f} MiB with {live} live containers")
            instance = load_settings(None, data_dir=data_dir).instance
            t_stop = time.monotonic()
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(120)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
            print(
                f"SIGTERM with {live} live containers: stopped in {time.monotonic() - t_stop:.1f} s "
                f"(exit {serve.returncode}; target ≤ 10 s); left behind: {leftovers(data_dir, instance)}"
            )
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()


async def run(top: int, samples: int, root: Path, gateway: bool) -> None:
    probe = load_settings(None, data_dir=root / "probe")
    report = await diagnose(probe)
    if not report.ok:
        print(report.render())
        raise SystemExit("sandbox protections missing; the benchmark measures the real thing only")
    with contextlib.suppress(OSError):
        print(f"machine: {os.cpu_count()} CPUs, load average {Path('/proc/loadavg').read_text().split()[:3]}")
    await in_process(top, samples, root, report)
    if gateway:
        await through_gateway(top, root, deadline_s=max(120.0, top * 0.6))
    with contextlib.suppress(OSError):
        print(f"load average at the end: {Path('/proc/loadavg').read_text().split()[:3]}")


def timed(fn: Callable[[], Awaitable[None]], limit: float) -> Awaitable[None]:
    return asyncio.wait_for(fn(), timeout=limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max", type=int, default=400, help="live containers at the end of the curve")
    parser.add_argument("--samples", type=int, default=10, help="timed new containers per checkpoint, each kind")
    parser.add_argument("--no-gateway", action="store_true", help="the in-process curve only")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the sandbox needs it, as the gateway does)")
    root = Path(tempfile.mkdtemp(prefix="execbridge-scale-", dir="/var/tmp"))
    os.chmod(root, 0o711)
    # Bounded: about 0.35 s per container in-process and 0.6 s through the gateway, on this machine.
    limit = 120 + args.max * 1.2
    try:
        uvloop.run(timed(lambda: run(args.max, args.samples, root, not args.no_gateway), limit))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
