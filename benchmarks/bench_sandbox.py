"""Sandbox latency and memory, side by side with a bare ``python3 -c 'print(1)'`` (DESIGN.md §3).

Prints, in one run:
- bare ``python3 -c 'print(1)'`` started with ``subprocess`` (p50/p99 over N);
- a trivial command in a warm container (``print(1)`` and ``echo 1``), inside one lease and with a
  lease per command (what the engine does), and the ratio to bare (targets ≤ 0.25x p50, ≤ 0.5x p99);
- a cell of the persistent REPL (``x += 1``) in a warm container (target ≤ 0.1x bare p50), and one
  that awaits a client tool, suspended and resumed (programmatic tool calling; no target);
- a new container to its first result, with the spare pool and cold (target ≤ 2x bare);
- memory per idle container: PSS of the bwrap + executor process tree (``/proc/<pid>/smaps_rollup``)
  over many idle containers, and how many would fit in 24 GiB (target ≥ 1000); and the same for
  idle containers whose REPL was started (both sandboxes' trees);

Needs root (like the gateway). Bounded in time (well under 2 minutes). Usage:
    .venv/bin/python benchmarks/bench_sandbox.py [--n 200] [--idle 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from _procfs import pss_kib

from execbridge.config import Settings, load_settings
from execbridge.sandbox.doctor import diagnose
from execbridge.sandbox.host_client import SandboxHostClient, host_answers
from execbridge.sandbox.manager import ContainerManager
from execbridge.store.sqlite import SqliteStore

GIB24 = 24 << 30


CONCURRENT = 64  # DESIGN.md §3: 64 concurrent executing requests with no errors


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bare(python: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([python, "-c", "print(1)"], stdout=subprocess.DEVNULL, check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def timed(n: int, fn: Callable[[], Awaitable[object]]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def settings_for(data_dir: Path, **sandbox: object) -> Settings:
    return load_settings(None, data_dir=data_dir, sandbox={"uid_base": 600_000, **sandbox})


async def run(n: int, idle: int, data_root: Path) -> None:
    rows: list[tuple[str, list[float], str]] = []
    split_rows: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
    base = load_settings(None, data_dir=data_root / "probe")
    python = str(base.sandbox.python if base.sandbox.python.exists() else sys.executable)
    report = await diagnose(base)
    if not report.ok:
        print(report.render())
        raise SystemExit("sandbox protections missing; the benchmark measures the real thing only")

    bare_ms = bare("/usr/bin/python3" if Path("/usr/bin/python3").exists() else python, n)
    rows.append(("bare python3 -c 'print(1)'", bare_ms, ""))

    # ---- warm container and new containers with the spare pool
    settings = settings_for(data_root / "warm", spare_containers=2)
    store = await SqliteStore.open(settings.database_path)
    async with ContainerManager(settings, store, report=report) as m:
        assert m.pool is not None
        await m.pool.wait_full()
        info = await m.create("bench")
        async with m.lease(info.id, "bench") as s:
            for _ in range(20):  # warm up: site, page cache
                await s.run_python("print(1)")
                await s.run_bash("echo 1")
            rows.append(
                ("warm: python print(1)", await timed(n, lambda: s.run_python("print(1)")), "p50≤0.25x p99≤0.5x")
            )
            rows.append(("warm: bash echo 1", await timed(n, lambda: s.run_bash("echo 1")), "p50≤0.25x p99≤0.5x"))
            # The persistent REPL (20260120+): a cell in the long-lived interpreter, next to the fresh
            # process per call above (thaw, cell, SIGSTOP, sweep, freeze: all counted).
            for _ in range(20):
                await s.run_cell("x = 0")
            rows.append(("warm: REPL cell x += 1", await timed(n, lambda: s.run_cell("x += 1")), "p50≤0.1x"))

            # Programmatic tool calling: a cell that awaits one client tool, suspended and resumed
            # (pause: call message, SIGSTOP, freeze; resume: thaw, replies, SIGCONT, the cell's end).
            async def awaits_a_tool() -> None:
                paused = await s.run_cell("r = await t({'k': 1})", tools=["t"], cell_id="srvtoolu_bench")
                await s.resume_cell("srvtoolu_bench", {paused.calls[0].id: "ok"})

            rows.append(("warm: REPL cell pause + resume (one client tool)", await timed(n, awaits_a_tool), ""))

        async def leased() -> None:
            async with m.lease(info.id, "bench") as s2:
                await s2.run_python("print(1)")

        rows.append(("warm: lease + python print(1)", await timed(n, leased), "p50≤0.25x p99≤0.5x"))
        split_rows = await through_sandbox_host(n, data_root / "host", m, info.id)

        spare_ms: list[float] = []
        for _ in range(min(n, 30)):
            await m.pool.wait_full()
            t0 = time.perf_counter()
            fresh = await m.create("bench")
            async with m.lease(fresh.id, "bench") as s3:
                r = await s3.run_python("print(1)")
            spare_ms.append((time.perf_counter() - t0) * 1000)
            assert r.stdout == "1\n", r
            await m.delete(fresh.id, "bench")
        rows.append(("new container → first result (spare pool)", spare_ms, "≤2x"))
    await store.close()

    # ---- cold: no spare pool; and idle memory
    settings = settings_for(data_root / "cold", spare_containers=0)
    store = await SqliteStore.open(settings.database_path)
    async with ContainerManager(settings, store, report=report) as m:
        cold_ms: list[float] = []
        for _ in range(min(n, 15)):
            t0 = time.perf_counter()
            fresh = await m.create("bench")
            async with m.lease(fresh.id, "bench") as s4:
                await s4.run_python("print(1)")
            cold_ms.append((time.perf_counter() - t0) * 1000)
            await m.delete(fresh.id, "bench")
        rows.append(("new container → first result (cold, no spare)", cold_ms, "(reported)"))

        rss_before = rss_kib()
        ids = []
        for _ in range(idle):
            c = await m.create("idle")
            async with m.lease(c.id, "idle") as s5:
                await s5.run_python("print(1)")  # a used, now idle container (site loaded)
            ids.append(c.id)
        await asyncio.sleep(0.5)
        per_container = []
        for cid in ids:
            live = m._entries[cid].live
            assert live is not None and live.alive
            per_container.append(sum(pss_kib(pid) for pid in live.pids()) / 1024)
        gateway_mib = (rss_kib() - rss_before) / 1024 / idle

        # The same with a REPL: the container's sandbox plus the REPL's (bwrap, supervisor, interpreter).
        repl_containers = []
        for _ in range(max(1, idle // 5)):
            c = await m.create("idle-repl")
            async with m.lease(c.id, "idle-repl") as s7:
                await s7.run_python("print(1)")
                await s7.run_cell("x = 1")
            repl_containers.append(c.id)
        await asyncio.sleep(0.5)
        per_repl_container = []
        for cid in repl_containers:
            entry = m._entries[cid]
            assert entry.live is not None and entry.repl is not None
            pids = entry.live.pids() | entry.repl.pids()
            per_repl_container.append(sum(pss_kib(pid) for pid in pids) / 1024)

        # ---- many containers executing at once (target: 64 with no errors)
        while len(ids) < CONCURRENT:
            ids.append((await m.create("idle")).id)

        async def busy(cid: str) -> bool:
            async with m.lease(cid, "idle") as s6:
                r = await s6.run_python("print(sum(i * i for i in range(200_000)))")
            return r.error_code is None and r.return_code == 0 and r.stdout.strip() == "2666646666700000"

        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*(busy(cid) for cid in ids[:CONCURRENT]), return_exceptions=True)
        concurrent_s = time.perf_counter() - t0
        concurrent_errors = sum(o is not True for o in outcomes)
    await store.close()

    # ---- print
    b50, b99 = pct(bare_ms, 50), pct(bare_ms, 99)
    print("\nthe privilege split's cost per command (interleaved samples, same machine, same moment):")
    in_process, remote, in_process_leased, remote_leased = split_rows
    for name, samples in (
        ("in-process: bash echo 1", in_process),
        ("via sandbox host: bash echo 1", remote),
        ("in-process: lease + bash echo 1", in_process_leased),
        ("via sandbox host: lease + bash echo 1", remote_leased),
    ):
        print(f"  {name:44} p50 {pct(samples, 50):7.3f} ms   p99 {pct(samples, 99):7.3f} ms")
    for what, near, far in (("a command", in_process, remote), ("a lease + command", in_process_leased, remote_leased)):
        paired = sorted(r - i for i, r in zip(near, far, strict=True))
        print(f"  added by the split to {what} (median of paired differences): {pct(paired, 50):.3f} ms")
    print(f"\nexecbridge sandbox benchmark — N={n}, {os.cpu_count()} CPUs, python {python}")
    print(f"{'':46} {'p50 ms':>8} {'p99 ms':>8} {'xbare p50':>10} {'xbare p99':>10}   target")
    for name, samples, target in rows:
        p50, p99 = pct(samples, 50), pct(samples, 99)
        print(f"{name:46} {p50:8.2f} {p99:8.2f} {p50 / b50:10.2f} {p99 / b99:10.2f}   {target}")
    avg = statistics.mean(per_container)
    print(
        f"\nidle container memory (PSS of bwrap + executor tree, n={idle}): avg {avg:.2f} MiB, "
        f"max {max(per_container):.2f} MiB → {int(GIB24 / (avg * (1 << 20)))} containers in 24 GiB (target ≥ 1000)"
    )
    repl_avg = statistics.mean(per_repl_container)
    print(
        f"idle container with a REPL (PSS of both trees, n={len(per_repl_container)}): avg {repl_avg:.2f} MiB, "
        f"max {max(per_repl_container):.2f} MiB (+{repl_avg - avg:.2f} MiB for the REPL)"
    )
    print(f"gateway-side memory per live container (RSS growth of this process): {gateway_mib:.2f} MiB")
    print(
        f"{CONCURRENT} containers executing at once: {concurrent_errors} errors, all done in "
        f"{concurrent_s * 1000:.0f} ms (target: no errors)"
    )


async def through_sandbox_host(
    n: int, data_dir: Path, m: ContainerManager, local_id: str
) -> tuple[list[float], list[float], list[float], list[float]]:
    """``echo 1`` in a warm container of a real ``execbridge sandbox-host`` process (over its socket)
    and in a warm in-process one, sample by sample in turn, so both see the same machine."""
    socket_path = data_dir / "sandbox.sock"
    env = {**os.environ, "EXECBRIDGE_SANDBOX__UID_BASE": "650000", "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0"}
    command = [sys.executable, "-m", "execbridge", "--data-dir", str(data_dir), "sandbox-host"]
    host = subprocess.Popen([*command, "--socket", str(socket_path)], env=env)
    client = SandboxHostClient(socket_path, output_limits=(1 << 20, 32, 64 << 20))
    try:
        while not await host_answers(socket_path):
            if host.poll() is not None:
                raise SystemExit("the sandbox host did not start")
            await asyncio.sleep(0.05)
        info = await client.create("bench")
        in_process: list[float] = []
        remote: list[float] = []
        in_process_leased: list[float] = []
        remote_leased: list[float] = []
        async with client.lease(info.id, "bench") as far, m.lease(local_id, "bench") as near:
            for _ in range(50):
                await far.run_bash("echo 1")
                await near.run_bash("echo 1")
            for _ in range(n):
                in_process += await timed(1, lambda: near.run_bash("echo 1"))
                remote += await timed(1, lambda: far.run_bash("echo 1"))
            # CPU, which the machine's other load does not inflate: this process alone in-process, this
            # process and the host process through the host (the executor's own CPU is the same in both).
            cpu0 = time.process_time()
            for _ in range(n):
                await near.run_bash("echo 1")
            cpu_in_process = (time.process_time() - cpu0) / n * 1000
            cpu0, host0 = time.process_time(), cpu_seconds(host.pid)
            for _ in range(n):
                await far.run_bash("echo 1")
            cpu_remote = ((time.process_time() - cpu0) + (cpu_seconds(host.pid) - host0)) / n * 1000
            print(
                f"\nCPU per command: in-process {cpu_in_process:.3f} ms; through the sandbox host "
                f"{cpu_remote:.3f} ms (gateway + host) — the split adds {cpu_remote - cpu_in_process:.3f} ms of CPU"
            )

        # A lease per command, as the engine does (a lease per round of tool calls).
        async def leased_near() -> None:
            async with m.lease(local_id, "bench") as s:
                await s.run_bash("echo 1")

        async def leased_far() -> None:
            async with client.lease(info.id, "bench") as s:
                await s.run_bash("echo 1")

        for _ in range(n):
            in_process_leased += await timed(1, leased_near)
            remote_leased += await timed(1, leased_far)
        await client.delete(info.id, "bench")
        return in_process, remote, in_process_leased, remote_leased
    finally:
        await client.aclose()
        host.terminate()
        host.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="samples per latency row")
    parser.add_argument("--idle", type=int, default=50, help="idle containers for the memory figure")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the sandbox needs it, as the gateway does)")
    root = Path(tempfile.mkdtemp(prefix="execbridge-bench-", dir="/tmp"))
    os.chmod(root, 0o711)
    try:
        # Bounded: about 110 s for the default sizes, plus the time to create each idle container.
        # uvloop: the event loop the gateway (uvicorn) and the sandbox host run on.
        uvloop.run(asyncio.wait_for(run(args.n, args.idle, root), timeout=110 + 0.3 * max(0, args.idle - 50)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
