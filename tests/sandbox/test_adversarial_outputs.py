"""The adversarial suite for ``$OUTPUT_DIR``: what a command leaves there must never cost the gateway
more than the command's budget, nor cost the command its own result.

Every attack runs through the full stack (manager → live sandbox → executor → client → a real
``FileService`` under the manager's data directory), with small limits: 12 MiB per file, 16 MiB per
command, 8 files. What is checked does not depend on timing: the bytes that reached the data
directory, the frames the gateway read (how many, how big), the gateway process's peak RSS (reset
before each attack), the command's own stdout, stderr and return code, and that the container and
another one still answer afterwards.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from execbridge.files import FileService
from execbridge.sandbox import client as client_module
from execbridge.sandbox.base import ExecutionResult
from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.manager import ContainerManager
from execbridge.sandbox.protocol import FILE_CHUNK, MAX_LISTED
from execbridge.sandbox.session import LeasedSession
from execbridge.store.memory import MemoryStore
from execbridge.tools.code_execution import BASH, PYTHON, run_call
from execbridge.types import CommandOutcome, OutputFile, ToolFailure

from .conftest import BASELINE_PROCS, container, open_manager, private_dir, sandbox_pids

pytestmark = [pytest.mark.adversarial, pytest.mark.asyncio(loop_scope="module")]

FILE_LIMIT = 12 << 20
TOTAL = 16 << 20
COUNT = 8
OUTPUT_LIMIT = 64 * 1024  # stdout/stderr per command (conftest.small_settings)
RSS_SLACK = 32 << 20  # the gateway's peak RSS may grow by this much during one attack, no more
OWNER = "attacker"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def m(base_dir: Path, doctor_report: DoctorReport) -> AsyncIterator[ContainerManager]:
    data = private_dir(base_dir, "adversarial-outputs-")
    limits = {"output_file_limit_bytes": FILE_LIMIT, "output_total_limit_bytes": TOTAL, "output_file_count": COUNT}
    async with open_manager(data, doctor_report, spare_containers=1, command_timeout_s=20.0, **limits) as manager:
        yield manager


@pytest.fixture(scope="module")
def files(m: ContainerManager) -> FileService:
    service = FileService(MemoryStore().files, m.settings.files_dir, max_bytes=1 << 30)
    service.prepare()
    return service


# ---------------------------------------------------------------- what the gateway paid


@dataclass
class Wire:
    """The frames the gateway read during one test: file frames and answers, by their binary bytes."""

    file_frames: int = 0
    file_bytes: int = 0
    biggest_file_frame: int = 0
    biggest_answer: int = 0


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    seen = Wire()
    original = client_module.read_frame

    async def recording(reader: Any, **kwargs: Any) -> dict[str, Any]:
        frame = await original(reader, **kwargs)
        size = sum(len(v) for v in frame.values() if isinstance(v, bytes))
        if frame.get("op") == "file":
            seen.file_frames += 1
            seen.file_bytes += size
            seen.biggest_file_frame = max(seen.biggest_file_frame, size)
        else:
            seen.biggest_answer = max(seen.biggest_answer, size)
        return frame

    monkeypatch.setattr(client_module, "read_frame", recording)
    return seen


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes allocated, apparent bytes) of every file under ``root``."""
    allocated = apparent = 0
    for path in root.rglob("*"):
        st = path.lstat()
        allocated += st.st_blocks * 512
        apparent += st.st_size
    return allocated, apparent


def _status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


@dataclass
class Cost:
    """What one attack cost the gateway: data directory growth and peak RSS growth, in bytes."""

    allocated: int
    apparent: int
    peak_rss_growth: int


@asynccontextmanager
async def measured(files: FileService) -> AsyncIterator[list[Cost]]:
    """Measure the block: the data directory's growth and this process's peak RSS (reset at the start)."""
    before = disk_usage(files.root)
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from the current RSS
    rss = _status_kib("VmRSS")
    out: list[Cost] = []
    yield out
    after = disk_usage(files.root)
    out.append(Cost(after[0] - before[0], after[1] - before[1], (_status_kib("VmHWM") - rss) << 10))
    assert not list(files.root.glob(".tmp-*")), "a spool file was left behind"


