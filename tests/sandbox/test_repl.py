"""The persistent Python REPL through the full stack (manager → the REPL's own sandbox → its
supervisor → the interpreter): state, top-level await, the per-cell limit, crashes, files, eviction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.manager import ContainerManager

from .conftest import container, open_manager, private_dir

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def m(base_dir: Path, doctor_report: DoctorReport) -> AsyncIterator[ContainerManager]:
    data = private_dir(base_dir, "repl-")
    async with open_manager(data, doctor_report, spare_containers=0, command_timeout_s=20.0) as manager:
        yield manager


async def test_state_persists_between_cells_and_leases(m: ContainerManager) -> None:
    info = await m.create("alice")
    try:
        async with m.lease(info.id, "alice") as session:
            first = await session.run_cell("import math\nx = 41\nprint('set')")
            assert (first.stdout, first.stderr, first.return_code) == ("set\n", "", 0)
            second = await session.run_cell("x += 1\nprint(x, math.pi > 3)")
            assert second.stdout == "42 True\n"
        async with m.lease(info.id, "alice") as session:
            third = await session.run_cell("print(x)")
            assert third.stdout == "42\n" and third.stderr == ""
    finally:
        await m.delete(info.id, "alice")


async def test_top_level_await_and_tasks_that_outlive_a_cell(m: ContainerManager) -> None:
    async with container(m) as session:
        result = await session.run_cell(
            "import asyncio\nasync def twice(v):\n    await asyncio.sleep(0)\n    return 2 * v\n"
            "print(await asyncio.gather(twice(1), twice(2)))"
        )
        assert (result.stdout, result.return_code) == ("[2, 4]\n", 0), result.stderr
        again = await session.run_cell("print(await twice(21))")
        assert again.stdout == "42\n"


async def test_an_exception_is_a_result_and_the_state_stays(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell("kept = 'yes'")
        failed = await session.run_cell("def f():\n    return 1 / 0\nf()")
        assert failed.return_code == 1 and failed.error_code is None
        assert 'File "<cell 2>", line 2, in f' in failed.stderr and "return 1 / 0" in failed.stderr
        assert failed.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
        exited = await session.run_cell("import sys\nsys.exit(3)")
        assert exited.return_code == 3
        assert (await session.run_cell("print(kept)")).stdout == "yes\n"


async def test_a_cell_past_its_limit_is_interrupted_and_the_repl_keeps_its_state(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell("count = 0")
        slow = await session.run_cell(
            "import time\nfor _ in range(10**6):\n    count += 1\n    time.sleep(0.01)",
            timeout=1.5,  # room for the loop to start on a busy machine
        )
        assert slow.error_code is None and slow.return_code == 1
        assert "KeyboardInterrupt" in slow.stderr
        assert "detection_timeout: the cell exceeded its 1.5-second wall-clock limit" in slow.stderr
        after = await session.run_cell("print(count > 0)")
        assert (after.stdout, after.stderr) == ("True\n", "")


async def test_a_cell_that_ignores_the_interrupt_is_killed_and_the_next_cell_says_so(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell("lost = 1")
        stubborn = await session.run_cell(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)", timeout=0.3
        )
        assert stubborn.return_code != 0 and stubborn.error_code is None
        assert "detection_timeout" in stubborn.stderr and "the Python REPL ended during this cell" in stubborn.stderr
        fresh = await session.run_cell("print('lost' in globals())")
        assert fresh.stdout == "False\n"
        assert "a fresh Python REPL was started for this cell" in fresh.stderr


@pytest.mark.parametrize(
    "crash",
    [
        "import os\nos._exit(7)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "import ctypes\nctypes.string_at(0)",
    ],
)
async def test_a_crashed_interpreter_restarts_with_a_note(m: ContainerManager, crash: str) -> None:
    async with container(m) as session:
        await session.run_cell("before = 1")
        died = await session.run_cell(crash)
        assert died.return_code != 0
        assert "the Python REPL ended during this cell" in died.stderr
        fresh = await session.run_cell("print('before' in globals())")
        assert fresh.stdout == "False\n" and fresh.return_code == 0
        assert "a fresh Python REPL was started for this cell" in fresh.stderr
        assert (await session.run_cell("print('ok')")).stderr == ""  # said once


async def test_a_killed_repl_sandbox_restarts_with_a_note(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell("before = 1")
        # The cell kills its own supervisor: the REPL's whole sandbox goes down.
        gone = await session.run_cell(
            "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(5)"
        )
        assert gone.error_code == "unavailable"
        fresh = await session.run_cell("print('before' in globals())")
        assert fresh.stdout == "False\n"
        assert "a fresh Python REPL was started for this cell: the REPL's sandbox stopped" in fresh.stderr


async def test_bash_and_the_editor_work_beside_the_repl_in_the_same_workspace(m: ContainerManager) -> None:
    async with container(m) as session:
        await session.run_cell("open('from_cell.txt', 'w').write('cell\\n')\nstate = 'kept'")
        seen = await session.run_bash("cat from_cell.txt && echo bash > from_bash.txt")
        assert seen.stdout == "cell\n"
        await session.create("edited.txt", "editor\n")
        back = await session.run_cell("print(open('from_bash.txt').read() + open('edited.txt').read() + state)")
        assert back.stdout == "bash\neditor\nkept\n"
        # A fresh `python` from bash is another process: the cell's variables are not there.
        other = await session.run_python("print('state' in globals())")
        assert other.stdout == "False\n"


async def test_output_dir_files_of_a_cell_are_returned(m: ContainerManager) -> None:
    async with container(m) as session:
        result = await session.run_cell(
            "import os\nopen(os.path.join(os.environ['OUTPUT_DIR'], 'r.txt'), 'w').write('hello')\nprint('ok')"
        )
        assert [(f.name, f.data) for f in result.files] == [("r.txt", b"hello")]
        again = await session.run_cell("import os\nprint(os.listdir(os.environ['OUTPUT_DIR']))")
        assert again.stdout == "[]\n"


async def test_processes_a_cell_starts_are_swept_after_it(m: ContainerManager) -> None:
    async with container(m) as session:
        started = await session.run_cell(
            "import subprocess\np = subprocess.Popen(['sleep', '1000'])\n"
            "q = subprocess.Popen(['setsid', 'sleep', '1000'])\nprint(p.pid, q.pid)"
        )
        assert started.return_code == 0
        # Alive means not a zombie: the killed child of the interpreter waits for it to be reaped.
        census = await session.run_cell(
            "import os\nalive = []\nfor x in filter(str.isdigit, os.listdir('/proc')):\n"
            "    state = open(f'/proc/{x}/stat').read().rpartition(')')[2].split()[0]\n"
            "    alive += [int(x)] if state != 'Z' else []\n"
            "print(sorted(alive) == sorted({1, os.getppid(), os.getpid()}), sorted(alive))"
        )
        assert census.stdout.startswith("True"), census.stdout


async def test_idle_eviction_ends_the_repl_and_the_next_cell_says_so(
    base_dir: Path, doctor_report: DoctorReport
) -> None:
    data = private_dir(base_dir, "repl-evict-")
    async with open_manager(data, doctor_report, spare_containers=0, idle_evict_s=3600.0) as manager:
        info = await manager.create("bob")
        async with manager.lease(info.id, "bob") as session:
            await session.run_cell("x = 1")
        # What the janitor does once the container has been idle long enough.
        entry = manager._entries[info.id]
        async with entry.lock:
            await manager._evict(entry, "the container was idle for over 300 s and was stopped")
        async with manager.lease(info.id, "bob") as session:
            fresh = await session.run_cell("print('x' in globals())")
        assert fresh.stdout == "False\n"
        assert "a fresh Python REPL was started for this cell: the container was idle for over 300 s" in fresh.stderr
        await manager.delete(info.id, "bob")
