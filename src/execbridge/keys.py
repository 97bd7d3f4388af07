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
import ipaddress
import logging
import secrets
import time
from datetime import UTC, datetime

from execbridge.config import Settings
from execbridge.errors import AuthenticationFailed, ConfigurationError
from execbridge.ids import key_id
from execbridge.store.base import ApiKeyRecord, KeyStore

log = logging.getLogger(__name__)

__all__ = ["GatewayKeys", "KeyGate", "is_loopback", "key_gate", "key_id", "secret_hash"]

PREFIX = "ebk_"
_TOUCH_EVERY_S = 60.0


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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


class KeyGate:
    """Admission to a gateway that holds the upstream credential: an active gateway key, or nothing
    at all on a loopback-only gateway that has no key yet (``open_without_keys``)."""

    def __init__(self, keys: GatewayKeys, *, open_without_keys: bool) -> None:
        self.keys = keys
        self.open_without_keys = open_without_keys

    async def admit(self, key: str | None) -> None:
        """Return if ``key`` (the client's, ``None`` when it sent none) may use the gateway; raise
        ``AuthenticationFailed`` otherwise."""
        if key is not None and await self.keys.verify(key) is not None:
            return
        # Checked on each refusal, not cached: a key created meanwhile closes the loopback gateway for
        # good (revoked keys still count, so revoking the last one does not reopen it).
        if self.open_without_keys and not await self.keys.any_ever():
            return
        if key is None:
            raise AuthenticationFailed(
                "x-api-key header is required: this gateway holds the upstream credential, so send one of "
                "its own API keys (created with `execbridge keys create`)"
            )
        raise AuthenticationFailed("invalid x-api-key: not an active API key of this gateway")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def key_gate(settings: Settings, keys: KeyStore, *, announce: bool = True) -> KeyGate | None:
    """The admission check for ``settings``: ``None`` in pass-through mode; refuses (``ConfigurationError``)
    to expose the gateway's upstream credential beyond loopback without any gateway key."""
    if not settings.gateway_holds_credentials:
        return None
    gateway_keys = GatewayKeys(keys)
    loopback = is_loopback(settings.host)
    if not await gateway_keys.any_active():
        if not loopback:
            raise ConfigurationError(
                f"refusing to listen on {settings.host}: the gateway holds the upstream credential and has no "
                "API keys, so anyone who can reach it would use the model at your expense. Create one with "
                "`execbridge keys create`, or bind to 127.0.0.1."
            )
        if announce and not await gateway_keys.any_ever():
            log.warning(
                "no gateway API keys: any local process can use the upstream credential through "
                "%s:%s (loopback only). Create one with `execbridge keys create` to require keys.",
                settings.host,
                settings.port,
            )
        elif announce:
            log.warning("every gateway API key is revoked: requests are refused until `execbridge keys create`")
    return KeyGate(gateway_keys, open_without_keys=loopback)
