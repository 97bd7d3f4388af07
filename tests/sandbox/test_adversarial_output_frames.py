"""``$OUTPUT_DIR`` attacks that need a hand on the clock or on the wire, made deterministic.

- The executor's collector (``executor/outputs.py``) run in-process on a scratch directory, its frames
  captured by the ``send`` it is given: a file that grows, shrinks or is rewritten while it is read
  (the test changes it from ``send``, between two chunks: no race), device nodes, a tree thousands of
  levels deep, more entries than it looks at, a failure in the middle of a file.
- The gateway's receiver (``sandbox/output_files.py``) fed forged frames, as a hostile executor
  would send them: every limit is checked on the gateway's side too, and nothing stays in the spool.
- The client and a real executor streaming 200 MiB of sparse output: the gateway's peak RSS stays
  flat while the spool fills (the sandboxed attacks are in ``test_adversarial_outputs.py``).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from execbridge.sandbox.executor import outputs
from execbridge.sandbox.output_files import OutputReceiver
from execbridge.sandbox.protocol import FILE_CHUNK, ProtocolError

from .test_client import LIMITS, Spool, start_executor

pytestmark = [pytest.mark.adversarial]

MIB = 1 << 20


# ---------------------------------------------------------------- the executor's collector, in-process


def collect(
    tmp_path: Path,
    make: Callable[[Path], None],
    *,
    on_frame: Callable[[dict[str, Any]], None] | None = None,
    file_limit: int = 8 * MIB,
    count: int = 8,
    total: int = 16 * MIB,
) -> tuple[list[dict[str, Any]], dict[str, Any], Path]:
    """Make a ``$OUTPUT_DIR`` with ``make``, collect it; (frames sent, answer fields, output root)."""
    frames: list[dict[str, Any]] = []

    def send(frame: dict[str, Any]) -> None:
        frames.append(dict(frame))
        if on_frame is not None:
            on_frame(frame)

    root = tmp_path / "outputs"
    dirs = outputs.OutputDirs(str(root), send)
    out_dir = dirs.fresh()
    make(Path(out_dir))
    fields = dirs.collect(out_dir, 7, file_limit, count, total)
    return frames, fields, root


def sent_files(frames: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(name, bytes sent, how it ended) per file, checking the frame sequence on the way."""
    files: list[tuple[str, int, str]] = []
    name, size = None, 0
    for frame in frames:
        assert frame["id"] == 7 and frame["op"] == "file" and len(frame["data"]) <= FILE_CHUNK
        if name is None:
            name, size = frame["name"], 0
        else:
            assert "name" not in frame
        size += len(frame["data"])
        if frame["end"] is not None:
            files.append((name, size, frame["end"]))
            name = None
    assert name is None, "a file was left open"
    return files


def write(path: Path, size: int) -> None:
    path.write_bytes(os.urandom(size))


def on_first_frame_of(name: str, change: Callable[[], None]) -> Callable[[dict[str, Any]], None]:
    def hook(frame: dict[str, Any]) -> None:
        if frame.get("name") == name:
            change()

    return hook


def append(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"more")


