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

Interpreter side (``interpreter_main``, in the forked child): a fresh ``__main__`` whose dict is the
REPL's state; each cell is compiled with top-level ``await`` allowed and, when it awaits, run on one
event loop that lives as long as the REPL (tasks a cell leaves pending go on in later cells). A
cell's exception is printed as a traceback and gives rc 1 (``SystemExit`` its code): the REPL
carries on either way. Cells reach the supervisor through two pipes: frames in (the supervisor is
trusted), short lines out (``done <rc>``): the supervisor trusts nothing the interpreter says and
reads at most ``_CTL_LIMIT`` bytes per cell. A later step (programmatic tool calling) adds lines such as
``call …`` on the same pipe, with the cell suspended in the interpreter's event loop meanwhile.

Must not: let a cell's process outlive the cell (the reaper sweeps everything but the interpreter);
report a timed-out cell as ``timed_out`` (that is the gateway's ``execution_time_exceeded`` for a
command; a cell past its limit is a normal result, rc 1 and ``detection_timeout`` on stderr); wait
without a deadline.
"""

import _signal as _sig
import os
import select
import sys
import time

from .common import field_int, field_str, ignore, log, read_small
from .framing import read_frame, write_frame
from .pymain import _system_exit_code, become_plain_python
from .runner import Capture, wait_status_code

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .outputs import OutputDirs
    from .reaper import Reaper
    from .runner import Runner

_INTERRUPT_GRACE_S = 2.0  # after SIGINT at the cell's limit: how long the cell has to stop before SIGKILL
_STOP_WAIT_S = 2.0  # how long SIGSTOP may take to stop every thread of the interpreter
_CTL_LIMIT = 4096  # bytes the interpreter may say per cell
_PYCF_ALLOW_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT (``ast`` costs ~3 ms to import)
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE: the compiled cell awaits
_READ_CHUNK = 1 << 16


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
        output_limit = field_int(request, "output_limit")
        file_limit = field_int(request, "file_limit")
        file_count = field_int(request, "file_count")
        file_total = field_int(request, "file_total")
        notes: list[str] = []
        if self.pid is not None and not self._resume():
            self._gone("it was found dead before this cell")
        if self.pid is None:
            if self.lost is not None:
                notes.append(
                    f"a fresh Python REPL was started for this cell: the previous one ended ({self.lost}); "
                    "variables, imports and definitions from earlier cells are gone (files are kept)"
                )
                self.lost = None
            self._start()
        pid = self.pid
        assert pid is not None
        self.cells += 1
        self.runner.current_id = request.get("id")
        out_dir = self.outputs.fresh()
        started = time.monotonic()
        with ignore(OSError):  # it died meanwhile: the supervision below sees it at once
            write_frame(self.fds["cmd"], {"code": code, "cell": self.cells, "env": {"OUTPUT_DIR": out_dir}})
        outcome = self._supervise(pid, output_limit, started + timeout)
        self.runner.current_id = None
        duration_ms = (time.monotonic() - started) * 1000.0
        rc = outcome.pop("rc")
        if outcome.pop("interrupted"):
            rc = 1
            notes.append(
                f"detection_timeout: the cell exceeded its {timeout:g}-second wall-clock limit and was interrupted"
                + ("; the REPL keeps its state" if self.pid is not None else "")
            )
        if self.pid is None and self.lost is not None:
            notes.append(
                f"the Python REPL ended during this cell ({self.lost}); the next cell starts a fresh one without "
                "the variables of earlier cells"
            )
        stderr = outcome["stderr"]
        if notes:
            separator = b"\n" if stderr and not stderr.endswith(b"\n") else b""
            stderr = stderr + separator + b"".join(f"[execbridge] {n}\n".encode() for n in notes)
        files = self.outputs.collect(out_dir, request.get("id"), file_limit, file_count, file_total)
        outcome.update(stderr=stderr, return_code=rc, timed_out=False, duration_ms=round(duration_ms, 3), **files)
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

    def _supervise(self, pid: int, limit: int, deadline: float) -> "dict[str, Any]":
        fds = self.fds
        captures = {fds["out"]: Capture(limit), fds["err"]: Capture(limit)}
        ctl = bytearray()
        poller = select.poll()
        for fd in (*captures, fds["ctl"], self.proto_in):
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = -1
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        rc: int | None = None
        status: int | None = None
        interrupted = cancelled = False
        kill_at: float | None = None  # after SIGINT: SIGKILL at this time
        try:
            while rc is None and status is None:
                now = time.monotonic()
                if kill_at is None and now >= deadline:
                    interrupted = True
                    self._interrupt(pid)
                    kill_at = now + _INTERRUPT_GRACE_S
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
                    if fd in captures:
                        _drain(fd, captures[fd])
                    elif fd == fds["ctl"]:
                        said = self._read_done(ctl)
                        if said == "eof":  # it is dying: the pidfd (or the status poll) says when
                            poller.unregister(fd)
                        elif said == "garbage":
                            log("the REPL interpreter sent something unexpected; restarting it")
                            with ignore(OSError):
                                os.kill(pid, _sig.SIGKILL)
                            status = self._wait_exit(pid)
                        elif isinstance(said, int):
                            rc = said
                    elif fd == pidfd:
                        poller.unregister(pidfd)
                    elif fd == self.proto_in and self.runner._cancel_requested() and kill_at is None:
                        cancelled = interrupted = True
                        self._interrupt(pid)
                        kill_at = time.monotonic() + _INTERRUPT_GRACE_S
                if rc is None and status is None:
                    status = self.reaper.main_status(pid)
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        if status is None and not self._stop(pid):
            status = self._wait_exit(pid)
        for fd, capture in captures.items():
            _drain(fd, capture)  # what threads wrote after "done", before they stopped
        if status is not None:
            rc = wait_status_code(status) if rc is None else rc
            self._gone(_death(status), reaped=True)
        self.reaper.kill_others()  # everything the cell started, except the (stopped) interpreter
        out, err = captures[fds["out"]], captures[fds["err"]]
        return {
            "stdout": out.value(),
            "stderr": err.value(),
            "stdout_truncated": out.truncated,
            "stderr_truncated": err.truncated,
            "rc": rc if rc is not None else -1,
            "interrupted": interrupted and not cancelled,
            "cancelled": cancelled,
        }

    def _interrupt(self, pid: int) -> None:
        with ignore(OSError):
            os.kill(pid, _sig.SIGCONT)  # a cell that stopped itself must see the interrupt
            os.kill(pid, _sig.SIGINT)

    def _read_done(self, ctl: bytearray) -> "int | str | None":
        """The rc of the interpreter's ``done <rc>`` line once complete, ``"eof"``, ``"garbage"``, or None."""
        try:
            data = os.read(self.fds["ctl"], _CTL_LIMIT)
        except BlockingIOError:
            return None
        if not data:
            return "eof"
        ctl += data
        if b"\n" not in ctl:
            return "garbage" if len(ctl) >= _CTL_LIMIT else None
        line = bytes(ctl[: ctl.index(b"\n")])
        del ctl[:]
        word, _, value = line.partition(b" ")
        if word == b"done" and value.isdigit() and len(value) < 4:
            return int(value)
        return "garbage"

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


