"""The executor itself: its copy of the framing, its pure helpers, and its behaviour at the protocol
level (raw frames, no ``ExecutorClient``), including the ``--kill-all`` mode in a PID namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from execbridge.sandbox import executor, protocol
from execbridge.sandbox.executor_image import EXECUTOR_SCRIPT, executor_argv, executor_bytecode

EXECUTOR_PYTHON = "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else sys.executable
LIMITS = {"timeout": 5.0, "output_limit": 4096, "file_limit": 4096, "file_count": 4, "file_total": 8192}


def plain(value: Any) -> Any:
    """The executor decodes binary values as memoryviews; compare them as bytes."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------- framing: the two copies agree


def test_protocol_versions_match() -> None:
    assert executor.PROTOCOL_VERSION == protocol.PROTOCOL_VERSION
    assert executor.FILE_CHUNK == protocol.FILE_CHUNK
    assert executor.MAX_LISTED == protocol.MAX_LISTED


MESSAGES = [
    {"op": "ping", "id": 1},
    {"id": 2, "status": "ok", "stdout": b"", "stderr": b"err", "files": [], "duration_ms": 1.25, "x": None},
    {"id": 3, "text": 'ünïcode ✓ \n\t"quoted" \\ \x00', "lone": "\udcff\ud800", "nested": {"a": [1, [2, {}]]}},
    {"id": 4, "files": [{"name": "a.bin", "data": os.urandom(5 << 20)}, {"name": "b", "data": b"\x00" * 3}]},
    {"id": 5, "flags": [True, False], "big": 2**40, "neg": -1, "float": 0.1},
    {"id": 6, "op": "file", "name": "bad\ufffd.bin", "data": os.urandom(executor.FILE_CHUNK), "end": None},
]


@pytest.mark.parametrize("message", MESSAGES)
def test_gateway_frames_decode_in_the_executor(message: dict[str, Any]) -> None:
    frame = protocol.encode_frame(message)
    header_len, body_len = protocol.PREFIX.unpack_from(frame)
    header = frame[8 : 8 + header_len]
    body = frame[8 + header_len :]
    assert len(body) == body_len
    assert plain(executor.decode_frame(header, body)) == message


@pytest.mark.parametrize("message", MESSAGES)
def test_executor_frames_decode_in_the_gateway(message: dict[str, Any]) -> None:
    frame = b"".join(bytes(piece) for piece in executor.encode_frame(message))
    header_len, body_len = protocol.PREFIX.unpack_from(frame)
    assert len(frame) == 8 + header_len + body_len
    assert protocol.decode_frame(frame[8 : 8 + header_len], frame[8 + header_len :]) == message


@pytest.mark.parametrize(
    ("header", "body"),
    [
        (b"[1, 2]", b""),
        (b'{"a": {"$b": [0, 5]}}', b"abc"),
        (b'{"a": {"$b": [-1, 1]}}', b"abc"),
        (b'{"a": {"$b": "x"}}', b""),
        (b"{not json", b""),
    ],
)
def test_bad_frames_are_rejected_by_both(header: bytes, body: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_frame(header, body)
    with pytest.raises(ValueError):
        executor.decode_frame(header, body)


async def test_frame_sizes_are_checked_before_reading() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(protocol.PREFIX.pack(10, 1 << 30))
    with pytest.raises(protocol.ProtocolError, match="body"):
        await protocol.read_frame(reader, max_body=1 << 20)


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("data", "kept"),
    [
        (b"abc", b"abc"),
        ("é".encode(), "é".encode()),
        ("é".encode()[:1], b""),
        (b"a" + "€".encode()[:2], b"a"),
        (b"a" + "😀".encode()[:3], b"a"),
        (b"a" + "😀".encode(), b"a" + "😀".encode()),
    ],
)
def test_trim_partial_utf8(data: bytes, kept: bytes) -> None:
    assert executor._trim_partial_utf8(data) == kept


