"""The persistent Python REPL: one long-lived interpreter whose cells share their globals.

Runs in the REPL's own sandbox (``--repl``; see docs/sandbox.md, "The persistent REPL"), where this
executor is the *supervisor* and forks the *interpreter*, the one process allowed to outlive a
request. A cell:

    SIGCONT the interpreter → send it the code → pump its stdout/stderr → "done <rc>" (or the deadline:
    SIGINT, then SIGKILL after a grace) → SIGSTOP it and wait until every thread is stopped → sweep
    every other process the cell started → collect ``$OUTPUT_DIR`` → answer like a command.

Between cells the interpreter is stopped (and the gateway freezes the REPL's cgroup too), so a
thread a cell left behind runs only while a later cell runs. The interpreter is non-dumpable
(inherited from the executor), in its own session, and sees the protocol fds of neither side.

Interpreter side (``interpreter.py``, in the forked child): a fresh ``__main__`` whose dict is the
REPL's state; each cell is compiled with top-level ``await`` allowed and, when it awaits, run on one
event loop that lives as long as the REPL (tasks a cell leaves pending go on in later cells). A
cell's exception is printed as a traceback and gives rc 1 (``SystemExit`` its code): the REPL
carries on either way. Cells reach the supervisor through two pipes: frames in (the supervisor is
trusted), short lines out (``done <rc>``): the supervisor trusts nothing the interpreter says and
reads at most ``_CTL_LIMIT`` bytes per cell plus, per pause, one bounded ``call`` message.

Programmatic tool calling (docs/architecture.md, "A cell that calls client tools"): a cell's request
names the client tools it may call; the interpreter defines each as ``async def name(input: dict) ->
str``. Awaiting them queues the call; once the event loop has nothing else ready, the interpreter
says ``call <n>\n<n bytes of JSON: [{"seq", "name", "input"}]>`` and blocks reading its command pipe.
The supervisor then SIGSTOPs it and answers the request ``paused`` with the calls (the output so far,
the cell's remaining time and its ``$OUTPUT_DIR`` stay here); a later ``resume`` request carries the
replies (``{"seq", "text"}`` or ``{"seq", "timeout"}``), which go down the command pipe, and the
cell runs on to its end or its next pause. Time spent paused does not count towards the cell's limit.

Must not: let a cell's process outlive the cell (the reaper sweeps everything but the interpreter);
report a timed-out cell as ``timed_out`` (that is the gateway's ``execution_time_exceeded`` for a
command; a cell past its limit is a normal result, rc 1 and ``detection_timeout`` on stderr); wait
without a deadline.
"""

import _signal as _sig
import os
import select
import time

from .common import field_int, field_str, ignore, log, read_small
from .framing import _loads, write_frame
from .interpreter import CALL_LIMIT, INTERRUPT_GRACE_S, interpreter_main
from .runner import Capture, wait_status_code

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .outputs import OutputDirs
    from .reaper import Reaper
    from .runner import Runner

_STOP_WAIT_S = 2.0  # how long SIGSTOP may take to stop every thread of the interpreter
_CTL_LIMIT = 4096  # bytes the interpreter may say per cell, besides its ``call`` messages
_CALL_LINE_LIMIT = 32  # "call <n>" or "done <rc>"
_READ_CHUNK = 1 << 16


class _Cell:
    """One cell across its pauses: its output so far, the time it has left, its ``$OUTPUT_DIR``."""

    def __init__(self, timeout: float, output_limit: int, file_limits: "tuple[int, int, int]") -> None:
        self.timeout = timeout
        self.remaining = timeout  # run time left; pauses do not count
        self.captures = (Capture(output_limit), Capture(output_limit))
        self.file_limits = file_limits
        self.out_dir = ""
        self.notes: list[str] = []


def _is_reply(reply: object) -> bool:
    if not isinstance(reply, dict) or type(reply.get("seq")) is not int:
        return False
    if "text" in reply:
        return isinstance(reply["text"], str)
    return type(reply.get("timeout")) in (int, float)


def _checked_calls(payload: bytes) -> "list[Any] | None":
    """The calls of a ``call`` message, or None if it is not ``[{"seq": int, "name": str, "input": {}}]``."""
    try:
        calls = _loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(calls, list) or not calls:
        return None
    for call in calls:
        if (
            not isinstance(call, dict)
            or type(call.get("seq")) is not int
            or not isinstance(call.get("name"), str)
            or not isinstance(call.get("input"), dict)
        ):
            return None
    return calls


