"""The persistent REPL, the one process allowed to outlive a request, attacked from both sides.

The REPL runs in a sandbox of its own (own PID, network, IPC and mount namespaces; same workspace and
uid), frozen between cells and non-dumpable. Commands must not reach it (see it, signal it, trace
it, read its memory, write its pipes), and nothing a cell leaves behind may reach a command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.manager import ContainerManager
from execbridge.sandbox.session import LeasedSession

from .conftest import container, open_manager, private_dir

pytestmark = [pytest.mark.adversarial, pytest.mark.asyncio(loop_scope="module")]

SECRET_CELL = "secret = 'repl-secret-' + 'd41f'\nimport os\nprint(os.getpid())"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def m(base_dir: Path, doctor_report: DoctorReport) -> AsyncIterator[ContainerManager]:
    data = private_dir(base_dir, "adversarial-repl-")
    async with open_manager(data, doctor_report, spare_containers=0, command_timeout_s=10.0) as manager:
        yield manager


def repl_host_pids(m: ContainerManager, session: LeasedSession) -> set[int]:
    repl = m._entries[session.info.id].repl
    assert repl is not None
    return repl.pids()


async def still_there(session: LeasedSession) -> None:
    after = await session.run_cell("print(secret)")
    assert (after.stdout, after.stderr) == ("repl-secret-d41f\n", ""), after


# ---------------------------------------------------------------- commands cannot reach the REPL


@pytest.mark.parametrize(
    "attack",
    [
        "kill -9 -1",  # everything this uid may signal
        "for p in /proc/[0-9]*; do kill -9 ${p#/proc/} 2>/dev/null; done; true",
        "pkill -9 -f python3; pkill -9 -u $(id -u); true",
        "kill -STOP -1; kill -9 -1",
        "python3 -c 'import os, signal\nfor p in range(2, 4000):\n"
        "  try: os.kill(p, signal.SIGKILL)\n  except OSError: pass'",
    ],
)
async def test_a_command_cannot_kill_the_repl(m: ContainerManager, attack: str) -> None:
    async with container(m) as session:
        await session.run_cell(SECRET_CELL)
        await session.run_bash(attack)
        await still_there(session)


async def test_a_command_does_not_see_the_repl_at_all(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell(SECRET_CELL)
        census = await session.run_bash("ps -eo pid,comm --no-headers")
        # Only the command's own sandbox: bwrap's init, the executor (the one python3), the command.
        comms = [line.split()[1] for line in census.stdout.splitlines()]
        assert comms.count("python3") == 1 and set(comms) <= {"bash", "bwrap", "ps", "python3"}, comms


@pytest.mark.parametrize(
    "attack",
    [
        # Read the interpreter's memory or fds through /proc, by every pid a command can name.
        "import os\nfound = []\nfor p in range(1, 2000):\n"
        "    if p == os.getpid(): continue\n"
        "    for leaf in ('mem', 'environ', 'fd/1', 'maps'):\n"
        "        try:\n"
        "            fd = os.open(f'/proc/{p}/{leaf}', os.O_RDONLY | os.O_NONBLOCK)\n"
        "            data = os.read(fd, 1 << 16)\n"
        "            os.close(fd)\n"
        "        except OSError: continue\n"
        "        if b'repl-secret' in data: found.append((p, leaf))\n"
        "print(found)",
        # ptrace and process_vm_readv on every pid.
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nhits = []\n"
        "for p in range(1, 2000):\n"
        "    if p == os.getpid(): continue\n"
        "    if libc.ptrace(16, p, 0, 0) == 0: hits.append(('ptrace', p))\n"
        "print(hits)",
        # Write into the interpreter's stdin/stdout pipes through /proc/<pid>/fd.
        "import os\nhits = []\nfor p in range(1, 2000):\n"
        "    for fd in range(0, 8):\n"
        "        try:\n"
        "            w = os.open(f'/proc/{p}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)\n"
        "        except OSError: continue\n"
        "        if p != os.getpid(): hits.append((p, fd))\n"
        "        os.close(w)\n"
        "print(hits)",
    ],
    ids=["proc-mem", "ptrace", "pipes"],
)
async def test_a_command_cannot_read_or_write_into_the_repl(m: ContainerManager, attack: str) -> None:
    async with container(m) as session:
        await session.run_cell(SECRET_CELL)
        result = await session.run_python(attack)
        assert result.stdout == "[]\n", (result.stdout, result.stderr)
        await still_there(session)


async def test_between_cells_the_repl_is_frozen(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell(
            "import threading, time\nticks = 0\ndef spin():\n    global ticks\n"
            "    while True:\n        ticks += 1\n        time.sleep(0.001)\n"
            "threading.Thread(target=spin, daemon=True).start()"
        )
        repl = m._entries[session.info.id].repl
        assert repl is not None and repl.cgroup is not None
        if repl.cgroup.freezer is None:
            pytest.skip("no cgroup freezer on this machine")
        # Every process of the REPL's sandbox is frozen while no cell runs (bwrap outside included);
        # the kernel completes a freeze asynchronously (a few ms here), so wait for it, bounded.
        for _ in range(100_000):
            if repl.cgroup.frozen():
                break
        assert repl.cgroup.frozen()
        for pid in repl_host_pids(m, session):
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            assert state in ("D", "T", "S"), (pid, state)  # frozen tasks sleep in the refrigerator
        await session.run_bash("sleep 0.2")  # a command's time: the spinning thread gets none of it
        before = await session.run_cell("print(ticks)")
        assert int(before.stdout) > 0


# ---------------------------------------------------------------- nothing a cell leaves reaches a command


@pytest.mark.parametrize(
    "implant",
    [
        # A background thread that waits for a command and reads its command line.
        "import threading, os, time\nseen = []\ndef spy():\n    while True:\n"
        "        for p in os.listdir('/proc'):\n            try: seen.append(open(f'/proc/{p}/cmdline').read())\n"
        "            except OSError: pass\n        time.sleep(0.001)\n"
        "threading.Thread(target=spy, daemon=True).start()",
        # A forked child that does the same, detached into its own session.
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n"
        "        for p in os.listdir('/proc'):\n            try:\n"
        "                if 'needle-' + 'command' in open(f'/proc/{p}/cmdline').read():\n"
        "                    open('/workspace/caught', 'w').write('x')\n"
        "            except OSError: pass\n        time.sleep(0.001)",
        # A daemon started through subprocess (its pattern is spelt so its own command line cannot match).
        "import subprocess\nsubprocess.Popen(['bash', '-c', r'while true; do for f in /proc/[0-9]*/cmdline; do "
        'case "$(tr "\\0" " " < $f 2>/dev/null)" in *needle-comman[d]*) echo $f >> /workspace/caught;; esac; '
        "done; done'], start_new_session=True)",
    ],
    ids=["thread", "forked-child", "daemon"],
)
async def test_a_cell_cannot_spy_on_later_commands(m: ContainerManager, implant: str) -> None:
    async with container(m) as session:
        planted = await session.run_cell(implant)
        assert planted.return_code == 0, planted.stderr
        await session.run_bash("echo needle-command; sleep 0.3")
        caught = await session.run_bash("ls /workspace/caught 2>&1; true")
        assert "No such file" in caught.stdout
        look = await session.run_cell("print(any('needle-' + 'command' in c for c in globals().get('seen', [])))")
        assert look.stdout == "False\n", look.stderr


async def test_the_repl_cannot_see_or_signal_command_processes(m: ContainerManager) -> None:
    async with container(m) as session:
        census = await session.run_cell(
            "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
            "import socket\nprint(sorted(n for _, n in socket.if_nameindex()))"
        )
        pids, ifaces = census.stdout.splitlines()
        assert pids == str(sorted({1, 2, 3})), pids  # bwrap's init, the supervisor, the interpreter
        assert ifaces == "['lo']"


async def test_the_interpreter_is_not_dumpable(m: ContainerManager) -> None:
    async with container(m) as session:
        result = await session.run_cell(
            "import ctypes\nlibc = ctypes.CDLL(None)\nprint(libc.prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE
        )
        assert result.stdout == "0\n"
        mine = await session.run_cell("import os\nprint(os.stat(f'/proc/{os.getpid()}/mem').st_uid)")
        assert mine.stdout != "1000\n"  # owned by root (overflow uid inside): not the sandbox user's


async def test_a_fork_bomb_in_a_cell_ends_with_the_cell(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell(SECRET_CELL)
        bomb = await session.run_cell(
            "import os, threading\ndef bomb():\n    while True:\n        try: os.fork()\n        except OSError: pass\n"
            "threading.Thread(target=bomb, daemon=True).start()\nimport time\ntime.sleep(0.3)",
            timeout=20.0,  # the limit is not under test here: room for a busy machine
        )
        assert bomb.error_code is None
        ok = await session.run_bash("echo alive")
        assert ok.stdout == "alive\n"