# ------------------------------------------------------------------ the interpreter (forked child)


def interpreter_main(cmd_fd: int, ctl_fd: int, env: dict[str, str], flags: "Any") -> "NoReturn":  # pragma: no cover
    """The REPL's loop: read a cell, run it in the shared ``__main__``, say ``done <rc>``; forever."""
    main = become_plain_python(env, flags, argv0="")
    namespace = main.__dict__
    state: dict[str, Any] = {"loop": None}
    _sig.signal(_sig.SIGINT, _sig.SIG_IGN)  # interrupts count only while a cell runs
    while True:
        message = read_frame(cmd_fd)
        if message is None:  # the supervisor went away
            os._exit(0)
        for name, value in message.get("env", {}).items():
            os.environ[name] = value
        rc: int | None = None
        _sig.signal(_sig.SIGINT, _sig.default_int_handler)
        try:
            rc = _run_cell(str(message["code"]), int(message["cell"]), namespace, state)
        except KeyboardInterrupt:  # landed between the cell and its own handler
            rc = 130 if rc is None else rc
        while True:  # an interrupt may land here too; ignore it from now on
            try:
                _sig.signal(_sig.SIGINT, _sig.SIG_IGN)
                break
            except KeyboardInterrupt:
                continue
        for stream in (sys.stdout, sys.stderr):
            with ignore(BaseException):
                stream.flush()
        os.write(ctl_fd, f"done {rc & 0xFF if rc >= 0 else 1}\n".encode())


def _run_cell(code: str, number: int, namespace: "dict[str, Any]", state: "dict[str, Any]") -> int:  # pragma: no cover
    filename = f"<cell {number}>"
    import linecache

    # Tracebacks show the cell's lines, as IPython's do.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        compiled = compile(code, filename, "exec", flags=_PYCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        if compiled.co_flags & _CO_COROUTINE:
            import asyncio

            loop = state["loop"]
            if loop is None:
                loop = state["loop"] = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
            task = loop.create_task(eval(compiled, namespace))
            try:
                loop.run_until_complete(task)
            except BaseException:
                # Interrupted while the loop waited: the cell's task would otherwise run on in later cells.
                if not task.done():
                    task.cancel()
                    with ignore(BaseException):
                        loop.run_until_complete(asyncio.wait([task], timeout=_INTERRUPT_GRACE_S))
                raise
        else:
            exec(compiled, namespace)
    except SystemExit as exc:
        return _system_exit_code(exc)
    except BaseException as exc:  # the top level of the cell
        tb = _from_cell(exc.__traceback__, filename)
        exc.__traceback__ = tb  # hide this frame (and the event loop's): the traceback starts in the cell
        with ignore(BaseException):
            if sys.excepthook is sys.__excepthook__:
                import traceback  # the C hook reads source lines from disk; this one finds the cell's

                traceback.print_exception(type(exc), exc, tb)
            else:
                sys.excepthook(type(exc), exc, tb)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def _from_cell(tb: "Any", filename: str) -> "Any":  # pragma: no cover - interpreter
    """The traceback from the cell's first frame on (after ours and asyncio's); else without our frame."""
    entry = tb
    while entry is not None:
        if entry.tb_frame.f_code.co_filename == filename:
            return entry
        entry = entry.tb_next
    return tb.tb_next if tb is not None else None
