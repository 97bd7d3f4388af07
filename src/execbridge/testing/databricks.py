"""A fake Databricks workspace on 127.0.0.1: OAuth machine-to-machine plus serving endpoints.

Serves what Databricks' SDK calls for OAuth M2M against a custom host (read from the installed
``databricks-sdk``: ``Config`` first fetches ``/.well-known/databricks-config`` for the OIDC root,
then ``{oidc}/.well-known/oauth-authorization-server`` for the token endpoint, then POSTs
``grant_type=client_credentials&scope=all-apis`` with HTTP basic auth to ``/oidc/v1/token``), and the
scripted ``FakeApp`` behind ``/serving-endpoints``, which accepts only a token that is live now (or
the configured personal access token). Tokens live ``token_ttl_s`` seconds, so tests can watch the
gateway refresh them::

    with FakeDatabricks([Turn.text("hi")], token_ttl_s=2) as ws:
        env = {"DATABRICKS_HOST": ws.url, "DATABRICKS_CLIENT_ID": ws.client_id,
               "DATABRICKS_CLIENT_SECRET": ws.client_secret}

Must not: be used outside tests and benchmarks, or listen beyond 127.0.0.1 (``FakeUpstream`` binds).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from execbridge.testing.script import ScriptTurn
from execbridge.testing.upstream import FakeUpstream

__all__ = ["DATABRICKS_MODELS", "FakeDatabricks", "FakeOAuth"]

DATABRICKS_MODELS = (
    "databricks-claude-sonnet-4-5",
    "databricks-claude-opus-4-5",
    "databricks-claude-haiku-4-5",
    "databricks-gpt-oss-120b",
)


class FakeOAuth:
    """The workspace's OIDC discovery and token endpoint, issuing ``fake-oauth-N`` tokens."""

    def __init__(
        self, client_id: str, client_secret: str, token_ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client_id = client_id
        self.clock = clock  # when tokens expire is reckoned on this clock
        self.client_secret = client_secret
        self.token_ttl_s = token_ttl_s
        self.token_delay = 0.0  # seconds the token endpoint waits before answering (a slow IdP)
        self.issued: list[str] = []
        self._expiry: dict[str, float] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def valid(self, authorization: str) -> bool:
        token = authorization.removeprefix("Bearer ")
        with self._lock:
            expiry = self._expiry.get(token)
        return expiry is not None and self.clock() < expiry

    def revoke_all(self) -> None:
        with self._lock:
            self._expiry.clear()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/.well-known/databricks-config", self._host_metadata, methods=["GET"]),
            Route("/oidc/.well-known/oauth-authorization-server", self._discovery, methods=["GET"]),
            Route("/oidc/v1/token", self._token, methods=["POST"]),
        ]

    async def _host_metadata(self, request: Request) -> Response:
        return JSONResponse({"oidc_endpoint": f"{_origin(request)}/oidc", "workspace_id": "1234567890123456"})

    async def _discovery(self, request: Request) -> Response:
        oidc = f"{_origin(request)}/oidc"
        return JSONResponse(
            {
                "issuer": oidc,
                "authorization_endpoint": f"{oidc}/v1/authorize",
                "token_endpoint": f"{oidc}/v1/token",
            }
        )

    async def _token(self, request: Request) -> Response:
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        form = parse_qs((await request.body()).decode())
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            client_id = secret = ""
        if scheme.lower() != "basic" or (client_id, secret) != (self.client_id, self.client_secret):
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed"}, 401)
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        token = f"fake-oauth-{next(self._numbers)}"
        with self._lock:
            self.issued.append(token)
            self._expiry[token] = self.clock() + self.token_ttl_s
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_ttl_s,
            "scope": " ".join(form.get("scope", ["all-apis"])),
        }
        return JSONResponse(body)


class FakeDatabricks(FakeUpstream):
    """``FakeUpstream`` as a whole workspace: ``url`` is the host, ``databricks_url`` the serving base."""

    def __init__(
        self,
        script: Iterable[ScriptTurn] = (),
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        token_ttl_s: float = 3600.0,
        pat: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        self.oauth = FakeOAuth(client_id, client_secret, token_ttl_s, clock)
        self.pat = pat
        options.setdefault("models", DATABRICKS_MODELS)
        options.setdefault("file_parts", False)  # its Chat Completions route refuses PDFs as `file` parts
        super().__init__(script, authorize=self._authorized, extra_routes=self.oauth.routes(), **options)

    @property
    def client_id(self) -> str:
        return self.oauth.client_id

    @property
    def client_secret(self) -> str:
        return self.oauth.client_secret

    def _authorized(self, authorization: str) -> bool:
        return (self.pat is not None and authorization == f"Bearer {self.pat}") or self.oauth.valid(authorization)


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")