def test_replacement_diff_with_crlf_and_unicode() -> None:
    text = "ä\r\nö €\r\nü\r\n"
    start = text.index("€")
    assert executor._replacement_diff(text, start, "€", "£\r\n£") == {
        "old_start": 2,
        "old_lines": 1,
        "new_start": 2,
        "new_lines": 2,
        "lines": ["-ö €\r", "+ö £\r", "+£\r"],
    }


# ---------------------------------------------------------------- raw protocol against a live executor


class Raw:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    async def send(self, message: dict[str, Any]) -> None:
        self.stdin.write(protocol.encode_frame(message))
        await self.stdin.drain()

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(protocol.read_frame(self.stdout, max_body=1 << 30), timeout)

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        return await self.recv()


async def spawn(argv: list[str]) -> Raw:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return Raw(proc)


@pytest.fixture
async def raw(tmp_path: Path) -> AsyncIterator[Raw]:
    (tmp_path / "ws").mkdir()
    r = await spawn(executor_argv(EXECUTOR_PYTHON, workspace=tmp_path / "ws", output_root=tmp_path / "out"))
    ready = await r.recv()
    assert (ready["id"], ready["op"], ready["status"]) == (0, "ready", "ok")
    yield r
    if r.proc.returncode is None:
        r.stdin.close()
        try:
            await asyncio.wait_for(r.proc.wait(), 5)
        except TimeoutError:
            r.proc.kill()
            await r.proc.wait()


async def test_bad_requests_get_an_error_answer_and_the_executor_carries_on(raw: Raw) -> None:
    unknown = await raw.call({"op": "frobnicate", "id": 7})
    assert (unknown["id"], unknown["status"]) == (7, "internal_error")
    assert "frobnicate" in unknown["message"]
    missing = await raw.call({"op": "view", "id": 8})  # no path
    assert (missing["id"], missing["status"]) == (8, "internal_error")
    pong = await raw.call({"op": "ping", "id": 9})
    assert (pong["id"], pong["status"], pong["op"]) == (9, "ok", "pong")


async def test_a_stale_cancel_gets_no_answer(raw: Raw) -> None:
    await raw.send({"op": "cancel", "id": 41})
    pong = await raw.call({"op": "ping", "id": 42})
    assert pong["id"] == 42


async def test_cancel_kills_the_running_command(raw: Raw, tmp_path: Path) -> None:
    command = "echo go; touch started; sleep 30 & sleep 30"
    await raw.send({"op": "bash", "id": 1, "command": command, **LIMITS, "timeout": 30.0})
    started = tmp_path / "ws" / "started"
    for _ in range(3000):  # wait until the command is under way, however busy the machine
        if started.exists():
            break
        await asyncio.sleep(0.01)
    await raw.send({"op": "cancel", "id": 1})
    # Uncancelled, the answer would come only when the 30 s timeout ends the command.
    answer = await asyncio.wait_for(raw.recv(), 20)
    assert (answer["id"], answer["cancelled"], answer["stdout"]) == (1, True, b"go\n")


async def test_a_malformed_frame_ends_the_executor(raw: Raw) -> None:
    raw.stdin.write(protocol.PREFIX.pack(5, 0) + b"{oops")
    await raw.stdin.drain()
    assert await asyncio.wait_for(raw.proc.wait(), 5) == 2


async def test_a_request_during_a_command_is_a_protocol_violation(raw: Raw) -> None:
    await raw.send({"op": "bash", "id": 1, "command": "sleep 30", **LIMITS, "timeout": 30.0})
    await raw.send({"op": "ping", "id": 2})
    assert await asyncio.wait_for(raw.proc.wait(), 5) == 2


async def test_closing_stdin_mid_command_kills_it_and_exits(raw: Raw, tmp_path: Path) -> None:
    await raw.send({"op": "bash", "id": 1, "command": "sleep 30 & echo $! > bg.pid; sleep 30", **LIMITS})
    pid_file = tmp_path / "ws" / "bg.pid"
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.01)
    raw.stdin.close()
    assert await asyncio.wait_for(raw.proc.wait(), 5) == 0
    pid = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{pid}") or b" Z " in Path(f"/proc/{pid}/stat").read_bytes()