class Repl:
    """The supervisor's side: one interpreter at a time, started on the first cell, restarted after it died."""

    def __init__(self, proto_in: int, *, runner: "Runner", reaper: "Reaper", outputs: "OutputDirs") -> None:
        self.proto_in = proto_in
        self.runner = runner
        self.reaper = reaper
        self.outputs = outputs
        self.pid: int | None = None
        self.fds: dict[str, int] = {}
        self.cells = 0  # cells this interpreter has run
        self.lost: str | None = None  # why the previous interpreter is gone, for the next cell's note
        self.suspended: _Cell | None = None  # the cell waiting for the replies to its tool calls

    # ------------------------------------------------------------ the interpreter's life

    def _start(self) -> None:
        runner = self.runner
        if not runner.warm:
            runner.warm_up()
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        cmd_r, cmd_w = os.pipe2(os.O_CLOEXEC)
        ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
        env = dict(runner.child_env)
        os.chdir(runner.workspace)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the interpreter; always ends in os._exit
            try:
                os.setsid()  # a cell's killpg(0) reaches the interpreter's group, never the supervisor
                os.dup2(runner.devnull, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                _close_all_but(cmd_r, ctl_w)  # no protocol fd of the supervisor may reach user code
                interpreter_main(cmd_r, ctl_w, env, runner.plain_flags)
            except BaseException as exc:
                with ignore(BaseException):
                    os.write(2, f"executor: the REPL could not start: {exc!r}\n".encode())
            os._exit(127)
        for fd in (out_w, err_w, cmd_r, ctl_w):
            os.close(fd)
        for fd in (out_r, err_r, ctl_r):
            os.set_blocking(fd, False)
        self.pid = pid
        self.fds = {"out": out_r, "err": err_r, "cmd": cmd_w, "ctl": ctl_r}
        self.cells = 0
        self.reaper.protect(pid)

    def _gone(self, reason: str, *, reaped: bool = False) -> None:
        """The interpreter died (or is to be killed): forget it; the next cell starts a fresh one.

        ``reaped``: its exit status was already collected (its pid may belong to another process now).
        """
        pid = self.pid
        if pid is not None:
            if not reaped:
                with ignore(OSError):
                    os.kill(pid, _sig.SIGKILL)
                self._wait_exit(pid)
            self.reaper.unprotect(pid)
        for fd in self.fds.values():
            with ignore(OSError):
                os.close(fd)
        self.pid = None
        self.fds = {}
        self.lost = reason

    def _wait_exit(self, pid: int) -> "int | None":
        give_up = time.monotonic() + _STOP_WAIT_S
        while True:
            status = self.reaper.main_status(pid)
            if status is not None or time.monotonic() > give_up:
                return status
            time.sleep(0.0005)

    def close(self) -> None:
        """The executor is leaving: the interpreter goes with it."""
        if self.pid is not None:
            self._gone("the executor stopped")

    # ------------------------------------------------------------ one cell

    def cell(self, request: "dict[str, Any]") -> "dict[str, Any]":
        code = field_str(request, "code")
        timeout = float(request["timeout"])
        tools = request.get("tools") or []
        if not isinstance(tools, list) or not all(isinstance(t, str) and t.isidentifier() for t in tools):
            raise ValueError("'tools' must be a list of Python identifiers")
        cell = _Cell(
            timeout,
            field_int(request, "output_limit"),
            (field_int(request, "file_limit"), field_int(request, "file_count"), field_int(request, "file_total")),
        )
        if self.suspended is not None:
            # The gateway settles a waiting cell before it sends another; should one come anyway, the
            # waiting cell cannot finish any more, and neither can its interpreter's state be trusted.
            self.suspended = None
            self._gone("a new cell came while the previous one waited for tool results")
        if self.pid is not None and not self._resume():
            self._gone("it was found dead before this cell")
        if self.pid is None:
            if self.lost is not None:
                cell.notes.append(
                    f"a fresh Python REPL was started for this cell: the previous one ended ({self.lost}); "
                    "variables, imports and definitions from earlier cells are gone (files are kept)"
                )
                self.lost = None
            self._start()
        pid = self.pid
        assert pid is not None
        self.cells += 1
        cell.out_dir = self.outputs.fresh()
        message = {"code": code, "cell": self.cells, "env": {"OUTPUT_DIR": cell.out_dir}, "tools": tools}
        with ignore(OSError):  # it died meanwhile: the supervision below sees it at once
            write_frame(self.fds["cmd"], message)
        return self._run(cell, pid, request.get("id"))

    def resume(self, request: "dict[str, Any]") -> "dict[str, Any]":
        """Carry the replies to the suspended cell's calls down to it and run it on."""
        replies = request.get("replies")
        if not isinstance(replies, list) or not all(_is_reply(r) for r in replies):
            raise ValueError("'replies' must be a list of {seq, text} or {seq, timeout}")
        cell = self.suspended
        if cell is None:
            raise ValueError("no cell is waiting for tool results")
        self.suspended = None
        pid = self.pid
        if pid is None or not self._resume():
            self._gone("it died while the cell waited for tool results")
            return self._finish(cell, {"rc": 1, "interrupted": False, "cancelled": False}, request.get("id"))
        with ignore(OSError):
            write_frame(self.fds["cmd"], {"replies": replies})
        return self._run(cell, pid, request.get("id"))

    def _run(self, cell: "_Cell", pid: int, request_id: "Any") -> "dict[str, Any]":
        """Supervise the cell until it is done (the answer) or awaits client tools (a ``paused`` answer)."""
        self.runner.current_id = request_id
        started = time.monotonic()
        outcome = self._supervise(pid, cell.captures, started + cell.remaining)
        self.runner.current_id = None
        cell.remaining = max(0.0, cell.remaining - (time.monotonic() - started))
        calls = outcome.pop("calls")
        if calls is not None:
            self.suspended = cell
            return {"paused": True, "calls": calls}
        return self._finish(cell, outcome, request_id)

    def _finish(self, cell: "_Cell", outcome: "dict[str, Any]", request_id: "Any") -> "dict[str, Any]":
        notes = cell.notes
        rc = outcome.pop("rc")
        if outcome.pop("interrupted"):
            rc = 1
            notes.append(
                f"detection_timeout: the cell exceeded its {cell.timeout:g}-second wall-clock limit and was "
                "interrupted" + ("; the REPL keeps its state" if self.pid is not None else "")
            )
        if self.pid is None and self.lost is not None:
            notes.append(
                f"the Python REPL ended during this cell ({self.lost}); the next cell starts a fresh one without "
                "the variables of earlier cells"
            )
        out, err = cell.captures
        stderr = err.value()
        if notes:
            separator = b"\n" if stderr and not stderr.endswith(b"\n") else b""
            stderr = stderr + separator + b"".join(f"[execbridge] {n}\n".encode() for n in notes)
        file_limit, file_count, file_total = cell.file_limits
        files = self.outputs.collect(cell.out_dir, request_id, file_limit, file_count, file_total)
        duration_ms = (cell.timeout - cell.remaining) * 1000.0  # time run, pauses left out
        outcome.update(
            stdout=out.value(),
            stderr=stderr,
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            return_code=rc,
            timed_out=False,
            duration_ms=round(duration_ms, 3),
            **files,
        )
        return outcome

    def _resume(self) -> bool:
        """SIGCONT the stopped interpreter; False if it is gone."""
        pid = self.pid
        assert pid is not None
        if self.reaper.main_status(pid) is not None:
            return False
        try:
            os.kill(pid, _sig.SIGCONT)
        except OSError:
            return False
        return True

    def _supervise(self, pid: int, captures: "tuple[Capture, Capture]", deadline: float) -> "dict[str, Any]":
        fds = self.fds
        by_fd = {fds["out"]: captures[0], fds["err"]: captures[1]}
        ctl = bytearray()
        poller = select.poll()
        for fd in (*by_fd, fds["ctl"], self.proto_in):
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = -1
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        rc: int | None = None
        calls: list[Any] | None = None
        status: int | None = None
        interrupted = cancelled = False
        kill_at: float | None = None  # after SIGINT: SIGKILL at this time
        try:
            while rc is None and status is None and calls is None:
                now = time.monotonic()
                if kill_at is None and now >= deadline:
                    interrupted = True
                    self._interrupt(pid)
                    kill_at = now + INTERRUPT_GRACE_S
                elif kill_at is not None and now >= kill_at:
                    with ignore(OSError):
                        os.kill(pid, _sig.SIGKILL)
                    status = self._wait_exit(pid)
                    break
                wake = kill_at if kill_at is not None else deadline
                wait_ms = max(0, int((wake - now) * 1000) + 1)
                if pidfd < 0:
                    wait_ms = min(wait_ms, 5)
                for fd, _events in poller.poll(wait_ms):
                    if fd in by_fd:
                        _drain(fd, by_fd[fd])
                    elif fd == fds["ctl"]:
                        said = self._read_ctl(ctl)
                        if said == "eof":  # it is dying: the pidfd (or the status poll) says when
                            poller.unregister(fd)
                        elif said == "garbage":
                            log("the REPL interpreter sent something unexpected; restarting it")
                            with ignore(OSError):
                                os.kill(pid, _sig.SIGKILL)
                            status = self._wait_exit(pid)
                        elif isinstance(said, int):
                            rc = said
                        elif isinstance(said, list):
                            calls = said
                    elif fd == pidfd:
                        poller.unregister(pidfd)
                    elif fd == self.proto_in and self.runner._cancel_requested() and kill_at is None:
                        cancelled = interrupted = True
                        self._interrupt(pid)
                        kill_at = time.monotonic() + INTERRUPT_GRACE_S
                if rc is None and status is None and calls is None:
                    status = self.reaper.main_status(pid)
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        if status is None and not self._stop(pid):
            status = self._wait_exit(pid)
        for fd, capture in by_fd.items():
            _drain(fd, capture)  # what threads wrote after "done", before they stopped
        if status is not None:
            calls = None  # it died asking: the cell is over
            rc = wait_status_code(status) if rc is None else rc
            self._gone(_death(status), reaped=True)
        elif calls is not None:
            # Suspended: what the cell started stays (frozen with it) until the cell ends.
            return {"calls": calls}
        self.reaper.kill_others()  # everything the cell started, except the (stopped) interpreter
        return {"rc": rc if rc is not None else -1, "interrupted": interrupted and not cancelled,
                "cancelled": cancelled, "calls": None}  # fmt: skip

    def _interrupt(self, pid: int) -> None:
        with ignore(OSError):
            os.kill(pid, _sig.SIGCONT)  # a cell that stopped itself must see the interrupt
            os.kill(pid, _sig.SIGINT)

    def _read_ctl(self, ctl: bytearray) -> "int | list[Any] | str | None":
        """What the interpreter said once complete: the rc of ``done <rc>``, the calls of a ``call``
        message, ``"eof"`` or ``"garbage"``; None while incomplete."""
        while len(ctl) <= CALL_LIMIT + _CALL_LINE_LIMIT:
            try:
                data = os.read(self.fds["ctl"], _READ_CHUNK)
            except BlockingIOError:
                break
            if not data:
                return "eof" if not ctl else "garbage"
            ctl += data
        end = ctl.find(b"\n", 0, _CALL_LINE_LIMIT)
        if end < 0:
            return "garbage" if len(ctl) >= _CALL_LINE_LIMIT else None
        word, _, value = bytes(ctl[:end]).partition(b" ")
        if not value.isdigit() or len(value) > 8:
            return "garbage"
        if word == b"done" and len(value) < 4 and len(ctl) == end + 1:
            return int(value)
        if word != b"call" or int(value) > CALL_LIMIT:
            return "garbage"
        size = int(value)
        if len(ctl) < end + 1 + size:
            return None
        if len(ctl) > end + 1 + size:  # it blocks after a call: nothing may follow
            return "garbage"
        calls = _checked_calls(bytes(ctl[end + 1 :]))
        return "garbage" if calls is None else calls

    def _stop(self, pid: int) -> bool:
        """SIGSTOP the interpreter and wait until all its threads are stopped; False if it is dead."""
        try:
            os.kill(pid, _sig.SIGSTOP)
        except OSError:
            return False
        give_up = time.monotonic() + _STOP_WAIT_S
        while True:
            try:
                got, status = os.waitpid(pid, os.WUNTRACED | os.WNOHANG)
            except ChildProcessError:
                return False
            if got == pid:
                if os.WIFSTOPPED(status):
                    return True
                self.reaper.reaped[pid] = status  # it died: kept for _wait_exit
                return False
            if time.monotonic() > give_up or _all_stopped(pid):
                # Already stopped before (a second SIGSTOP reports nothing new) or stuck in the kernel.
                return _all_stopped(pid)
            time.sleep(0.0002)


def _all_stopped(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        data = read_small(f"/proc/{pid}/task/{tid}/stat")
        if not data or data[data.rfind(b")") + 2 : data.rfind(b")") + 3] not in (b"T", b"t"):
            return False
    return True


def _death(status: int) -> str:
    code = wait_status_code(status)
    if os.WIFSIGNALED(status):
        hint = " — SIGKILL, often the container's memory limit" if code == 137 else ""
        return f"killed by signal {code - 128}{hint}"
    return f"it exited with status {code}"


def _drain(fd: int, capture: Capture) -> None:
    while True:
        try:
            if not capture.read_from(fd):
                return
        except BlockingIOError:
            return
        except OSError:
            return


def _close_all_but(*keep: int) -> None:  # pragma: no cover - child
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)