CHANGES = {
    "grows": (append, "written to while it was read"),
    "shrinks": (lambda p: os.truncate(p, 10), "shorter than when it was opened"),
    "is rewritten in place": (lambda p: os.utime(p, ns=(1, 1)), "written to while it was read"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_file_changed_while_it_is_read_is_dropped_and_named(tmp_path: Path, change: str):
    mutate, detail = CHANGES[change]
    big: list[Path] = []

    def make(out: Path) -> None:
        write(out / "big.bin", 3 * FILE_CHUNK)
        write(out / "ok.txt", 10)
        big.append(out / "big.bin")

    frames, fields, root = collect(tmp_path, make, on_frame=on_first_frame_of("big.bin", lambda: mutate(big[0])))
    files = sent_files(frames)
    assert files[0][0] == "big.bin" and files[0][2] == "changed" and files[0][1] <= 3 * FILE_CHUNK
    assert files[1:] == [("ok.txt", 10, "ok")]
    assert fields["files_skipped"] == [["big.bin", "changed", detail]]
    assert os.listdir(root) == []  # the directory is gone, changed file and all


def test_devices_fifos_sockets_and_link_loops_are_never_opened(tmp_path: Path):
    import socket

    def make(out: Path) -> None:
        os.mknod(out / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(out / "disk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
        os.mkfifo(out / "fifo")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(out / "sock"))
        os.symlink("loop", out / "loop")
        (out / "a.txt").write_bytes(b"a")
        os.link(out / "a.txt", out / "b.txt")

    frames, fields, _ = collect(tmp_path, make)
    assert sent_files(frames) == [("a.txt", 1, "ok")]
    assert sorted(fields["files_skipped"]) == [
        ["b.txt", "hard_link", "a.txt"],
        ["disk", "not_regular", "device"],
        ["fifo", "not_regular", "FIFO"],
        ["loop", "not_regular", "symbolic link"],
        ["null", "not_regular", "device"],
        ["sock", "not_regular", "socket"],
    ]


def test_a_tree_thousands_of_levels_deep_is_removed_without_recursion(tmp_path: Path):
    def make(out: Path) -> None:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
        for level in range(3000):  # deeper than PATH_MAX allows to name, built one level at a time
            os.mkdir("d", dir_fd=fd)
            if level % 500 == 1:  # FIFOs on the way down, never at the top
                os.mknod("fifo", stat.S_IFIFO | 0o600, dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(fd)
        (out / "keep.txt").write_bytes(b"kept")

    frames, fields, root = collect(tmp_path, make)
    assert sent_files(frames) == [("keep.txt", 4, "ok")]
    assert fields["files_skipped"] == [["d", "not_regular", "directory"]]
    assert os.listdir(root) == []


def test_entries_past_the_ones_looked_at_are_counted_not_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(outputs, "_MAX_ENTRIES", 10)

    def make(out: Path) -> None:
        for i in range(45):
            (out / f"f{i:02}").write_bytes(b"x")

    frames, fields, _ = collect(tmp_path, make, count=100)
    assert [name for name, _, _ in sent_files(frames)] == [f"f{i:02}" for i in range(10)]  # the first by name
    assert fields["files_omitted"] == 35


def test_a_failure_in_the_middle_of_a_file_closes_it_and_keeps_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    reads = 0
    real_read = outputs._read_exactly

    def failing_read(fd: int, size: int) -> bytes:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise MemoryError
        return real_read(fd, size)

    monkeypatch.setattr(outputs, "_read_exactly", failing_read)
    frames, fields, root = collect(tmp_path, lambda out: write(out / "big.bin", 3 * FILE_CHUNK))
    assert sent_files(frames) == [("big.bin", FILE_CHUNK, "failed")]
    assert fields["files_skipped"] == [["big.bin", "failed", "MemoryError"]]
    assert os.listdir(root) == []


def test_a_gateway_gone_away_is_not_a_collection_error(tmp_path: Path):
    def send(frame: dict[str, Any]) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    dirs = outputs.OutputDirs(str(tmp_path / "outputs"), send)
    out_dir = dirs.fresh()
    write(Path(out_dir) / "a.bin", 10)
    with pytest.raises(BrokenPipeError):
        dirs.collect(out_dir, 7, MIB, 8, MIB)


# ---------------------------------------------------------------- the gateway's receiver, forged frames


def frame(data: bytes = b"", end: str | None = "ok", name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": 1, "op": "file", "data": data, "end": end}
    if name is not None:
        out["name"] = name
    return out


def receiver(spool: Spool, *, file_limit: int = 4 * MIB, count: int = 2, total: int = 6 * MIB) -> OutputReceiver:
    return OutputReceiver(spool, file_limit=file_limit, file_count=count, file_total=total)


FORGED = {
    "a chunk over FILE_CHUNK": [frame(b"x" * (FILE_CHUNK + 1), name="a")],
    "a file over its limit": [frame(b"x" * MIB, None, "a"), *[frame(b"x" * MIB, None)] * 4],
    "more than the total": [
        *[frame(b"x" * (3 * MIB // 2), name=n) for n in ("a", "b")],
        frame(b"y" * MIB, None, "c"),
        *[frame(b"y" * MIB, None)] * 3,
    ],
    "more files than the count": [frame(b"x", name=n) for n in ("a", "b", "c")],
    "a name with a slash": [frame(b"x", name="../etc/passwd")],
    "an empty name": [frame(b"x", name="")],
    "a new file inside another": [frame(b"x", None, "a"), frame(b"y", name="b")],
    "data without a file": [frame(b"x")],
    "an unknown end": [frame(b"x", "maybe", "a")],
}


@pytest.mark.parametrize("forgery", FORGED)
async def test_forged_file_frames_are_protocol_errors_and_leave_nothing(tmp_path: Path, forgery: str):
    spool = Spool(tmp_path / "spool")
    taker = receiver(spool, count=2 if forgery != "more than the total" else 8)
    with pytest.raises(ProtocolError):
        for forged in FORGED[forgery]:
            await taker.take(forged)
        taker.finish()
    taker.discard()  # what the client does when an exchange fails
    assert list(spool.root.iterdir()) == []


async def test_the_answer_inside_a_file_is_a_protocol_error(tmp_path: Path):
    taker = receiver(Spool(tmp_path / "spool"))
    await taker.take(frame(b"x", None, "a"))
    with pytest.raises(ProtocolError):
        taker.finish()


async def test_an_abandoned_exchange_drops_what_comes_and_removes_what_came(tmp_path: Path):
    spool = Spool(tmp_path / "spool")
    taker = receiver(spool)
    await taker.take(frame(b"kept", name="a"))
    await taker.take(frame(b"x" * MIB, None, "b"))
    taker.abandon()
    await taker.take(frame(b"y" * MIB, "ok"))
    taker.finish()
    assert taker.files == [] and list(spool.root.iterdir()) == []


async def test_a_disk_that_refuses_the_bytes_makes_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from execbridge.sandbox import output_files

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    spool = Spool(tmp_path / "spool")
    taker = receiver(spool)
    monkeypatch.setattr(output_files, "_append", full)
    await taker.take(frame(b"x" * 10, name="a"))
    monkeypatch.undo()
    await taker.take(frame(b"fine", name="b"))
    taker.finish()
    assert [(f.name, f.size, f.path and f.path.read_bytes()) for f in taker.files] == [("b", 4, b"fine")]
    assert [(s.name, s.reason, s.detail) for s in taker.skipped] == [("a", "unstored", "No space left on device")]
    assert [p.name for p in spool.root.iterdir()] == [taker.files[0].path.name]  # type: ignore[union-attr]


# ---------------------------------------------------------------- the whole client: memory stays flat


def _status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


async def test_streaming_200_mib_keeps_the_gateways_memory_flat(tmp_path: Path):
    limits = replace(LIMITS, output_file_limit_bytes=128 * MIB, output_total_limit_bytes=256 * MIB)
    async with start_executor(tmp_path, limits=limits) as ex:
        await ex.client.ready()
        Path("/proc/self/clear_refs").write_text("5")
        rss = _status_kib("VmRSS")
        result = await ex.client.run_bash(
            'cd "$OUTPUT_DIR"; truncate -s 100M a; head -c 1M /dev/urandom > b; truncate -s 99M b',
            spool=ex.spool,
        )
        growth = (_status_kib("VmHWM") - rss) << 10
    assert (result.return_code, result.error_code) == (0, None)
    assert [(f.name, f.size) for f in result.files] == [("a", 100 * MIB), ("b", 99 * MIB)]
    assert sum(p.stat().st_size for p in ex.spool.root.iterdir()) == 199 * MIB
    assert growth < 32 * MIB, f"the gateway's peak RSS grew by {growth >> 20} MiB for 199 MiB of output"
