"""The pass-through key check: one upstream call per key, remembered; refused keys refused; upstream
failures passed on and not remembered; concurrent first uses share one call."""

from __future__ import annotations

import asyncio

import pytest

from execbridge.errors import AuthenticationFailed, UpstreamError, UpstreamOverloaded
from execbridge.upstream.base import ModelInfo
from execbridge.upstream.key_check import UpstreamKeyCheck


class Catalog:
    """An upstream's model list that accepts the keys in ``good`` and answers the others with ``status``."""

    def __init__(self, good: set[str], status: int = 401) -> None:
        self.good = good
        self.status = status
        self.asked: list[str | None] = []
        self.gate: asyncio.Event | None = None  # set: answers wait for it

    async def list_models(self, api_key: str | None = None) -> list[ModelInfo]:
        self.asked.append(api_key)
        if self.gate is not None:
            await self.gate.wait()
        if api_key in self.good:
            return [ModelInfo("m", 0)]
        if self.status >= 500:
            raise UpstreamOverloaded("busy", status=self.status)
        raise UpstreamError("nope", status=self.status)

    def upstream_model(self, name: str) -> str:
        return name


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_an_accepted_key_is_asked_about_once_until_its_time_is_up():
    catalog, clock = Catalog({"good"}), Clock()
    check = UpstreamKeyCheck(catalog, ttl_s=300, clock=clock)
    for _ in range(50):
        await check.check("good")
    assert catalog.asked == ["good"]
    clock.now = 301
    await check.check("good")
    assert catalog.asked == ["good", "good"]


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_refused_and_remembered_briefly(status: int):
    catalog, clock = Catalog({"good"}, status), Clock()
    check = UpstreamKeyCheck(catalog, refused_ttl_s=30, clock=clock)
    for _ in range(10):
        with pytest.raises(AuthenticationFailed, match="upstream does not accept"):
            await check.check("made-up")
    assert catalog.asked == ["made-up"]
    clock.now = 31
    with pytest.raises(AuthenticationFailed):
        await check.check("made-up")
    assert len(catalog.asked) == 2


@pytest.mark.parametrize("status", [404, 405])
async def test_an_upstream_without_a_model_list_cannot_tell_and_accepts(status: int):
    check = UpstreamKeyCheck(Catalog(set(), status))
    await check.check("anything")


async def test_an_upstream_failure_is_passed_on_and_not_remembered():
    catalog = Catalog(set(), 503)
    check = UpstreamKeyCheck(catalog)
    for _ in range(2):
        with pytest.raises(UpstreamOverloaded):
            await check.check("k")
    assert catalog.asked == ["k", "k"]
    catalog.good.add("k")
    await check.check("k")


async def test_concurrent_first_uses_of_a_key_share_one_call():
    catalog = Catalog({"good"})
    catalog.gate = asyncio.Event()
    check = UpstreamKeyCheck(catalog)
    waiting = [asyncio.create_task(check.check("good")) for _ in range(20)]
    refused = [asyncio.create_task(check.check("bad")) for _ in range(20)]
    await asyncio.sleep(0)
    catalog.gate.set()
    await asyncio.gather(*waiting)
    results = await asyncio.gather(*refused, return_exceptions=True)
    assert all(isinstance(r, AuthenticationFailed) for r in results)
    assert sorted(catalog.asked) == ["bad", "good"]


async def test_the_memory_of_keys_is_bounded():
    catalog = Catalog({f"k{i}" for i in range(100)})
    check = UpstreamKeyCheck(catalog, max_keys=10)
    for i in range(100):
        await check.check(f"k{i}")
    await check.check("k99")  # still remembered: the newest
    await check.check("k0")  # forgotten: asked again
    assert catalog.asked.count("k99") == 1 and catalog.asked.count("k0") == 2
