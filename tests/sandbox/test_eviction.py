"""The early-eviction rule (``eviction``): how many containers to stop near each budget, and which."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from execbridge.sandbox.entry import ContainerEntry
from execbridge.sandbox.eviction import LiveBudget, LiveUsage, least_recently_used, may_stop
from execbridge.store.base import ContainerRecord

MIB = 1 << 20


def test_under_every_budget_nothing_stops():
    budget = LiveBudget(containers=100, memory_bytes=1000 * MIB, fds=4000, early=0.9)
    assert budget.excess(LiveUsage(90, 900 * MIB, 3600)) == 0
    assert budget.excess(LiveUsage(0, None, 10)) == 0


def test_the_count_budget():
    assert LiveBudget(100, None, None, 0.9).excess(LiveUsage(95, None, 0)) == 5


def test_the_memory_budget_stops_enough_containers_of_the_average_size():
    # 50 containers use 950 MiB (19 MiB each); 900 MiB is the mark: 50 MiB over → 3 containers.
    budget = LiveBudget(1000, 1000 * MIB, None, 0.9)
    assert budget.excess(LiveUsage(50, 950 * MIB, 0)) == 3
    assert LiveBudget(1000, None, None, 0.9).excess(LiveUsage(50, 950 * MIB, 0)) == 0  # no cgroups: no budget


def test_the_descriptor_budget_counts_only_what_containers_add():
    # 100 base descriptors, 2 per container: 500 containers hold 1100; the mark is 0.9 x 1000 = 900.
    budget = LiveBudget(10_000, None, 1000, 0.9)
    assert budget.excess(LiveUsage(500, None, 1100), base_fds=100) == 100


def test_the_largest_excess_wins_and_never_more_than_are_live():
    budget = LiveBudget(10, 100 * MIB, 100, 0.5)
    assert budget.excess(LiveUsage(8, 90 * MIB, 50)) == 4  # memory: 40 MiB over at 11.25 MiB each
    assert budget.excess(LiveUsage(3, 10_000 * MIB, 50)) == 3


def _entry(minutes_ago: int, *, live: bool = True, users: int = 0) -> ContainerEntry:
    used = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    entry = ContainerEntry(ContainerRecord(f"c{minutes_ago}", "o", minutes_ago, used, used), users=users)
    entry.live = object() if live else None  # type: ignore[assignment]  # only "is there one" matters here
    return entry


def test_least_recently_used_idle_live_ones_first():
    entries = [_entry(1), _entry(5), _entry(9, users=1), _entry(7, live=False), _entry(3)]
    chosen = least_recently_used(entries, 2)
    assert [e.record.id for e in chosen] == ["c5", "c3"]  # c9 is leased, c7 is not live
    assert not may_stop(entries[2]) and not may_stop(entries[3])