async def test_user_code_cannot_take_the_executor_down(raw: Raw) -> None:
    hostile = [
        "import sys; sys.stdout = None; print('lost')",
        "raise KeyboardInterrupt",
        "import os; os.close(0); os.close(1); os.close(2)",
        "def f(): f()\nf()",
        "import signal, os; os.kill(os.getpid(), signal.SIGSEGV)",
        "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
    ]
    for i, code in enumerate(hostile, 1):
        answer = await raw.call({"op": "python", "id": i, "code": code, **LIMITS})
        assert (answer["id"], answer["status"], answer["timed_out"]) == (i, "ok", False), code
    codes = [await raw.call({"op": "python", "id": 100 + i, "code": "print(1)", **LIMITS}) for i in range(2)]
    assert [c["stdout"] for c in codes] == [b"1\n", b"1\n"]


async def test_startup_answers_the_first_command() -> None:
    """Spawn → ready → first result, without a sandbox. The times are printed for the record; how fast
    it must be is benchmarks/bench_sandbox.py's to say, not a timed assertion's."""
    with_out = Path(os.environ.get("TMPDIR", "/tmp"))
    started = time.perf_counter()
    r = await spawn(executor_argv(EXECUTOR_PYTHON, workspace=with_out, output_root=with_out / "eb-out"))
    await r.recv()
    ready = time.perf_counter() - started
    first = await r.call({"op": "bash", "id": 1, "command": "echo 1", **LIMITS})
    total = time.perf_counter() - started
    assert first["stdout"] == b"1\n"
    r.stdin.close()
    await r.proc.wait()
    print(f"executor ready in {ready * 1000:.1f} ms, first result in {total * 1000:.1f} ms")


def _python_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True
    ).stdout.decode()


@pytest.mark.skipif(
    _python_version(EXECUTOR_PYTHON) != _python_version(sys.executable), reason="bytecode needs the same Python"
)
async def test_the_executor_runs_from_bytecode(tmp_path: Path) -> None:
    pyc = tmp_path / "executor.pyc"
    pyc.write_bytes(executor_bytecode())
    (tmp_path / "ws").mkdir()
    r = await spawn(executor_argv(EXECUTOR_PYTHON, pyc, workspace=tmp_path / "ws", output_root=tmp_path / "out"))
    assert (await r.recv())["op"] == "ready"
    answer = await r.call({"op": "python", "id": 1, "code": "print(6 * 7)", **LIMITS})
    assert answer["stdout"] == b"42\n"
    r.stdin.close()
    assert await r.proc.wait() == 0


def test_the_bytecode_carries_every_module_of_the_package() -> None:
    import marshal

    script = marshal.loads(executor_bytecode()[16:])
    (modules,) = [c for c in script.co_consts if type(c) is tuple and c and type(c[0]) is tuple]
    names = {name for name, _code, _is_package in modules}
    stems = {p.stem for p in EXECUTOR_SCRIPT.parent.glob("*.py")} - {"__main__"}
    assert names == {"executor" if stem == "__init__" else f"executor.{stem}" for stem in stems}


SEES_NOTHING = """
import sys
assert not [m for m in sys.modules if m == "executor" or m.startswith("executor.")], sorted(sys.modules)
assert "__main__" not in {getattr(f, "__module__", None) for f in sys.meta_path}, sys.meta_path
assert not [p for p in sys.path if "sandbox" in p or p.endswith(".pyc")], sys.path
try:
    import executor
except ModuleNotFoundError:
    print("no executor")
open("executor.py", "w").write("X = 42\\n")
"""


