"""``$OUTPUT_DIR``: a fresh directory for every command, its files read afterwards, then removed.

Job: hand each command an empty ``<output-root>/<n>`` (Anthropic gives every command its own, docs/protocol.md §2.9),
outside the workspace; once every process of the command is dead, read the regular files at its
top level within the caps and remove the directory. Files left elsewhere stay in the container.

Must not: follow a symlink — neither the directory (a command may swap it for a link) nor anything
in it — or block on a FIFO: everything is opened ``O_NOFOLLOW``/``O_NONBLOCK`` relative to a
directory fd, so planted links can only ever resolve inside the sandbox's own view, and only to be
skipped; read past ``file_limit`` per file or past what one response frame can carry in all.

Invariants: a directory the last command left empty and untouched (mode 0755) is indistinguishable
from a new one and is handed out again (saves a mkdir/rmdir pair, ~0.5 ms on ext4); any other is
removed before the next command starts.
"""

import os

from .common import ignore, log, read_upto
from .framing import MAX_RESPONSE_BODY

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class OutputDirs:
    """The ``$OUTPUT_DIR`` of each command, under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
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
            _remove_path(out_dir)
        os.mkdir(out_dir, 0o755)
        return out_dir

    def unused(self, out_dir: str) -> None:
        """The command could not start: its directory is still empty and serves the next one."""
        self.spare = out_dir

    def collect(
        self, out_dir: str, file_limit: int, file_count: int, output_bytes: int
    ) -> "tuple[list[dict[str, Any]], list[str], int]":
        """(files, names too large, count omitted) of a finished command; the directory is gone after."""
        files, too_large, omitted, reusable = _collect_outputs(out_dir, file_limit, file_count, output_bytes)
        self.spare = out_dir if reusable else None
        return files, too_large, omitted


def _display_name(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _collect_outputs(
    path: str, file_limit: int, file_count: int, output_bytes: int
) -> "tuple[list[dict[str, Any]], list[str], int, bool]":
    """Read the regular files at the top level of ``$OUTPUT_DIR``, then empty or remove it.

    Runs after every process of the command is dead. Symlinks, FIFOs and directories are skipped
    (O_NOFOLLOW, fstat); the directory itself is opened with O_NOFOLLOW, so a command that swapped
    it for a symlink cannot make the executor read or delete anything else. The last value says the
    directory was left empty and unchanged, so it may serve the next command as is.
    """
    files: list[dict[str, Any]] = []
    too_large: list[str] = []
    omitted = 0
    budget = MAX_RESPONSE_BODY - output_bytes - (1 << 20)
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        _remove_path(path)
        return files, too_large, omitted, False
    try:
        names = os.listdir(dfd)
        if not names and (os.fstat(dfd).st_mode & 0o7777) == 0o755:
            return files, too_large, omitted, True
        for name in sorted(names):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                continue  # a symlink (ELOOP), unreadable, or gone
            try:
                st = os.fstat(fd)
                if (st.st_mode & 0o170000) != 0o100000:
                    continue
                if len(files) >= file_count:
                    omitted += 1
                    continue
                data = read_upto(fd, file_limit + 1) if st.st_size <= file_limit else b""
                if st.st_size > file_limit or len(data) > file_limit:
                    too_large.append(_display_name(name))
                    continue
                if len(data) > budget:
                    omitted += 1
                    continue
                budget -= len(data)
                files.append({"name": _display_name(name), "data": data})
            finally:
                os.close(fd)
        _clear_dir(dfd)
    finally:
        os.close(dfd)
    try:
        os.rmdir(path)
    except OSError as exc:
        log(f"could not remove an output directory: {exc.strerror}")
    return files, too_large, omitted, False


def _clear_dir(dfd: int) -> None:
    """Empty a directory opened as ``dfd`` without ever following a symlink."""
    for entry in os.scandir(dfd):
        try:
            if entry.is_dir(follow_symlinks=False):
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    _clear_dir(sub)
                finally:
                    os.close(sub)
                os.rmdir(entry.name, dir_fd=dfd)
            else:
                os.unlink(entry.name, dir_fd=dfd)
        except OSError as exc:
            log(f"could not remove an output file: {exc.strerror}")


def _remove_path(path: str) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        with ignore(OSError):
            os.unlink(path)
        return
    try:
        _clear_dir(dfd)
    finally:
        os.close(dfd)
    with ignore(OSError):
        os.rmdir(path)
