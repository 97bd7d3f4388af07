"""Gateway API keys over both stores: created once, stored hashed, verified in constant time, revoked
for good, and their id is the owner string of what they make."""

from __future__ import annotations

import pytest

from execbridge.api.auth import owner_of
from execbridge.keys import GatewayKeys, key_id, secret_hash
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "memory"])
async def keys(request, tmp_path):
    store = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield GatewayKeys(store.keys)
    await store.close()


async def test_create_verify_revoke(keys):
    assert not await keys.any_active()
    record, secret = await keys.create("alice")
    assert secret.startswith("ebk_") and len(secret) == 47
    assert record.id == key_id(secret) == owner_of(secret)
    assert record.secret_hash == secret_hash(secret) and secret not in repr(record)
    assert await keys.any_active()
    verified = await keys.verify(secret)
    assert verified is not None and verified.id == record.id
    assert (await keys.list())[0].last_used_at is not None  # touched (at most once a minute)
    assert await keys.verify(secret + "x") is None
    assert await keys.verify("ebk_" + "A" * 43) is None
    assert await keys.revoke(record.id)
    assert not await keys.revoke(record.id)  # already revoked
    assert not await keys.revoke("key_unknown")
    assert await keys.verify(secret) is None
    assert not await keys.any_active()


async def test_list_newest_first_with_revoked(keys):
    first, _ = await keys.create("one")
    second, _ = await keys.create(None)
    await keys.revoke(first.id)
    listed = await keys.list()
    assert [(r.id, r.name, r.active) for r in listed] == [(second.id, None, True), (first.id, "one", False)]


async def test_a_forged_record_with_the_right_id_but_wrong_hash_is_refused(tmp_path):
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        keys = GatewayKeys(store.keys)
        record, secret = await keys.create()
        await store.execute("UPDATE api_keys SET secret_hash = ? WHERE id = ?", ("0" * 64, record.id))
        assert await keys.verify(secret) is None
    finally:
        await store.close()
