"""``$OUTPUT_DIR``: a fresh directory for every command, its files streamed afterwards, then removed.

Job: hand each command an empty ``<output-root>/<n>`` (Anthropic gives every command its own, docs/protocol.md §2.9),
outside the workspace; once every process of the command is dead, send the regular files at its top
level to the gateway as ``file`` frames (at most ``FILE_CHUNK`` bytes each, one file after the other,
before the command's answer), within the limits, and remove the directory. Files left elsewhere
stay in the container.

Limits (the request's ``file_limit``, ``file_count``, ``file_total``): a file's size is its apparent
size (``st_size``, what a reader gets, sparse or not); one over ``min(file_limit, file_total)`` is
*too large* and never read; files are taken in name order until ``file_count`` are taken or the next
one no longer fits in what is left of ``file_total`` (*omitted*). A second name of an inode already
seen (a hard link, by ``(st_dev, st_ino)``) is never read again: it is skipped with a note naming
the first.

Must not: follow a symlink — neither the directory (a command may swap it for a link) nor anything
in it — or block on a FIFO: everything is opened ``O_NOFOLLOW``/``O_NONBLOCK`` relative to a
directory fd, so planted links can only ever resolve inside the sandbox's own view, and only to be
skipped; hold more than one chunk of a file, or more than ``_MAX_ENTRIES`` directory entries, in
memory; recurse (a tree thousands of levels deep is removed with one or two fds at a time); let
anything about the directory replace the command's own answer — every failure becomes an entry of
``files_skipped`` (the gateway turns those into a note on stderr).

Invariants: a directory the last command left empty and untouched (mode 0755) is indistinguishable
from a new one and is handed out again (saves a mkdir/rmdir pair, ~0.5 ms on ext4); any other is
removed before the next command starts. A file's frames end with ``end`` set: ``"ok"`` (kept) or a
reason it was dropped (``changed``, ``unreadable``, ``failed``); ``file_total`` bounds the bytes sent.
"""

import os

from .common import ignore, log
from .framing import FILE_CHUNK

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_LISTED = 100  # names per list in an answer; the rest are only counted (``files_*_unlisted``)
_MAX_ENTRIES = 10_000  # directory entries looked at, the first by name; the rest count as omitted
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, 0o100000, 0o040000
_KINDS = {0o140000: "socket", 0o120000: "symbolic link", 0o060000: "device", 0o040000: "directory",
          0o020000: "device", 0o010000: "FIFO"}  # fmt: skip


