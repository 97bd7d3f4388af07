"""``OpenAIContainers`` over a real sandbox: what ``/v1/responses`` resolves a ``code_interpreter``
container with, files that code writes under ``/mnt/data`` showing up as ``assistant`` container
files, Files API files placed by id, expiry (with the service's clock) and owners kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import sandbox.conftest as sandbox_fixtures
from execbridge.engine.openai_containers import AutoContainer, OpenAIContainers
from execbridge.errors import InvalidRequest, NotFound
from execbridge.files import FileService
from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.manager import ContainerManager
from execbridge.store.memory import MemoryStore
from execbridge.types import Caller
from sandbox.conftest import open_manager

# The sandbox tests' fixtures (a real sandbox needs their limits, uids and scratch directory).
base_dir = sandbox_fixtures.base_dir
doctor_report = sandbox_fixtures.doctor_report
workdir = sandbox_fixtures.workdir

ALICE = Caller(owner="alice")
BOB = Caller(owner="bob")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def manager(workdir: Path, doctor_report: DoctorReport) -> AsyncIterator[ContainerManager]:
    async with open_manager(workdir, doctor_report) as m:
        yield m


@pytest.fixture
def files(workdir: Path) -> FileService:
    service = FileService(MemoryStore().files, workdir / "files", max_bytes=1 << 20)
    service.prepare()
    return service


def service(manager: ContainerManager, files: FileService, clock: Clock) -> OpenAIContainers:
    return OpenAIContainers(MemoryStore().openai_containers, manager, files, clock=clock)


async def test_code_writing_under_mnt_data_makes_container_files(manager: ContainerManager, files: FileService):
    clock = Clock()
    containers = service(manager, files, clock)
    upload = await files.create("alice", "sales.csv", b"a,b\n1,2\n", downloadable=False)
    live = await containers.resolve(ALICE, AutoContainer(file_ids=(upload.id,), memory_limit="4g"))
    assert live.id.startswith("cntr_") and live.record.memory_limit == "4g" and live.record.name == "auto"
    assert live.placed == {upload.id: f"/mnt/data/{upload.id}-sales.csv"}

    # What the code interpreter does with the container: lease its sandbox and run code there.
    async with manager.lease(live.sandbox_id, ALICE) as session:
        r = await session.run_python(
            f"rows = open('{live.placed[upload.id]}').read().splitlines()\n"
            "import os; os.makedirs('/mnt/data/out', exist_ok=True)\n"
            "open('/mnt/data/out/plot.png', 'wb').write(b'PNG' * len(rows))"
        )
        assert r.return_code == 0, r.stderr
    found, has_more = await containers.list_files(ALICE, live.id)
    assert not has_more
    assert sorted((f.path, f.source, f.bytes) for f in found) == [
        (f"/mnt/data/{upload.id}-sales.csv", "user", 8),
        ("/mnt/data/out/plot.png", "assistant", 6),
    ]
    plot = next(f for f in found if f.path.endswith("plot.png"))
    assert {f.id for f in await containers.current_files(ALICE, live.id)} == {f.id for f in found}
    again, _ = await containers.list_files(ALICE, live.id)
    assert {f.id for f in again} == {f.id for f in found}  # ids are stable across listings
    got, path, discard = await containers.download(ALICE, live.id, plot.id)
    try:
        assert got == plot and path.read_bytes() == b"PNGPNG"
    finally:
        discard()
    assert not path.exists()
    await containers.delete_file(ALICE, live.id, plot.id)
    assert [f.path for f in (await containers.list_files(ALICE, live.id))[0]] == [live.placed[upload.id]]
    async with manager.lease(live.sandbox_id, ALICE) as session:
        assert (await session.run_bash("ls /workspace/out")).stdout == ""

    # The same container by id; not for another owner.
    assert (await containers.resolve(ALICE, live.id)).sandbox_id == live.sandbox_id
    with pytest.raises(NotFound):
        await containers.resolve(BOB, live.id)
    with pytest.raises(NotFound):
        await manager.get(live.id, "alice")  # a cntr_ id is not an Anthropic container id


async def test_an_expired_container_loses_its_sandbox_and_keeps_its_record(
    manager: ContainerManager, files: FileService
):
    clock = Clock()
    containers = service(manager, files, clock)
    live = await containers.create(ALICE, name="brief", expires_after_minutes=1)
    clock.now += timedelta(seconds=59)
    assert (await containers.get(ALICE, live.id)).last_active_at == clock.now  # a retrieve is activity
    clock.now += timedelta(seconds=61)
    with pytest.raises(InvalidRequest) as expired:
        await containers.resolve(ALICE, live.id)
    assert expired.value.code == "container_expired"
    with pytest.raises(NotFound):
        await manager.get(live.sandbox_id, "alice")  # its files went with the sandbox container
    record = await containers.get(ALICE, live.id)
    assert record.sandbox_id is None and containers.is_expired(record)
    await containers.delete(ALICE, live.id)
    with pytest.raises(NotFound):
        await containers.get(ALICE, live.id)


async def test_unknown_files_are_refused_before_anything_is_made(manager: ContainerManager, files: FileService):
    containers = service(manager, files, Clock())
    theirs = await files.create("bob", "x.txt", b"x", downloadable=False)
    with pytest.raises(NotFound):
        await containers.resolve(ALICE, AutoContainer(file_ids=(theirs.id,)))
    assert [c async for c in manager.list("alice")] == []
    with pytest.raises(InvalidRequest):
        await containers.create(ALICE, name="x", memory_limit="2g")


async def test_memory_tiers_are_clamped_to_the_sandboxs_limit(workdir: Path, doctor_report: DoctorReport, files):
    async with open_manager(workdir, doctor_report, memory_mb=2048) as manager:
        containers = service(manager, files, Clock())
        limits = {}
        for tier in ("1g", "4g", "64g"):
            live = await containers.create(ALICE, name=tier, memory_limit=tier)
            assert live.record.memory_limit == tier  # echoed as requested
            limits[tier] = (await manager.get(live.sandbox_id, "alice")).memory_mb
        assert limits == {"1g": 1024, "4g": 2048, "64g": 2048}
