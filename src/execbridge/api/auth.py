"""Who is calling: the client's key, the owner it maps to, and the key passed to the upstream.

Anthropic clients send their key as ``x-api-key`` (SDK < 2.0, curl) or ``Authorization: Bearer``
(SDK ≥ 2.0); both are accepted. Without a gateway-held upstream key, the client's own key goes to the
upstream (how a Databricks user brings their token) and also scopes their containers and files.

Must not: log or store raw keys. Owners are a SHA-256 digest of the key, so a database leak gives
away no credential.
"""

from __future__ import annotations

import hashlib

from starlette.datastructures import Headers

from execbridge.config import Settings
from execbridge.engine.loop import Caller
from execbridge.errors import AuthenticationFailed

ANONYMOUS_OWNER = "anonymous"


def client_key(headers: Headers) -> str | None:
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def owner_of(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:40]


def caller_for(headers: Headers, settings: Settings) -> Caller:
    key = client_key(headers)
    if settings.upstream_api_key is not None:
        # The gateway holds the upstream credential; the client's key only scopes its resources.
        return Caller(owner=owner_of(key) if key else ANONYMOUS_OWNER, upstream_api_key=None)
    if key is None:
        raise AuthenticationFailed(
            "x-api-key header is required: send your upstream API key (e.g. a Databricks token) as "
            "`x-api-key` or `Authorization: Bearer`"
        )
    return Caller(owner=owner_of(key), upstream_api_key=key)
