"""Process cleanup: the executor as subreaper, and the killing of whatever a command leaves behind.

Job: at start-up make the executor a child subreaper (daemons that double-fork or ``setsid`` stay in
its subtree) and non-dumpable (user code of the same uid cannot open ``/proc/<executor>/fd`` to
forge frames); after each command, SIGKILL every process that must not outlive it and reap them.
With ``kill_all`` (the executor owns its PID namespace) that is every process except the executor
and its ancestors; without it (tests, no namespace) only the executor's own descendants, found
through ``/proc`` — never anything outside its subtree.

A process is left alone only when it is really dead: a zombie (``Z``) whose every thread is gone. A
thread-group leader that ended with the raw ``exit`` syscall shows ``Z`` while its other threads run
on, and is killed like any live process. In its own PID namespace, under the namespace's init and
not root, the executor also sends ``kill(-1, SIGKILL)``, which reaches every process of the
namespace in one call, however fast it forks or wherever it moved in the tree.

Must not: import ``ctypes`` (~3 ms at start-up; ``prctl`` goes through ``_ctypes``) or ``signal``
(``_signal`` has the numbers); kill the executor or its ancestors; wait without a bound
(``_KILL_GRACE_S``, then it logs and gives up).

Invariants: exit statuses of children reaped on the way are kept in ``reaped`` until their owner
asks (``main_status``), so a command's own status is never lost to a sweep.
"""

import _signal as _sig
import os
import time

from .common import ignore, log, read_small

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_KILL_GRACE_S = 2.0  # how long to wait for killed processes to vanish before giving up loudly
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36


def make_prctl() -> "Any":
    """``prctl(2)`` through ``_ctypes`` (``import ctypes`` alone costs ~3 ms at start-up)."""
    try:
        import _ctypes

        class _Int(_ctypes._SimpleCData):  # type: ignore[type-arg]  # not subscriptable at run time
            _type_ = "i"

        class _ULong(_ctypes._SimpleCData):  # type: ignore[type-arg]  # not subscriptable at run time
            _type_ = "L"

        class _Prctl(_ctypes.CFuncPtr):
            _argtypes_ = (_Int, _ULong, _ULong, _ULong, _ULong)
            _restype_ = _Int
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO

        # dlopen(NULL) is the running program itself, which has libc's prctl; typeshed allows paths only.
        func = _Prctl(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))  # type: ignore[arg-type]

        def prctl(option: int, arg: int) -> int:
            result = int(func(option, arg, 0, 0, 0))
            if result != 0:
                raise OSError(_ctypes.get_errno(), os.strerror(_ctypes.get_errno()))
            return result

        return prctl
    except Exception as exc:  # any failure here only degrades, it is logged
        log(f"prctl unavailable ({exc!r}); orphans will not be reaped by the executor")
        return None