@pytest.mark.parametrize("form", ["source", "bytecode"])
async def test_user_code_sees_nothing_of_the_executor(tmp_path: Path, form: str) -> None:
    """Its modules and its path are gone before user code runs: ``import executor`` is the user's."""
    script = EXECUTOR_SCRIPT
    if form == "bytecode":
        if _python_version(EXECUTOR_PYTHON) != _python_version(sys.executable):
            pytest.skip("bytecode needs the same Python")
        script = tmp_path / "executor.pyc"
        script.write_bytes(executor_bytecode())
    (tmp_path / "ws").mkdir()
    r = await spawn(executor_argv(EXECUTOR_PYTHON, script, workspace=tmp_path / "ws", output_root=tmp_path / "out"))
    await r.recv()
    first = await r.call({"op": "python", "id": 1, "code": SEES_NOTHING, **LIMITS})
    assert (first["stdout"], first["stderr"]) == (b"no executor\n", b"")
    second = await r.call({"op": "python", "id": 2, "code": "import executor; print(executor.X)", **LIMITS})
    assert second["stdout"] == b"42\n", second["stderr"]
    r.stdin.close()
    assert await r.proc.wait() == 0


# ---------------------------------------------------------------- --kill-all in a PID namespace


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare --pid (root or user namespaces)")
async def test_kill_all_mode_leaves_nothing_running_in_the_namespace(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    argv = executor_argv(EXECUTOR_PYTHON, EXECUTOR_SCRIPT, workspace=tmp_path / "ws", output_root=tmp_path / "out")
    r = await spawn(["unshare", "--pid", "--fork", "--mount-proc", *argv, "--kill-all"])
    try:
        ready = await r.recv()
        assert ready["kill_all"] is True
        assert ready["pid"] == 1
        first = await r.call(
            {
                "op": "bash",
                "id": 1,
                "command": "(setsid sleep 1000 &); nohup sleep 1000 >/dev/null 2>&1 & echo ok",
                **LIMITS,
            }
        )
        assert first["stdout"] == b"ok\n"
        census = "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()) == [1, os.getpid()])"
        second = await r.call({"op": "python", "id": 2, "code": census, **LIMITS})
        assert second["stdout"] == b"True\n", second["stderr"]
        timed = await r.call(
            {"op": "bash", "id": 3, "command": "(setsid sleep 1000 &); sleep 1000", **LIMITS, "timeout": 0.3}
        )
        assert timed["timed_out"] is True
        third = await r.call({"op": "python", "id": 4, "code": census, **LIMITS})
        assert third["stdout"] == b"True\n"
    finally:
        r.stdin.close()
        await asyncio.wait_for(r.proc.wait(), 5)


def _tasks_named(name: str) -> list[str]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/comm") as comm:
                    if comm.read().strip() == name:
                        found.append(f"{pid}/{tid}")
    return found


async def test_a_zombie_looking_leader_with_a_live_thread_is_killed(raw: Raw, tmp_path: Path) -> None:
    """Without a namespace (only the executor's subtree is swept): a leader that ended with the raw
    ``exit`` syscall shows ``Z`` while its thread runs on; the sweep must see through that."""
    name = f"impl{os.getpid() % 100000}"
    # The thread says "ready" once its leader shows Z: the command returns only with the disguise in place.
    (tmp_path / "ws" / "implant.py").write_text(  # the raw executor's workspace
        "import ctypes, os, platform, threading, time\n"
        "libc = ctypes.CDLL(None)\n"
        f"libc.prctl(15, b'{name}', 0, 0, 0)\n"
        "def linger():\n"
        f"    libc.prctl(15, b'{name}', 0, 0, 0)\n"
        "    stat = lambda: open(f'/proc/{os.getpid()}/stat').read()\n"
        "    while stat()[stat().rfind(')') + 2] != 'Z':\n"
        "        time.sleep(0.001)\n"
        "    open('ready', 'w').close()\n"
        "    time.sleep(1000)\n"
        "threading.Thread(target=linger).start()\n"
        "libc.syscall({'x86_64': 60, 'aarch64': 93}[platform.machine()], 0)\n"
    )
    command = (
        "python3 implant.py & for _ in $(seq 500); do [ -e ready ] && break; sleep 0.01; done; "
        "[ -e ready ] && echo started"
    )
    answer = await raw.call({"op": "bash", "id": 1, "command": command, **LIMITS})
    assert answer["stdout"] == b"started\n"
    assert _tasks_named(name) == []