async def run(
    s: LeasedSession, files: FileService, source: str, *, python: bool = False
) -> tuple[ExecutionResult, tuple[OutputFile, ...]]:
    """Run a command with a Files API batch as its spool; publish what it returned."""
    batch = files.output_batch(OWNER)
    try:
        if python:
            result = await s.run_python(source, spool=batch)
        else:
            result = await s.run_bash(source, spool=batch)
        published = await batch.publish([(f.name, f.path) for f in result.files if f.path is not None])
    finally:
        batch.discard()
    return result, published


def skipped(result: ExecutionResult) -> list[tuple[str, str, str]]:
    return [(s.name, s.reason, s.detail) for s in result.files_skipped]


async def assert_responsive(m: ContainerManager, s: LeasedSession) -> None:
    """The attacked container and a fresh one both still answer, and nothing of the attack runs on."""
    assert (await s.run_bash("echo again")).stdout == "again\n"
    assert len(sandbox_pids(m, s)) == BASELINE_PROCS
    async with container(m, "bystander") as other:
        assert (await other.run_bash("echo alive")).stdout == "alive\n"


# ---------------------------------------------------------------- sparse files


SPARSE_ATTACKS = {
    "eight files of 100 MiB": ('for i in 1 2 3 4 5 6 7 8; do truncate -s 100M "$OUTPUT_DIR/s$i"; done', 8, 0),
    "300 files of 1 GiB": ('for i in $(seq 100 399); do truncate -s 1G "$OUTPUT_DIR/s$i"; done', MAX_LISTED, 200),
    "one file of 1 TiB": ('truncate -s 1T "$OUTPUT_DIR/tera"', 1, 0),
    "one byte over the limit": (f'truncate -s {FILE_LIMIT + 1} "$OUTPUT_DIR/s1"', 1, 0),
}


@pytest.mark.parametrize("attack", SPARSE_ATTACKS)
async def test_sparse_files_of_huge_apparent_size_are_never_read(
    m: ContainerManager, files: FileService, wire: Wire, attack: str
):
    command, listed, unlisted = SPARSE_ATTACKS[attack]
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, f"{command}; echo done; echo warned >&2; exit 3")
    assert (result.stdout, result.stderr, result.return_code) == ("done\n", "warned\n", 3)
    assert result.error_code == "output_file_too_large"
    assert (len(result.files_too_large), result.files_too_large_unlisted) == (listed, unlisted)
    assert result.files == () and published == ()
    assert wire.file_frames == 0  # an apparent size over the limit is never read
    (spent,) = cost
    assert (spent.allocated, spent.apparent) == (0, 0)
    assert spent.peak_rss_growth < RSS_SLACK


async def test_sparse_files_that_fit_are_streamed_in_chunks_within_the_budget(
    m: ContainerManager, files: FileService, wire: Wire
):
    command = 'for i in 1 2 3 4 5; do truncate -s 6M "$OUTPUT_DIR/s$i"; done; echo made'
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, command)
        await assert_responsive(m, s)
    assert (result.stdout, result.return_code, result.error_code) == ("made\n", 0, None)
    assert [(f.filename, f.size_bytes) for f in published] == [("s1", 6 << 20), ("s2", 6 << 20)]
    assert result.files_omitted == 3  # 12 MiB taken, 6 MiB more would pass the 16 MiB budget
    assert wire.file_bytes == 12 << 20 and wire.file_frames == 12
    assert wire.biggest_file_frame <= FILE_CHUNK and wire.biggest_answer <= 2 * OUTPUT_LIMIT
    (spent,) = cost
    assert spent.apparent == 12 << 20 and spent.allocated <= TOTAL + (1 << 20)
    assert spent.peak_rss_growth < RSS_SLACK


async def test_through_the_tool_bash_gets_its_error_block_and_python_its_note(m: ContainerManager, files: FileService):
    publish = lambda: files.output_batch(OWNER)  # noqa: E731
    sparse = "import os\nfor i in range(8):\n    open(os.environ['OUTPUT_DIR'] + f'/s{i}', 'w').truncate(100 << 20)\n"
    async with container(m) as s, measured(files) as cost:
        bash = await run_call(s, BASH, {"command": 'truncate -s 100M "$OUTPUT_DIR/big"'}, m.settings.sandbox, publish)
        python = await run_call(s, PYTHON, {"code": sparse + "print('ok')"}, m.settings.sandbox, publish)
    assert isinstance(bash, ToolFailure) and bash.error_code == "output_file_too_large"
    assert "big in $OUTPUT_DIR over the" in bash.message
    assert isinstance(python, CommandOutcome) and (python.stdout, python.return_code, python.files) == ("ok\n", 0, ())
    assert python.stderr.startswith("[execbridge] not returned from $OUTPUT_DIR, over the 12582912-byte limit: s0, s1")
    assert cost[0].apparent == 0