def stat_fields(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid`` from ``/proc/<pid>/stat``, or None if it is gone."""
    data = read_small(f"/proc/{pid}/stat")
    if not data:
        return None
    fields = data[data.rfind(b")") + 2 :].split()  # comm may contain spaces and parentheses
    return fields[0].decode("ascii", "replace"), int(fields[1])


class Reaper:
    """The executor's children and leftovers: reap, find, kill."""

    def __init__(self, pid: int, *, kill_all: bool) -> None:
        self.pid = pid
        self.kill_all = kill_all
        self.prctl = make_prctl()
        self.subreaper = False
        if self.prctl is not None:
            try:
                self.prctl(_PR_SET_CHILD_SUBREAPER, 1)
                self.subreaper = True
                # Not dumpable: /proc/<executor>/fd becomes unreadable to user code of the same
                # uid, so it cannot write forged frames into the protocol pipes.
                self.prctl(_PR_SET_DUMPABLE, 0)
            except OSError as exc:
                log(f"prctl failed: {exc}")
        self.children_file = f"/proc/{pid}/task/{pid}/children"
        self.have_children_file = os.path.exists(self.children_file)
        self.protected = self._ancestors() if kill_all else {pid}
        # kill(-1) spares only the caller and the namespace's init: safe when those are all we protect,
        # and never as root (outside a user namespace it would reach the whole machine).
        self.kill_everyone = kill_all and self.protected == {pid, 1} and os.getuid() != 0
        self.reaped: dict[int, int] = {}

    def protect(self, pid: int) -> None:
        """Spare ``pid`` (the REPL's interpreter, the one sanctioned survivor) in every sweep.

        ``kill(-1)`` cannot spare a third process, so from now on sweeps go by the ``/proc`` scan alone;
        the caller stops ``pid`` (SIGSTOP) before a sweep, so nothing it runs can fork past the scan.
        """
        self.protected.add(pid)
        self.kill_everyone = False

    def unprotect(self, pid: int) -> None:
        self.protected.discard(pid)

    def make_dumpable(self) -> None:
        """In a forked command: only the executor itself hides its /proc entries."""
        if self.prctl is not None:
            self.prctl(_PR_SET_DUMPABLE, 1)

    def main_status(self, pid: int) -> int | None:
        """The wait status of our child ``pid`` once it has exited, else None (never blocks)."""
        if pid in self.reaped:
            return self.reaped.pop(pid)
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return self.reaped.pop(pid, None)
        return status if got == pid else None

    def kill_job(self, pid: int) -> None:
        """Kill a command's process group (its leader is ``pid``), then everything else left."""
        with ignore(OSError):
            os.killpg(pid, _sig.SIGKILL)
        self.kill_others()

    def kill_others(self) -> None:
        """SIGKILL every victim until none is left; orphans come back to us (subreaper) and are reaped."""
        self._reap()
        # The common case: nothing was left behind. As a subreaper the executor inherits every orphan,
        # so no child of its own means no process of the command is left, in either mode.
        if self.subreaper and self.have_children_file and self._only_protected_children():
            return
        give_up = time.monotonic() + _KILL_GRACE_S
        while True:
            if self.kill_everyone:
                with ignore(OSError):  # ESRCH: nobody else left
                    os.kill(-1, _sig.SIGKILL)
            victims = self._victims()
            if not victims:
                self._reap()  # the last ones may have turned into zombies only just now
                return
            for pid in victims:
                with ignore(OSError):
                    os.kill(pid, _sig.SIGKILL)
            self._reap()
            if time.monotonic() > give_up:
                log(f"{len(victims)} processes survived SIGKILL")
                return
            time.sleep(0.0005)
            self._reap()

    def _only_protected_children(self) -> bool:
        """No child but protected ones (the REPL's interpreter), and those have no children of their own."""
        kids = [int(x) for x in (read_small(self.children_file) or b"").split()]
        for pid in kids:
            if pid not in self.protected:
                return False
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            # Each thread has its own list: a child belongs to the thread that forked it.
            if any(read_small(f"/proc/{pid}/task/{tid}/children") for tid in tids):
                return False
        return True

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped[pid] = status

    def _victims(self) -> list[int]:
        """Live processes that must go: the whole namespace (kill-all) or the executor's subtree."""
        if self.kill_all:
            candidates = [int(name) for name in os.listdir("/proc") if name.isdigit()]
            candidates = [pid for pid in candidates if pid not in self.protected]
        else:
            candidates = [pid for pid in self._descendants() if pid not in self.protected]
        return [pid for pid in candidates if _alive(pid)]

    def _descendants(self) -> list[int]:
        if not self.have_children_file:
            return self._descendants_by_scan()
        found: list[int] = []
        frontier = [self.pid]
        while frontier:
            pid = frontier.pop()
            try:
                tids = [str(self.pid)] if pid == self.pid else os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                kids = [int(x) for x in (read_small(f"/proc/{pid}/task/{tid}/children") or b"").split()]
                found.extend(kids)
                frontier.extend(kids)
        return found

    def _descendants_by_scan(self) -> list[int]:
        parent_of: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                fields = stat_fields(int(name))
                if fields is not None:
                    parent_of[int(name)] = fields[1]
        children: dict[int, list[int]] = {}
        for pid, ppid in parent_of.items():
            children.setdefault(ppid, []).append(pid)
        found, frontier = [], [self.pid]
        while frontier:
            kids = children.get(frontier.pop(), [])
            found.extend(kids)
            frontier.extend(kids)
        return found

    def _ancestors(self) -> set[int]:
        chain = {self.pid}
        pid = os.getppid()
        while pid > 0 and pid not in chain:
            chain.add(pid)
            fields = stat_fields(pid)
            pid = fields[1] if fields is not None else 0
        return chain


def _alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs: a ``Z`` leader can have live threads behind it."""
    fields = stat_fields(pid)
    if fields is None:
        return False
    if fields[0] not in ("Z", "X"):
        return True
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        data = read_small(f"/proc/{pid}/task/{tid}/stat")
        if data and data[data.rfind(b")") + 2 : data.rfind(b")") + 3] not in (b"Z", b"X"):
            return True
    return False
