"""Running one bash or Python command: start it, capture its output, enforce its time limit.

Job: ``posix_spawn`` bash as ``bash -c`` or fork a Python child (``pymain``) in its own session,
with ``/dev/null`` on stdin, pipes on stdout/stderr and a fresh ``$OUTPUT_DIR``; pump both pipes
(kept up to ``output_limit`` each, counted and dropped beyond, never blocking the writer); stop at
the deadline or on a ``cancel`` frame; when the main process is gone, have the reaper kill
everything the command started; then collect ``$OUTPUT_DIR``. A process killed by a signal reports
``128 + signal``, as a shell does. Also prepares the interpreter for Python commands (``warm_up``).

Must not: let the protocol fds reach a command (they are close-on-exec, and the Python child closes
every fd above 2); answer anything while a command runs — the only frame allowed then is ``cancel``
(any other is a ``ProtocolViolation``; EOF kills everything and exits); wait without a deadline.

Invariants: when ``run`` returns, the command's main process has been reaped and nothing it started
is left running; the command's time counts from just before it is started.
"""

import _signal as _sig
import gc
import os
import select
import time

from .common import ProtocolViolation, field_int, field_str, ignore, log
from .framing import read_frame
from .pymain import plain_flags, python_main

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .outputs import OutputDirs
    from .reaper import Reaper

_READ_CHUNK = 1 << 16
_DRAIN_GRACE_S = 1.0  # after everything is killed, how long to wait for the output pipes to close
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BASH = "/bin/bash"
_RESET_SIGNALS = tuple(n for n in range(1, 32) if n not in (_sig.SIGKILL, _sig.SIGSTOP))