# ---------------------------------------------------------------- hard links


HARD_LINKS = {
    # name: (command, files returned, hard links listed, hard links unlisted, bytes streamed)
    "1000 names of one 4 MiB file": (
        'cd "$OUTPUT_DIR"; head -c 4M /dev/urandom > a; for i in $(seq 1 999); do ln a "l$i"; done',
        1,
        MAX_LISTED,
        899,
        4 << 20,
    ),
    "50 names of one sparse 100 MiB file": (
        'truncate -s 100M /tmp/big; for i in $(seq 10 59); do ln /tmp/big "$OUTPUT_DIR/l$i"; done',
        0,
        49,
        0,
        0,
    ),
    "20 names of a 10 MiB file in /tmp": (
        'truncate -s 10M /tmp/ten; for i in $(seq 10 29); do ln /tmp/ten "$OUTPUT_DIR/t$i"; done',
        1,
        19,
        0,
        10 << 20,
    ),
}


@pytest.mark.parametrize("attack", HARD_LINKS)
async def test_hard_links_are_read_and_sent_once(m: ContainerManager, files: FileService, wire: Wire, attack: str):
    command, returned, listed, unlisted, streamed = HARD_LINKS[attack]
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, f"{command}; echo linked")
        await assert_responsive(m, s)
    assert (result.stdout, result.return_code) == ("linked\n", 0)
    assert len(published) == returned
    links = [entry for entry in skipped(result) if entry[1] == "hard_link"]
    assert len(links) == listed and result.files_skipped_unlisted == unlisted
    first = published[0].filename if published else result.files_too_large[0]
    assert {detail for _, _, detail in links} == {first}  # each names the one name taken
    assert wire.file_bytes == streamed
    (spent,) = cost
    assert spent.apparent == streamed and spent.allocated <= streamed + (1 << 20)
    assert spent.peak_rss_growth < RSS_SLACK


async def test_hard_links_across_commands_are_taken_once_per_command(
    m: ContainerManager, files: FileService, wire: Wire
):
    link = 'for i in $(seq 1 20); do ln /tmp/shared "$OUTPUT_DIR/x$i"; done; echo round'
    async with container(m) as s, measured(files) as cost:
        made = await s.run_bash("head -c 3M /dev/urandom > /tmp/shared; sha256sum < /tmp/shared")
        digest = made.stdout.split()[0]
        rounds = [await run(s, files, link) for _ in range(3)]
    for result, published in rounds:
        assert (result.stdout, result.return_code) == ("round\n", 0)
        assert [(f.filename, f.size_bytes) for f in published] == [("x1", 3 << 20)]
        assert len(result.files_skipped) == 19
        record = await files.get(OWNER, published[0].file_id)
        assert hashlib.sha256(await files.read(record)).hexdigest() == digest
    assert len({published[0].file_id for _, published in rounds}) == 3
    assert wire.file_bytes == 3 * (3 << 20)
    assert cost[0].apparent == 3 * (3 << 20)


# ---------------------------------------------------------------- one huge real file


async def test_one_huge_real_file_is_never_read(m: ContainerManager, files: FileService, wire: Wire):
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, 'head -c 24M /dev/urandom > "$OUTPUT_DIR/huge.bin"; echo wrote')
        await assert_responsive(m, s)
    assert (result.stdout, result.return_code, result.files_too_large) == ("wrote\n", 0, ("huge.bin",))
    assert published == () and wire.file_frames == 0
    assert cost[0].apparent == 0 and cost[0].peak_rss_growth < RSS_SLACK