class _SendFailed(Exception):
    """Writing a frame failed: the gateway is gone, which is not a collection error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class OutputDirs:
    """The ``$OUTPUT_DIR`` of each command, under ``root``; ``send`` writes one frame to the gateway."""

    def __init__(self, root: str, send: "Callable[[dict[str, Any]], None]") -> None:
        self.root = root
        self.send = send
        self.runs = 0
        self.spare: str | None = None
        os.makedirs(root, exist_ok=True)

    def fresh(self) -> str:
        """A new, empty ``$OUTPUT_DIR``: the last one if it is still untouched, else ``<root>/<n>``."""
        if self.spare is not None:
            out_dir, self.spare = self.spare, None
            return out_dir
        self.runs += 1
        out_dir = os.path.join(self.root, str(self.runs))
        if os.path.lexists(out_dir):  # left over from an earlier executor in this sandbox
            _remove_tree(out_dir)
        try:
            os.mkdir(out_dir, 0o755)
        except OSError:  # a command replaced or locked the root (it lives in the sandbox's /tmp)
            _repair_root(self.root)
            os.mkdir(out_dir, 0o755)
        return out_dir

    def unused(self, out_dir: str) -> None:
        """The command could not start: its directory is still empty and serves the next one."""
        self.spare = out_dir

    def collect(
        self, out_dir: str, request_id: "Any", file_limit: int, file_count: int, file_total: int
    ) -> "dict[str, Any]":
        """Send the files of a finished command, remove its directory; the answer's file fields.

        Never raises for what is in the directory: a failure ends the collection with a
        ``files_skipped`` entry, and the command's own answer goes out as usual. Only a failure to
        write a frame (the gateway went away) propagates.
        """
        run = _Collection(self.send, request_id, file_limit, file_count, file_total)
        reusable = False
        try:
            reusable = run.directory(out_dir)
        except _SendFailed as exc:
            raise exc.error from None
        except Exception as exc:  # the boundary: MemoryError, an OSError nobody expected, a bug
            log(f"collecting an output directory failed: {exc!r}")
            try:
                run.failed(exc)
            except _SendFailed as send_exc:
                raise send_exc.error from None
        if not reusable:
            _remove_tree(out_dir)
        self.spare = out_dir if reusable else None
        return run.fields()


class _Collection:
    """One command's ``$OUTPUT_DIR`` on its way out: the limits, what was sent, what was not."""

    def __init__(
        self, send: "Callable[[dict[str, Any]], None]", request_id: "Any", file_limit: int, count: int, total: int
    ) -> None:
        self._send = send
        self.request_id = request_id
        self.limit = min(file_limit, total)  # one file over the whole budget can never be returned
        self.count = count
        self.budget = total
        self.kept = 0
        self.taken: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) → the first name seen
        self.streaming: str | None = None  # the file whose last frame has not been sent yet
        self.too_large: list[str] = []
        self.too_large_unlisted = 0
        self.skipped: list[list[str]] = []
        self.skipped_unlisted = 0
        self.omitted = 0

    def send(self, frame: "dict[str, Any]") -> None:
        try:
            self._send(frame)
        except Exception as exc:
            raise _SendFailed(exc) from exc

    def fields(self) -> "dict[str, Any]":
        return {
            "files_too_large": self.too_large,
            "files_too_large_unlisted": self.too_large_unlisted,
            "files_omitted": self.omitted,
            "files_skipped": self.skipped,
            "files_skipped_unlisted": self.skipped_unlisted,
        }

    def skip(self, name: str, reason: str, detail: str = "") -> None:
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append([name, reason, detail[:200]])
        else:
            self.skipped_unlisted += 1

    def failed(self, exc: BaseException) -> None:
        """Collection stopped at ``exc``: close the file being sent, and say so."""
        name = self.streaming or "."
        if self.streaming is not None:
            self.send({"id": self.request_id, "op": "file", "data": b"", "end": "failed"})
            self.streaming = None
        self.skip(name, "failed", type(exc).__name__)

    def directory(self, path: str) -> bool:
        """Send what ``path`` holds; True when it was left empty and untouched (reusable as is)."""
        try:
            dfd = os.open(path, _DIR_FLAGS)
        except OSError as exc:
            kind = _kind_at(path)
            if kind == "directory":
                self.skip(".", "unreadable", exc.strerror or "")
            elif kind is not None:
                self.skip(".", "replaced", kind)
            return False  # else the command removed it (or the root above it): nothing to say
        try:
            entries = _first_entries(dfd)
            if not entries and (os.fstat(dfd).st_mode & 0o7777) == 0o755:
                return True
            for entry in entries:
                self.entry(dfd, entry)
        finally:
            os.close(dfd)
        return False

    def entry(self, dfd: int, entry: "Any") -> None:
        if isinstance(entry, _Unseen):
            self.omitted += entry.count
            return
        name = _display_name(entry.name)
        try:
            regular = entry.is_file(follow_symlinks=False)
        except OSError:
            regular = False
        if not regular:
            self.skip(name, "not_regular", _kind_of(entry))
            return
        if self.kept >= self.count:
            self.omitted += 1
            return
        try:
            fd = os.open(entry.name, _FILE_FLAGS, dir_fd=dfd)
        except OSError as exc:
            self.skip(name, "unreadable", exc.strerror or type(exc).__name__)
            return
        try:
            self.regular_file(fd, name)
        finally:
            os.close(fd)

    def regular_file(self, fd: int, name: str) -> None:
        st = os.fstat(fd)
        if (st.st_mode & _S_IFMT) != _S_IFREG:
            self.skip(name, "not_regular", _KINDS.get(st.st_mode & _S_IFMT, "special file"))
            return
        key = (st.st_dev, st.st_ino)
        first = self.taken.get(key)
        if first is not None:
            self.skip(name, "hard_link", first)
            return
        self.taken[key] = name
        if st.st_size > self.limit:
            if len(self.too_large) < MAX_LISTED:
                self.too_large.append(name)
            else:
                self.too_large_unlisted += 1
            return
        if st.st_size > self.budget:
            self.omitted += 1
            return
        self.budget -= st.st_size  # at most st_size bytes are sent, whatever the file does meanwhile
        end, detail = self.stream(fd, name, st)
        if end == "ok":
            self.kept += 1
        else:
            self.skip(name, end, detail)

    def stream(self, fd: int, name: str, st: "os.stat_result") -> "tuple[str, str]":
        """Send the file as ``file`` frames; (how it ended, a detail for the note)."""
        remaining = st.st_size
        frame: dict[str, Any] = {"id": self.request_id, "op": "file", "name": name}
        self.streaming = name
        while True:
            want = min(FILE_CHUNK, remaining)
            end = detail = ""
            try:
                data = _read_exactly(fd, want)
            except OSError as exc:
                data, end, detail = b"", "unreadable", exc.strerror or type(exc).__name__
            else:
                remaining -= len(data)
                if len(data) < want:
                    end, detail = "changed", "shorter than when it was opened"
                elif remaining == 0:
                    end, detail = _unchanged(fd, st)
            frame["data"] = data
            frame["end"] = end or None
            self.send(frame)
            if end:
                self.streaming = None
                return end, detail
            frame = {"id": self.request_id, "op": "file"}


