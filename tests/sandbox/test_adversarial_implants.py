"""Nothing a command starts outlives it (issue 9, finding 1): when a command returns, every process it
started is gone, however it tried to hide, so nothing can watch or tamper with later commands.

Each variant leaves an "implant" behind and returns at once; the implant would, if it survived, write
into every later command's ``$OUTPUT_DIR`` (which the gateway publishes as that request's files) and
log later commands' command lines. The checks: the sandbox's cgroup holds only its baseline processes
right after the command, a later command finds no implant in ``/proc``, and nothing it did not write
comes back from its ``$OUTPUT_DIR``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.manager import ContainerManager

from .conftest import BASELINE_PROCS, container, open_manager, private_dir, sandbox_pids

pytestmark = [pytest.mark.adversarial, pytest.mark.asyncio(loop_scope="module")]


# What a surviving implant does, forever: name itself, then spy on later commands and plant files in
# their output directories. Written to a file so each variant can start it in its own way.
SPY = r"""
import ctypes, os, platform, threading, time
libc = ctypes.CDLL(None, use_errno=True)
SYS_exit = {"x86_64": 60, "aarch64": 93}[platform.machine()]  # exit (one thread), not exit_group
libc.prctl(15, b"implant", 0, 0, 0)  # PR_SET_NAME: findable in /proc/*/task/*/comm
def ready():  # the disguise is in place: the command may return now
    open("/workspace/.ready", "w").close()
def leader_is_zombie():
    stat = open(f"/proc/{os.getpid()}/stat").read()
    return stat[stat.rfind(")") + 2] == "Z"
def spy(ready_once_zombie=False):
    libc.prctl(15, b"implant", 0, 0, 0)
    while True:
        if ready_once_zombie and leader_is_zombie():
            ready()
            ready_once_zombie = False
        for root, dirs, files in os.walk("/tmp/outputs"):
            for d in dirs:
                try:
                    open(os.path.join(root, d, "planted.txt"), "w").write("from the implant")
                except OSError:
                    pass
        for pid in os.listdir("/proc"):
            try:
                line = open(f"/proc/{pid}/cmdline", "rb").read()
                open("/workspace/.spied", "ab").write(line + b"\n")
            except OSError:
                pass
        time.sleep(0.001)
"""

# Each variant returns at once and leaves the spy running in a different disguise.
VARIANTS = {
    # The thread-group leader ends with the raw exit syscall (not exit_group): the process shows "Z"
    # while its other thread keeps running.
    "zombie-looking leader": SPY
    + r"""
threading.Thread(target=spy, args=(True,)).start()
libc.syscall(SYS_exit, 0)  # only this thread ends
""",
    # The same from a grandchild that left the command's session and process group first.
    "detached zombie-looking leader": SPY
    + r"""
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        threading.Thread(target=spy, args=(True,)).start()
        libc.syscall(SYS_exit, 0)
    os._exit(0)
os.wait()
""",
    # A process that keeps re-forking: each generation forks the next and exits, so its pid changes
    # faster than a scan of /proc can follow.
    "re-forking": r"""
import os, time
if os.fork() == 0:
    os.setsid()
    open("/workspace/.ready", "w").close()
    while True:
        if os.fork():
            os._exit(0)
        open("/workspace/.spied", "ab").write(b"x")
"""
    + "\n",
    # A process that stops itself (state T) in a new session: stopped, it would wait for a SIGCONT.
    "stopped": SPY
    + r"""
if os.fork() == 0:
    os.setsid()
    threading.Thread(target=spy, daemon=True).start()
    ready()
    os.kill(os.getpid(), 19)  # SIGSTOP: the whole process, spy thread included, stops
    time.sleep(1000)
""",
    # A thread left behind by a process whose main thread blocks all signals it can.
    "signal-blocking": SPY
    + r"""
import signal
if os.fork() == 0:
    os.setsid()
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
    for s in set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}:
        try:
            signal.signal(s, signal.SIG_IGN)
        except (OSError, ValueError):
            pass
    threading.Thread(target=spy).start()
    ready()
    time.sleep(1000)
""",
}

# Lists every task of every process but the executor's and this check's own, with its state.
CENSUS = r"""
import os
mine = {os.getpid(), os.getppid()}
seen = []
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) in mine or int(pid) == 1:
        continue
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        continue
    for tid in tasks:
        try:
            comm = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        except OSError:
            continue
        seen.append(f"{pid}/{tid}:{comm}")
print(" ".join(sorted(seen)))
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def m(base_dir: Path, doctor_report: DoctorReport) -> AsyncIterator[ContainerManager]:
    data = private_dir(base_dir, "implants-")
    async with open_manager(data, doctor_report, spare_containers=0, command_timeout_s=10.0) as manager:
        yield manager


@pytest.mark.parametrize("source", list(VARIANTS.values()), ids=list(VARIANTS))
async def test_nothing_a_command_starts_survives_it(m: ContainerManager, source: str):
    async with container(m) as s:
        await s.create("implant.py", source)
        # Returns once the implant says its disguise is in place (bounded: it fails the test otherwise).
        started = await s.run_bash(
            "python3 implant.py & disown -a; "
            "for _ in $(seq 500); do [ -e .ready ] && break; sleep 0.01; done; [ -e .ready ] && echo started"
        )
        assert started.stdout == "started\n" and started.error_code is None, started.stderr
        # Host side, right after the command: the sandbox's cgroup holds only its baseline processes.
        assert len(sandbox_pids(m, s)) == BASELINE_PROCS
        # Inside, on later commands: no implant task, and nothing planted in their output directories.
        for _ in range(3):
            census = await s.run_python(CENSUS)
            assert "implant" not in census.stdout and census.stdout.strip() == "", census.stdout
            later = await s.run_bash('sleep 0.2; echo "$OUTPUT_DIR" >/dev/null; ls -A "$OUTPUT_DIR"')
            assert later.stdout == "" and later.files == ()
