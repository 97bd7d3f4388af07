"""Who is calling: the client's key, the owner it maps to, and the key passed to the upstream.

Anthropic clients send their key as ``x-api-key`` (SDK < 2.0, curl) or ``Authorization: Bearer``
(SDK ≥ 2.0); both are accepted. Two modes, decided by configuration:

- pass-through (the gateway holds no upstream credential): the client's own key goes to the upstream
  (how a Databricks user brings their token) and also scopes their containers and files;
- gateway-held (``upstream_api_key``, or Databricks unified auth): clients must present one of the
  gateway's own keys (``execbridge keys create``), checked by ``GatewayKeyMiddleware`` before any
  ``/v1/`` route runs; the key's id owns what it makes. Only a gateway bound to loopback may run with
  no keys at all (``wiring`` refuses anything else at start-up), and then it admits every request
  until the first key is created. An open proxy to a paid model is a security bug.

Must not: log or store raw keys. Owners are a SHA-256 digest of the key (``keys.key_id``), so a
database leak gives away no credential.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from execbridge import ids
from execbridge.api import request_log
from execbridge.api.dialect import error_response_for
from execbridge.config import Settings
from execbridge.errors import AuthenticationFailed
from execbridge.keys import KeyGate, key_id
from execbridge.types import Caller

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
    return key_id(key)


def caller_for(headers: Headers, settings: Settings) -> Caller:
    caller = _caller_for(headers, settings)
    request_log.note(owner=caller.owner)
    return caller


def _caller_for(headers: Headers, settings: Settings) -> Caller:
    key = client_key(headers)
    if settings.gateway_holds_credentials:
        # The gateway holds the upstream credential; the client's key (already admitted by the
        # middleware) only scopes its resources: for a gateway key, its owner is the key's id.
        return Caller(owner=owner_of(key) if key else ANONYMOUS_OWNER, upstream_api_key=None, key=key)
    if key is None:
        raise AuthenticationFailed(
            "x-api-key header is required: send your upstream API key (e.g. a Databricks token) as "
            "`x-api-key` or `Authorization: Bearer`"
        )
    return Caller(owner=owner_of(key), upstream_api_key=key, key=key)


class GatewayKeyMiddleware:
    """Runs ``KeyGate.admit`` before every ``/v1/`` route when the services carry a gate.

    Must sit inside ``RequestIdMiddleware`` (added before it), so refusals carry the request id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            services = getattr(scope["app"].state, "services", None)
            gate: KeyGate | None = getattr(services, "key_gate", None)
            if gate is not None:
                try:
                    await gate.admit(client_key(Headers(scope=scope)))
                except AuthenticationFailed as exc:
                    request_id = scope.get("state", {}).get("request_id") or ids.request_id()
                    status, body, headers = error_response_for(scope, exc, request_id)
                    response = Response(body, status_code=status, headers=headers, media_type="application/json")
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