async def test_real_files_past_the_budget_are_left_out_with_a_note(m: ContainerManager, files: FileService, wire: Wire):
    command = (
        'head -c 10M /dev/urandom > "$OUTPUT_DIR/a.bin"; head -c 10M /dev/urandom > "$OUTPUT_DIR/b.bin"; '
        'echo small > "$OUTPUT_DIR/c.txt"; sha256sum "$OUTPUT_DIR/a.bin"'
    )
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, command)
    assert result.return_code == 0 and result.error_code is None
    assert [f.filename for f in published] == ["a.bin", "c.txt"]  # b.bin no longer fits; c.txt does
    assert result.files_omitted == 1
    record = await files.get(OWNER, published[0].file_id)
    assert hashlib.sha256(await files.read(record)).hexdigest() == result.stdout.split()[0]
    assert wire.file_bytes == (10 << 20) + 6 and wire.biggest_file_frame <= FILE_CHUNK
    assert cost[0].apparent == (10 << 20) + 6


# ---------------------------------------------------------------- deep trees


DEEP = "for _ in range(1500):\n    os.mkdir('d'); os.chdir('d')\nopen('bottom.txt', 'w').write('x')\n"
KEEP = "import os\nout = os.environ['OUTPUT_DIR']\nopen(out + '/keep.txt', 'w').write('kept')\n"
NEXT = "nxt = f'{out}/../{int(os.path.basename(out)) + 1}'\nos.mkdir(nxt); os.chdir(nxt)\n"
LOCK = "os.chmod('.', 0o500)\nfor _ in range(700):\n    os.chdir('..')\nos.chmod('d', 0)\n"
DEEP_TREES = {
    "1500 levels in $OUTPUT_DIR": f"{KEEP}os.chdir(out)\n{DEEP}",
    "1500 levels, locked on the way": f"{KEEP}os.chdir(out)\n{DEEP}{LOCK}",
    "1500 levels where the next command's directory goes": f"{KEEP}{NEXT}{DEEP}",
}


@pytest.mark.parametrize("attack", DEEP_TREES)
async def test_deep_trees_end_with_the_commands_own_result(m: ContainerManager, files: FileService, attack: str):
    code = DEEP_TREES[attack] + "print('deep')\n"
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, code, python=True)
        after = await s.run_bash('echo "$OUTPUT_DIR"; find /tmp/outputs | wc -l')
        await assert_responsive(m, s)
    assert (result.stdout, result.stderr, result.return_code) == ("deep\n", "", 0)
    assert [(f.filename, f.size_bytes) for f in published] == [("keep.txt", 4)]
    if attack == "1500 levels in $OUTPUT_DIR":
        assert skipped(result) == [("d", "not_regular", "directory")]
    _, count = after.stdout.split()
    assert int(count) <= 3, "the tree was not removed"  # /tmp/outputs, this $OUTPUT_DIR, maybe a spare
    assert (after.return_code, after.stderr) == (0, "")
    assert cost[0].apparent == 4


# ---------------------------------------------------------------- links, FIFOs, sockets, odd directories


SPECIAL = r"""
import os, socket
os.chdir(os.environ['OUTPUT_DIR'])
open('ok.txt', 'w').write('ok')
os.mkfifo('fifo')
socket.socket(socket.AF_UNIX).bind('sock')
os.symlink('loop2', 'loop1'); os.symlink('loop1', 'loop2'); os.symlink('self', 'self')
os.symlink('/dev/zero', 'zero'); os.symlink('fifo', 'to_fifo'); os.symlink('/etc/passwd', 'passwd')
open('locked.txt', 'w').write('no'); os.chmod('locked.txt', 0)
os.mkdir('sub'); open('sub/inside.txt', 'w').write('deep')
print('special')
"""


async def test_fifos_sockets_links_and_unreadable_files_are_named_not_followed(m: ContainerManager, files: FileService):
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, SPECIAL, python=True)
        await assert_responsive(m, s)
    assert (result.stdout, result.stderr, result.return_code) == ("special\n", "", 0)
    assert [f.filename for f in published] == ["ok.txt"]
    assert sorted(skipped(result)) == [
        ("fifo", "not_regular", "FIFO"),
        ("locked.txt", "unreadable", "Permission denied"),
        ("loop1", "not_regular", "symbolic link"),
        ("loop2", "not_regular", "symbolic link"),
        ("passwd", "not_regular", "symbolic link"),
        ("self", "not_regular", "symbolic link"),
        ("sock", "not_regular", "socket"),
        ("sub", "not_regular", "directory"),
        ("to_fifo", "not_regular", "symbolic link"),
        ("zero", "not_regular", "symbolic link"),
    ]
    assert cost[0].apparent == 2


