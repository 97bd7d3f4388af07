"""Gateway API keys: what clients present when the gateway holds the upstream credential itself.

A key is ``ebk_`` + 43 URL-safe characters from ``secrets`` (256 bits). The store keeps its SHA-256
only; a plain hash is the right tool for a secret that is random and this long (a slow password hash
protects guessable secrets, which these are not). The key's id, ``key_`` + the first 40 hex digits
of that hash, is what ``keys ls`` shows and ``keys revoke`` takes, and it is also the owner of the
containers and files made with the key: the same formula names owners in pass-through mode, so one
function (``key_id``) scopes resources whichever mode the gateway runs in.

Must not: keep, log or return a secret after ``create`` hands it over once. Invariants: verification
compares full hashes in constant time; a revoked key never verifies again; ``last_used_at`` is
written at most once a minute per key, so verification costs one indexed read, not a write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime

from execbridge.store.base import ApiKeyRecord, KeyStore

__all__ = ["GatewayKeys", "key_id", "secret_hash"]

PREFIX = "ebk_"
_TOUCH_EVERY_S = 60.0


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id(secret: str) -> str:
    """The id of the key ``secret`` (whether or not it is a gateway key): also its owner string."""
    return "key_" + secret_hash(secret)[:40]


class GatewayKeys:
    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._touched: dict[str, float] = {}

    async def create(self, name: str | None = None) -> tuple[ApiKeyRecord, str]:
        """A new key: its record, and the secret, which exists nowhere else from now on."""
        secret = PREFIX + secrets.token_urlsafe(32)
        record = ApiKeyRecord(key_id(secret), name, secret_hash(secret), datetime.now(UTC))
        await self._store.insert(record)
        return record, secret

    async def list(self) -> list[ApiKeyRecord]:
        return await self._store.list()

    async def revoke(self, id: str) -> bool:
        return await self._store.revoke(id, datetime.now(UTC))

    async def any_active(self) -> bool:
        return await self._store.count() > 0

    async def any_ever(self) -> bool:
        """Whether a key was ever created (revoked ones count: revoking the last key must not reopen)."""
        return await self._store.count(include_revoked=True) > 0

    async def verify(self, secret: str) -> ApiKeyRecord | None:
        """The active key whose secret this is, else ``None``."""
        digest = secret_hash(secret)
        record = await self._store.get("key_" + digest[:40])
        if record is None or not record.active or not hmac.compare_digest(record.secret_hash, digest):
            return None
        now = time.monotonic()
        if now - self._touched.get(record.id, -_TOUCH_EVERY_S) >= _TOUCH_EVERY_S:
            self._touched[record.id] = now
            await self._store.touch(record.id, datetime.now(UTC))
        return record
