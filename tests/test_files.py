"""The Files API backend: bytes on disk, metadata in the store, owners, limits, paging, restarts."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import pytest

from execbridge.errors import InvalidRequest, NotFound, RequestTooLarge, StorageError
from execbridge.files import FileService, mime_type_for, upload_filename
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore
from execbridge.types import OutputFile


@pytest.fixture(params=["sqlite", "memory"])
async def store(request, tmp_path):
    s = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield s
    await s.close()


@pytest.fixture
def files(store, tmp_path) -> FileService:
    service = FileService(store.files, tmp_path / "files", max_bytes=100)
    service.prepare()
    return service


async def upload(files: FileService, owner: str, chunks: list[bytes], name: str | None, content_type: str | None):
    async with files.upload(owner) as sink:
        for chunk in chunks:
            await sink.write(chunk)
        return await sink.commit(name, content_type)


async def test_streamed_upload_round_trip(files):
    record = await upload(files, "alice", [b"a,b\n", b"1,2\n"], "data.csv", "text/csv; charset=utf-8")
    assert (record.filename, record.mime_type, record.size_bytes, record.downloadable) == (
        "data.csv",
        "text/csv",
        8,
        False,
    )
    assert record.id.startswith("file_") and record.created_at.tzinfo is not None
    assert await files.get("alice", record.id) == record
    assert await files.read(record) == b"a,b\n1,2\n"
    path = files.path_of(record)
    assert path.parent == files.root and path.name == record.id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(files.root.stat().st_mode) == 0o700
    assert not list(files.root.glob(".tmp-*"))


async def test_over_the_limit_is_refused_while_streaming_and_leaves_nothing(files, store):
    with pytest.raises(RequestTooLarge):
        await upload(files, "alice", [b"x" * 60, b"x" * 41], "big.bin", None)
    assert list(files.root.iterdir()) == []
    assert (await files.list("alice")).records == ()
    exactly = await upload(files, "alice", [b"x" * 100], "full.bin", None)  # the limit itself is fine
    assert exactly.size_bytes == 100


async def test_an_abandoned_upload_leaves_nothing(files):
    with pytest.raises(RuntimeError):
        async with files.upload("alice") as sink:
            await sink.write(b"partial")
            raise RuntimeError("client went away")
    assert list(files.root.iterdir()) == []


async def test_owners_are_separate(files):
    record = await files.create("alice", "a.txt", b"hi", downloadable=False)
    for attempt in (files.get("bob", record.id), files.delete("bob", record.id)):
        with pytest.raises(NotFound):
            await attempt
    assert (await files.list("bob")).records == ()
    assert await files.find("bob", [record.id]) == {}
    assert (await files.find("alice", [record.id, "file_nope", record.id])) == {record.id: record}


async def test_delete_removes_row_and_bytes(files):
    record = await files.create("alice", "a.txt", b"hi", downloadable=False)
    await files.delete("alice", record.id)
    assert not files.path_of(record).exists()
    with pytest.raises(NotFound):
        await files.get("alice", record.id)
    with pytest.raises(NotFound):
        await files.delete("alice", record.id)


async def test_publish_makes_downloadable_files_with_guessed_types(files):
    batch = files.output_batch("alice")
    outputs = []
    for name, data in [("chart.png", b"\x89PNG"), ("notes", b"n"), ("left.txt", b"not published")]:
        path = batch.new_path()
        assert path.parent == files.root and not path.exists()
        path.write_bytes(data)
        outputs.append((name, path))
    published = await batch.publish(outputs[:2])
    batch.discard()
    chart, _notes = published
    assert chart == OutputFile(chart.file_id, "chart.png", 4)
    records = [await files.get("alice", f.file_id) for f in published]
    assert [(r.mime_type, r.downloadable) for r in records] == [("image/png", True), ("application/octet-stream", True)]
    assert await files.read(records[1]) == b"n"
    assert sorted(p.name for p in files.root.iterdir()) == sorted(f.file_id for f in published)  # renamed, not copied
    with pytest.raises(StorageError):  # only the batch's own temporaries can be published
        await files.output_batch("alice").publish([("x", files.path_of(records[0]))])


async def test_paging_newest_first_with_every_cursor(files):
    made = [(await files.create("alice", f"{i}.txt", b"", downloadable=False)).id for i in range(5)]
    newest = made[::-1]
    first = await files.list("alice", limit=2)
    assert [r.id for r in first.records] == newest[:2] and first.has_more
    second = await files.list("alice", limit=2, after_id=newest[1])
    assert [r.id for r in second.records] == newest[2:4] and second.has_more
    last = await files.list("alice", limit=2, after=second.records[-1].cursor)
    assert [r.id for r in last.records] == newest[4:] and not last.has_more
    back = await files.list("alice", limit=2, before_id=newest[3])
    assert [r.id for r in back.records] == newest[1:3] and back.has_more
    top = await files.list("alice", limit=5, before_id=newest[2])
    assert [r.id for r in top.records] == newest[:2] and not top.has_more

    # A position cursor outlives the file it came from.
    cursor = (await files.get("alice", newest[1])).cursor
    await files.delete("alice", newest[1])
    assert [r.id for r in (await files.list("alice", limit=10, after=cursor)).records] == newest[2:]
    with pytest.raises(InvalidRequest, match="after_id"):
        await files.list("alice", after_id=newest[1])
    with pytest.raises(InvalidRequest, match="limit"):
        await files.list("alice", limit=0)


async def test_files_survive_reopening_the_store_and_temporaries_are_swept(tmp_path):
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    files = FileService(store.files, tmp_path / "files", max_bytes=1 << 20)
    files.prepare()
    record = await files.create("alice", "keep.csv", b"a,b\n", content_type="text/csv", downloadable=False)
    (files.root / ".tmp-crashed").write_bytes(b"half an upload")
    await store.close()

    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        files = FileService(store.files, tmp_path / "files", max_bytes=1 << 20)
        files.prepare()
        assert await files.get("alice", record.id) == record
        assert await files.read(record) == b"a,b\n"
        assert sorted(p.name for p in files.root.iterdir()) == [record.id]
    finally:
        await store.close()


async def test_placements_are_per_container_and_first_one_wins(files, store):
    await files.add_placement("container_a", "file_1", "/workspace/x.csv")
    await files.add_placement("container_a", "file_1", "/workspace/other.csv")
    assert await files.placements("container_a") == {"file_1": "/workspace/x.csv"}
    assert await files.placements("container_b") == {}


@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("data.csv", "text/csv", "text/csv"),
        ("data.csv", "TEXT/CSV; charset=utf-8", "text/csv"),
        ("data.csv", "application/octet-stream", "text/csv"),  # httpx's "unknown" yields to the name
        ("data.csv", None, "text/csv"),
        ("chart.png", "", "image/png"),
        ("blob", None, "application/octet-stream"),
        ("x.bin", "not a type", "application/octet-stream"),
    ],
)
def test_mime_type_for(name, declared, expected):
    assert mime_type_for(name, declared) == expected


@pytest.mark.parametrize(
    ("raw", "mime", "expected"),
    [
        ("report.pdf", "application/pdf", "report.pdf"),
        ("dir/sub/report.pdf", "application/pdf", "report.pdf"),
        ("C:\\Users\\me\\report.pdf", "application/pdf", "report.pdf"),
        ("", "text/csv", "unnamed.csv"),
        (None, "application/octet-stream", "unnamed.bin"),
        ("dir/", "image/png", "unnamed.png"),
        ("..", "text/plain", "unnamed.txt"),
    ],
)
def test_upload_filename_keeps_the_final_component(raw, mime, expected):
    assert upload_filename(raw, mime) == expected


class Clock:
    """A settable clock for ``FileService`` (expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def budget(store, tmp_path) -> FileService:
    """100 bytes per file, 150 per owner, a settable clock (``budget.clock``)."""
    service = FileService(store.files, tmp_path / "files", max_bytes=100, max_owner_bytes=150, clock=Clock())
    service.prepare()
    return service


async def test_owner_budget_refuses_uploads_past_it_and_deleting_frees_it(budget):
    first = await upload(budget, "alice", [b"x" * 100], "a.bin", None)
    assert await budget.room("alice") == 50
    with pytest.raises(InvalidRequest) as refused:  # streamed past what is left
        await upload(budget, "alice", [b"x" * 40, b"x" * 20], "b.bin", None)
    assert not isinstance(refused.value, RequestTooLarge) and "full" in refused.value.message
    assert "DELETE /v1/files" in refused.value.message
    with pytest.raises(RequestTooLarge):  # over the per-file limit stays a 413, budget or not
        await upload(budget, "alice", [b"x" * 101], "c.bin", None)
    assert sorted(p.name for p in budget.root.iterdir()) == [first.id]  # nothing left behind
    await upload(budget, "bob", [b"x" * 100], "b.bin", None)  # other owners are unaffected
    await upload(budget, "alice", [b"x" * 50], "fits.bin", None)  # exactly full is fine
    await budget.delete("alice", first.id)
    await upload(budget, "alice", [b"x" * 60], "b.bin", None)


async def test_outputs_past_the_budget_are_left_out_and_named(budget):
    await budget.create("alice", "have.bin", b"x" * 100, downloadable=False)
    batch = budget.output_batch("alice")
    outputs = []
    for name, size in [("big.bin", 60), ("small.bin", 30), ("also.bin", 30)]:
        path = batch.new_path()
        path.write_bytes(b"y" * size)
        outputs.append((name, path))
    published = await batch.publish(outputs)
    batch.discard()
    assert [f.filename for f in published] == ["small.bin"]
    assert batch.over_budget == ["big.bin", "also.bin"]
    assert len(list(budget.root.iterdir())) == 2  # the upload and small.bin; no temporaries
    assert await budget.room("alice") == 20


async def test_expired_files_are_gone_and_swept(budget, store):
    clock = budget._clock
    assert isinstance(clock, Clock)
    async with budget.upload("alice") as sink:
        await sink.write(b"x" * 100)
        record = await sink.commit("a.csv", None, expires_in_seconds=3600)
    keep = await upload(budget, "alice", [b"k"], "keep.csv", None)
    assert record.expires_at == clock.now + timedelta(seconds=3600) and keep.expires_at is None
    assert await budget.get("alice", record.id) == record
    clock.now += timedelta(seconds=3600)
    with pytest.raises(NotFound):
        await budget.get("alice", record.id)
    with pytest.raises(NotFound):
        await budget.delete("alice", record.id)
    assert await budget.find("alice", [record.id, keep.id]) == {keep.id: keep}
    assert budget.path_of(record).exists()  # invisible, not yet swept
    assert [r.id for r in (await budget.list("alice")).records] == [keep.id]  # a listing sweeps
    assert not budget.path_of(record).exists()
    assert await store.files.bytes_of("alice") == 1
    # an upload sweeps too, before it counts what the owner has left
    async with budget.upload("alice") as sink:
        await sink.write(b"x" * 100)
        again = await sink.commit("b.csv", None, expires_in_seconds=3600)
    clock.now += timedelta(hours=2)
    await upload(budget, "alice", [b"x" * 100], "c.csv", None)
    assert not budget.path_of(again).exists() and await store.files.get(again.id, "alice") is None


async def test_start_up_sweep_removes_every_expired_file(budget, store):
    clock = budget._clock
    assert isinstance(clock, Clock)
    made = []
    for i in range(3):
        async with budget.upload(f"owner{i}") as sink:
            await sink.write(b"x")
            made.append(await sink.commit("a", None, expires_in_seconds=3600))
    clock.now += timedelta(days=1)
    await budget.sweep_all()
    assert list(budget.root.iterdir()) == [] and await store.files.expired(clock.now, limit=10) == []


async def test_start_up_removes_bytes_a_crash_left_without_a_record(files, store):
    """The two crash windows: bytes renamed into place but no row yet, and a row deleted before its bytes."""
    kept = await files.create("alice", "kept.txt", b"kept", content_type=None, downloadable=False)
    deleted = await files.create("alice", "gone.txt", b"gone", content_type=None, downloadable=False)
    assert await store.files.delete(deleted.id, "alice")  # the crash came before the unlink
    never_recorded = files.root / "file_011CNeverRecordedABCDEFGH"
    never_recorded.write_bytes(b"committed bytes, no row")
    (files.root / "notes.txt").write_bytes(b"not a file id: not ours to judge")

    await files.sweep_all()

    assert sorted(p.name for p in files.root.iterdir()) == sorted([kept.id, "notes.txt"])
    assert await files.read(kept) == b"kept"