REPLACED = {
    "by a regular file": ('rm -r "$OUTPUT_DIR"; echo x > "$OUTPUT_DIR"', [(".", "replaced", "regular file")]),
    "by a FIFO": ('rm -r "$OUTPUT_DIR"; mkfifo "$OUTPUT_DIR"', [(".", "replaced", "FIFO")]),
    "by a symlink loop": (
        'rm -r "$OUTPUT_DIR"; ln -s "$OUTPUT_DIR" "$OUTPUT_DIR"',
        [(".", "replaced", "symbolic link")],
    ),
    "made unreadable": ('echo x > "$OUTPUT_DIR/f"; chmod 0 "$OUTPUT_DIR"', [(".", "unreadable", "Permission denied")]),
    "removed": ('rm -r "$OUTPUT_DIR"', []),
    "with its root replaced by a file": ("rm -r /tmp/outputs; echo x > /tmp/outputs", []),
    "with its root locked": ("chmod 0 /tmp/outputs", []),
}


@pytest.mark.parametrize("attack", REPLACED)
async def test_an_output_dir_replaced_or_locked_costs_only_its_files(
    m: ContainerManager, files: FileService, attack: str
):
    command, expected = REPLACED[attack]
    async with container(m) as s:
        result, published = await run(s, files, f"{command}; echo tampered; exit 7")
        again, again_published = await run(s, files, 'echo fine > "$OUTPUT_DIR/next.txt"')
        await assert_responsive(m, s)
    assert (result.stdout, result.stderr, result.return_code) == ("tampered\n", "", 7)
    assert published == () and skipped(result) == expected
    assert again.return_code == 0 and [f.filename for f in again_published] == ["next.txt"]


# ---------------------------------------------------------------- names that are not UTF-8


NAMES = r"""
import os
out = os.fsencode(os.environ['OUTPUT_DIR'])
for name, data in [(b'\xff\xfe.bin', b'1'), (b'caf\xe9.txt', b'2'), (b'a\xff', b'3'), (b'a\xfe', b'4'),
                   (b'new\nline "q\'.txt', b'5'), (b'\xff' * 255, b'6')]:
    with open(out + b'/' + name, 'wb') as f:
        f.write(data)
os.mkfifo(out + b'/\xfe-fifo')
print('named')
"""


async def test_names_that_are_not_utf8_come_back_readable(m: ContainerManager, files: FileService):
    async with container(m) as s:
        result, published = await run(s, files, NAMES, python=True)
    assert (result.stdout, result.return_code) == ("named\n", 0)
    got = {}
    for output in published:
        record = await files.get(OWNER, output.file_id)
        got.setdefault(record.filename, []).append(await files.read(record))
    assert got == {
        "\ufffd\ufffd.bin": [b"1"],
        "caf\ufffd.txt": [b"2"],
        "a\ufffd": [b"4", b"3"],  # two names, one after replacement: both files come back (b"a\xfe" sorts first)
        "new\nline \"q'.txt": [b"5"],
        "\ufffd" * 255: [b"6"],
    }
    assert skipped(result) == [("\ufffd-fifo", "not_regular", "FIFO")]


# ---------------------------------------------------------------- a file growing while it is collected


async def test_a_file_grown_in_the_background_ends_consistent(m: ContainerManager, files: FileService):
    # The writer is killed with everything else before collection starts; whatever size the file had
    # by then decides whether it is returned (whole) or too large (never read). Both are checked.
    # Returns once the file exists and is growing (waits on that, not on a guess of how long it takes).
    command = (
        '(while :; do head -c 65536 /dev/zero >> "$OUTPUT_DIR/grow"; done) & '
        'for _ in $(seq 1000); do [ -s "$OUTPUT_DIR/grow" ] && break; sleep 0.01; done; echo started'
    )
    async with container(m) as s, measured(files) as cost:
        result, published = await run(s, files, command)
        await assert_responsive(m, s)
    assert (result.stdout, result.return_code) == ("started\n", 0)
    if published:
        record = await files.get(OWNER, published[0].file_id)
        assert len(await files.read(record)) == published[0].size_bytes <= FILE_LIMIT
        assert cost[0].apparent == published[0].size_bytes
    else:
        assert result.files_too_large == ("grow",) and cost[0].apparent == 0