def wait_status_code(status: int) -> int:
    """Shell convention: exit status, or 128 + signal for a process killed by a signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return -1


class Capture:
    """Bytes read from one output pipe: kept up to ``limit``, counted and dropped beyond."""

    __slots__ = ("chunks", "kept", "limit", "scratch", "truncated")

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.kept = 0
        self.limit = limit
        self.truncated = False
        self.scratch: bytearray | None = None

    def read_from(self, fd: int) -> bool:
        """Read what is available; False at EOF."""
        if self.kept < self.limit:
            data = os.read(fd, _READ_CHUNK)
            if not data:
                return False
            room = self.limit - self.kept
            if len(data) > room:
                data = data[:room]
                self.truncated = True
            self.chunks.append(data)
            self.kept += len(data)
            return True
        # Past the cap: keep the pipe flowing so the writer never blocks on us, without growing.
        if self.scratch is None:
            self.scratch = bytearray(_READ_CHUNK)
        if os.readv(fd, [self.scratch]) == 0:
            return False
        self.truncated = True
        return True

    def value(self) -> bytes:
        return b"".join(self.chunks)


class Runner:
    """Commands, one at a time, in ``workspace``; ``proto_in`` is watched for ``cancel`` meanwhile."""

    def __init__(
        self, proto_in: int, *, workspace: str, extra_env: dict[str, str], reaper: "Reaper", outputs: "OutputDirs"
    ) -> None:
        self.proto_in = proto_in
        self.workspace = workspace
        self.reaper = reaper
        self.outputs = outputs
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.child_env = {
            "PATH": _DEFAULT_PATH,
            "HOME": workspace,
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "MPLBACKEND": "Agg",
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        self.warm = False
        self.plain_flags: Any = None
        self.current_id: int | None = None

    def warm_up(self) -> None:
        """Make dist-packages importable for Python commands (``site`` was skipped by ``-S``)."""
        self.warm = True
        try:
            import site

            site.main()
        except Exception as exc:  # a broken .pth must not take the executor down
            log(f"site.main() failed: {exc!r}")
        self.plain_flags = plain_flags()
        # First calls are expensive in a forked child (copy-on-write faults, cold caches): compiling
        # once here saves ~1 ms per Python command, and giving the executor the commands' environment
        # leaves the child one putenv instead of clearing and refilling os.environ (~0.4 ms).
        compile("pass", "<string>", "exec", dont_inherit=True)
        os.environ.clear()
        os.environ.update(self.child_env)
        # Everything made so far lives as long as the executor: out of the collector's sight, a
        # collection in a forked child never walks (and so never copies) the executor's pages, and
        # every child starts from the same near-empty young generation instead of wherever the
        # executor's own allocations left the gen-0 count (dozens of page copies per command otherwise).
        gc.freeze()

    def bash(self, request: "dict[str, Any]") -> "dict[str, Any]":
        return self.run(request, bash=field_str(request, "command"))

    def python(self, request: "dict[str, Any]") -> "dict[str, Any]":
        if not self.warm:
            self.warm_up()
        return self.run(request, python=field_str(request, "code"))

    def run(self, request: "dict[str, Any]", *, bash: str | None = None, python: str | None = None) -> "dict[str, Any]":
        timeout = float(request["timeout"])
        output_limit = field_int(request, "output_limit")
        file_limit = field_int(request, "file_limit")
        file_count = field_int(request, "file_count")
        file_total = field_int(request, "file_total")
        self.current_id = request.get("id")
        out_dir = self.outputs.fresh()
        env = {**self.child_env, "OUTPUT_DIR": out_dir}
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        try:
            # Children inherit the executor's cwd: posix_spawn cannot chdir on Python 3.11.
            os.chdir(self.workspace)
            if bash is not None:
                # posix_spawn is vfork+exec: ~0.7 ms less than fork+exec from this process.
                pid = os.posix_spawn(
                    _BASH, ["bash", "-c", bash], env,
                    file_actions=[(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                                  (os.POSIX_SPAWN_DUP2, err_w, 2)],
                    setsid=True,  # own session and process group: one killpg reaches the whole job
                    setsigmask=(),
                    setsigdef=_RESET_SIGNALS,  # ignored signals survive exec; bash wants defaults
                )  # fmt: skip
            else:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child, which always ends in os._exit
                    self._python_child(out_w, err_w, env, python or "")
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            self.outputs.unused(out_dir)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            outcome = self._supervise(pid, out_r, err_r, output_limit, started + timeout)
        finally:
            os.close(out_r)
            os.close(err_r)
            self.current_id = None
        duration_ms = (time.monotonic() - started) * 1000.0
        files = self.outputs.collect(out_dir, request.get("id"), file_limit, file_count, file_total)
        outcome.update(duration_ms=round(duration_ms, 3), **files)
        return outcome

    def _python_child(self, out_w: int, err_w: int, env: dict[str, str], code: str) -> "NoReturn":
        """Runs in the forked child; never returns into the executor's loop."""
        try:  # pragma: no cover - child process
            os.setsid()  # own session and process group: one killpg reaches the whole job
            os.dup2(self.devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.closerange(3, 1 << 20)  # close_range(2): the protocol pipes must not leak to user code
            self.reaper.make_dumpable()
            python_main(code, env, self.plain_flags)
        except BaseException as exc:
            with ignore(BaseException):
                os.write(2, f"executor: could not start the command: {exc!r}\n".encode())
        os._exit(127)

    def _supervise(self, pid: int, out_r: int, err_r: int, limit: int, deadline: float) -> "dict[str, Any]":
        """Pump the output pipes until the command is over; kill what it left behind."""
        reaper = self.reaper
        try:
            pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # old kernel or seccomp: fall back to polling waitpid
            pidfd = -1
        captures = {out_r: Capture(limit), err_r: Capture(limit)}
        poller = select.poll()
        for fd in captures:
            poller.register(fd, select.POLLIN)
        if pidfd >= 0:
            poller.register(pidfd, select.POLLIN)
        poller.register(self.proto_in, select.POLLIN)
        open_pipes = 2
        status: int | None = None
        timed_out = cancelled = False
        stop_by: float | None = None  # once everything is killed: give up on the pipes after this
        try:
            while True:
                if status is None:
                    status = reaper.main_status(pid)
                    if status is not None:
                        reaper.kill_others()  # lingering background jobs and daemons
                        stop_by = time.monotonic() + _DRAIN_GRACE_S
                if status is not None and open_pipes == 0:
                    break
                now = time.monotonic()
                if stop_by is None and now >= deadline:
                    timed_out = True
                    reaper.kill_job(pid)
                    stop_by = time.monotonic() + _DRAIN_GRACE_S
                if stop_by is not None and now >= stop_by:
                    if status is None:
                        log(f"command {pid} did not die after SIGKILL")
                    break
                limit_at = stop_by if stop_by is not None else deadline
                wait_ms = max(0, int((limit_at - now) * 1000) + 1)
                if pidfd < 0 and status is None:
                    wait_ms = min(wait_ms, 5)
                for fd, _events in poller.poll(wait_ms):
                    if fd in captures:
                        if not captures[fd].read_from(fd):
                            poller.unregister(fd)
                            open_pipes -= 1
                    elif fd == pidfd:
                        poller.unregister(pidfd)
                    elif fd == self.proto_in and self._cancel_requested() and stop_by is None:
                        cancelled = True
                        reaper.kill_job(pid)
                        stop_by = time.monotonic() + _DRAIN_GRACE_S
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            if status is None:
                reaper.kill_job(pid)
                status = reaper.main_status(pid)
        out, err = captures[out_r], captures[err_r]
        return {
            "stdout": out.value(),
            "stderr": err.value(),
            "stdout_truncated": out.truncated,
            "stderr_truncated": err.truncated,
            "return_code": wait_status_code(status) if status is not None else -1,
            "timed_out": timed_out,
            "cancelled": cancelled,
        }

    def _cancel_requested(self) -> bool:
        """A frame arrived while a command runs: only ``cancel`` is allowed there."""
        frame = read_frame(self.proto_in)
        if frame is None:  # the gateway went away: stop everything and leave
            self.reaper.kill_others()
            log("protocol stream closed during a command; exiting")
            os._exit(0)
        if frame.get("op") == "cancel":
            return frame.get("id") == self.current_id
        raise ProtocolViolation(f"request {frame.get('op')!r} arrived while a command was running")
