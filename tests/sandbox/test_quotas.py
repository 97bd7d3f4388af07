"""Budgets that protect the host (issue 9, finding 5): live containers in all and per owner, with the
least recently used idle ones stopped first, and containers in all (bounded host uids). A budget that
cannot be met is ``QuotaExceeded`` (the client's 429 with ``retry-after``), never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from execbridge.errors import QuotaExceeded
from execbridge.sandbox.doctor import DoctorReport, check_uid_range
from execbridge.sandbox.manager import ContainerManager

from .conftest import open_manager, small_settings


def live_ids(m: ContainerManager) -> set[str]:
    return {cid for cid, entry in m._entries.items() if entry.live is not None}


async def write_note(m: ContainerManager, cid: str, owner: str, text: str) -> None:
    async with m.lease(cid, owner) as s:
        assert (await s.run_bash(f"echo {text} > note.txt")).return_code == 0


async def test_at_the_live_budget_the_least_recently_used_idle_container_stops(
    workdir: Path, doctor_report: DoctorReport
):
    async with open_manager(workdir, doctor_report, spare_containers=0, max_live_containers=2) as m:
        first, second = await m.create("alice"), await m.create("bob")
        await write_note(m, first.id, "alice", "one")
        await write_note(m, second.id, "bob", "two")  # the first is now the least recently used
        third = await m.create("carol")
        assert live_ids(m) == {second.id, third.id}
        async with m.lease(first.id, "alice") as s:  # revived on its next use, files intact
            assert (await s.run_bash("cat note.txt")).stdout == "one\n"
        assert live_ids(m) == {first.id, third.id}  # and to make room, the next least recent stopped


async def test_one_owner_cannot_take_every_live_container(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(
        workdir, doctor_report, spare_containers=0, max_live_containers=10, max_live_per_owner=2
    ) as m:
        others = await m.create("bob")
        mine = [await m.create("alice") for _ in range(4)]
        assert live_ids(m) == {others.id, mine[2].id, mine[3].id}  # only alice's own made room


async def test_when_every_live_container_is_in_use_a_new_one_is_refused(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=0, max_live_containers=1) as m:
        busy = await m.create("alice")
        async with m.lease(busy.id, "alice"):
            with pytest.raises(QuotaExceeded) as refused:
                await m.create("bob")
        assert refused.value.code == "live_container_limit" and refused.value.retry_after
        assert "in use" in refused.value.message
        assert live_ids(m) == {busy.id}  # the busy one was left alone
        await m.create("bob")  # once it is idle again, it makes room


async def test_the_number_of_containers_and_so_of_host_uids_is_bounded(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=0, max_containers=2) as m:
        kept = [await m.create("alice"), await m.create("bob")]
        for owner in ("alice", "mallory", "mallory"):
            with pytest.raises(QuotaExceeded) as refused:
                await m.create(owner)
            assert refused.value.code == "container_limit"
        slots = {m._entries[c.id].slot for c in kept}
        await m.delete(kept[0].id, "alice")
        again = await m.create("carol")
        assert m._entries[again.id].slot in slots  # a freed slot (host uid) is used again


def test_the_doctor_refuses_a_uid_range_that_holds_a_host_account(tmp_path: Path):
    """``nobody`` (65534) is on every Debian machine: a range over it would make containers run as it."""
    overlapping = small_settings(tmp_path, uid_base=65000, max_containers=1000)
    check = check_uid_range(overlapping)
    assert not check.ok and "nobody (65534)" in check.detail
    clear = small_settings(tmp_path, uid_base=600_000, max_containers=1000)
    check = check_uid_range(clear)
    assert check.ok and "600000-601001" in check.detail  # slot 0 (the doctor) to max + spare
    too_far = small_settings(tmp_path, uid_base=2**32 - 500, max_containers=1000)
    assert not check_uid_range(too_far).ok


async def test_no_new_container_on_a_nearly_full_disk(workdir: Path, doctor_report: DoctorReport):
    # A floor larger than any disk: the data directory's disk is "nearly full" here.
    async with open_manager(workdir, doctor_report, spare_containers=0, min_free_disk_mb=1 << 40) as m:
        with pytest.raises(QuotaExceeded) as refused:
            await m.create("alice")
        assert refused.value.code == "disk_full" and refused.value.retry_after
        assert [i async for i in m.list("alice")] == []