class _Unseen:
    """Stands for the entries past ``_MAX_ENTRIES`` (by name): counted as omitted, never looked at."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.name = "\U0010ffff"


def _first_entries(dfd: int) -> "list[Any]":
    """The first ``_MAX_ENTRIES`` entries by name (plus one ``_Unseen`` for the rest), in bounded memory."""
    kept: list[Any] = []
    dropped = 0
    with os.scandir(dfd) as it:
        for entry in it:
            kept.append(entry)
            if len(kept) >= 2 * _MAX_ENTRIES:
                kept.sort(key=_entry_name)
                dropped += len(kept) - _MAX_ENTRIES
                del kept[_MAX_ENTRIES:]
    kept.sort(key=_entry_name)
    if len(kept) > _MAX_ENTRIES:
        dropped += len(kept) - _MAX_ENTRIES
        del kept[_MAX_ENTRIES:]
    if dropped:
        kept.append(_Unseen(dropped))
    return kept


def _entry_name(entry: "Any") -> str:
    name: str = entry.name
    return name


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, or fewer at end of file."""
    chunks = []
    got = 0
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _unchanged(fd: int, before: "os.stat_result") -> "tuple[str, str]":
    """("ok", "") when the file read to its end is still what ``before`` described."""
    after = os.fstat(fd)
    if after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns:
        return "changed", "written to while it was read"
    return "ok", ""


def _display_name(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _kind_of(entry: "os.DirEntry[str]") -> str:
    try:
        return _KINDS.get(entry.stat(follow_symlinks=False).st_mode & _S_IFMT, "special file")
    except OSError:
        return "special file"


def _kind_at(path: str) -> str | None:
    try:
        return _KINDS.get(os.lstat(path).st_mode & _S_IFMT, "regular file")
    except OSError:
        return None


# ---------------------------------------------------------------- removal


def _repair_root(root: str) -> None:
    """Make ``root`` a writable directory again, whatever a command put in its place."""
    try:
        is_dir = (os.lstat(root).st_mode & _S_IFMT) == _S_IFDIR
    except FileNotFoundError:
        is_dir = False
    if is_dir:
        os.chmod(root, 0o755)
    else:
        _remove_tree(root)
    os.makedirs(root, exist_ok=True)


def _open_dir(name: str, parent: int | None) -> int:
    """A directory opened without following a link; one the command made unreadable is made readable."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        handle = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            os.chmod(f"/proc/self/fd/{handle}", 0o700)  # the directory itself: an O_PATH fd is no link
        finally:
            os.close(handle)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _remove_tree(path: str) -> None:
    """Remove ``path`` and everything under it, never following a symlink; never raises, logs what stays."""
    try:
        top = _open_dir(path, None)
    except OSError:
        with ignore(OSError):
            os.unlink(path)  # a file, link or FIFO in its place, or nothing at all
        return
    try:
        _empty_tree(top)
        os.rmdir(path)
    except Exception as exc:  # what stays is a leftover of this sandbox's /tmp, not a failed command
        log(f"could not remove an output directory: {exc!r}")
    finally:
        os.close(top)


def _empty_tree(top: int) -> None:
    """Empty the directory open as ``top``, however deep, holding at most three fds at once.

    Depth first without recursion: each level keeps its identity and the subdirectories still to
    visit; going back up opens ``..`` and checks it is the directory we came from (nothing of the
    command runs any more, so it always is; if not, removal stops there).
    """
    levels = [_Level(top, "")]
    fd = top
    try:
        while True:
            level = levels[-1]
            if level.pending:
                name = level.pending.pop()
                try:
                    child = _open_dir(name, fd)
                except OSError as exc:
                    log(f"could not remove an output directory: {exc.strerror}")
                    continue
                if fd != top:
                    os.close(fd)
                fd = child
                levels.append(_Level(fd, name))
                continue
            if len(levels) == 1:
                return
            levels.pop()
            parent = top if len(levels) == 1 else os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            if levels[-1].identity != _identity(fd):
                log("an output directory moved while it was removed; left as is")
                return
            try:
                os.rmdir(level.name, dir_fd=fd)
            except OSError as exc:
                log(f"could not remove an output directory: {exc.strerror}")
    finally:
        if fd != top:
            os.close(fd)


class _Level:
    """One directory on the way down: its identity, its name in its parent, its subdirectories left.

    Made when the directory is entered, which also unlinks everything in it but subdirectories.
    """

    __slots__ = ("identity", "name", "pending")

    def __init__(self, fd: int, name: str) -> None:
        self.name = name
        self.identity = _identity(fd)
        self.pending: list[str] = []
        with os.scandir(fd) as it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        self.pending.append(entry.name)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                except OSError as exc:
                    log(f"could not remove an output file: {exc.strerror}")


def _identity(fd: int) -> "tuple[int, int]":
    st = os.fstat(fd)
    if (st.st_mode & 0o700) != 0o700:  # a command may have taken its own write or search bit away
        with ignore(OSError):
            os.fchmod(fd, 0o700)
    return st.st_dev, st.st_ino
