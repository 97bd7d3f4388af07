"""``OpenAIChatUpstream``: the ``Upstream`` for OpenAI-compatible Chat Completions servers.

Job: send one ``ChatTurn`` to ``POST {base}/chat/completions`` (Databricks ``/serving-endpoints``,
OpenAI, Azure, vLLM, Ollama, LiteLLM, …) and yield neutral ``UpstreamEvent``s, whether the upstream
streamed (SSE) or answered in one JSON body (both read by ``stream.py``); retry, adapt and
re-authenticate around that; list the upstream's models (``list_models``). Failures become
``errors.UpstreamError`` subclasses that keep the upstream's status and its own message, whichever
envelope it used (``error_envelopes.py``).

Who authenticates: the client's own key when the turn carries one (pass-through), else the gateway's
``Credentials`` (Databricks unified auth, refreshed) or fixed ``api_key``. A 401 with refreshable
credentials is retried once with a fresh token; a gateway credential the upstream refuses is the
operator's problem, so it is reported as a bad gateway, not as the client's authentication error.

Quirks are learnt: a refusal that names a parameter the endpoint does not support (``max_tokens`` vs
``max_completion_tokens``, ``stream_options``, ``parallel_tool_calls``, ``top_k``, ``tool_choice``), refuses
several tool calls per assistant message or a form of the conversation (``file`` parts, the empty content
of a call-only message), or a stream that ends empty where the turn's form cannot be streamed, switches
that model's ``Dialect`` (``dialects.adapt``, which decides what counts) and resends at once (nothing
was output), and the model keeps the adapted dialect from then on.

Must not: leak HTTP or JSON shapes to callers, retry once an event has been yielded, or keep a
connection open after the consumer stops iterating (the ``async with client.stream`` scope closes it
on ``aclose()`` and on cancellation; consumers should iterate under ``contextlib.aclosing``).

Stop sequences are matched here, in the streamed text (``stop_match.py``): the turn ends at the first
match, with ``Finished(stop_sequence=…)``, and the connection is closed.

Invariants: the events are ``stream.py``'s (pieces as they come, ``Finished`` exactly once, last); 429,
5xx and connection errors are retried with back-off and jitter, honouring ``Retry-After`` up to a cap,
only while nothing has been yielded and the total timeout allows.

Hot path: one ``orjson.dumps`` per request and the credential header encoded once per value. HTTP goes
through ``_http11`` (asyncio + httptools, about 10x less CPU per request than httpx here) unless a proxy
applies or a transport was injected; then through httpx.
"""

from __future__ import annotations

import asyncio
import random
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from execbridge.config import Settings
from execbridge.errors import AuthenticationFailed, UpstreamError
from execbridge.telemetry import OFF, Telemetry
from execbridge.types import Document
from execbridge.upstream._http11 import Http11Endpoint, default_ssl_context
from execbridge.upstream.base import ChatTurn, Credentials, ModelInfo, TokenUsage, UpstreamEvent
from execbridge.upstream.dialects import Dialect, adapt, dialect_for, forced_dialect, is_azure_host
from execbridge.upstream.error_envelopes import error_from_response, transport_error
from execbridge.upstream.model_names import ModelNames
from execbridge.upstream.pdf_text import warm
from execbridge.upstream.stop_match import StopMatcher
from execbridge.upstream.stream import events_from_completion, load_json, sse_events
from execbridge.upstream.translate import build_payload

__all__ = ["OpenAIChatUpstream"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
_ERROR_BODY_LIMIT = 64 << 10  # an error page bigger than this is not worth reading whole
_MAX_ADAPTATIONS = 6  # each one flips a different dialect flag, so this bounds the resends


def _url(base_url: str, path: str) -> str:
    """``base_url`` + ``path``, keeping a query string (Azure's ``?api-version=…``) at the end."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


class _Response(Protocol):
    """What both HTTP paths (``_http11`` and httpx) give back."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aread(self) -> bytes: ...


class OpenAIChatUpstream:
    """A pooled HTTP client for one Chat Completions base URL."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 300.0,
        total_timeout_s: float = 900.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        retry_after_max_s: float = 30.0,
        dialect: Dialect | Callable[[str], Dialect] | None = None,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
        http: Literal["auto", "fast", "httpx"] = "auto",
        credentials: Credentials | None = None,
        model_names: ModelNames | None = None,
        auth_header: Literal["auto", "authorization", "api-key"] = "auto",
        model_listing: Literal["auto", "openai", "databricks"] = "auto",
        telemetry: Telemetry = OFF,
    ) -> None:
        self._telemetry = telemetry  # told of each retry
        self.base_url = base_url.rstrip("/")
        self._url = httpx.URL(_url(self.base_url, "/chat/completions"))
        self._api_key = api_key
        self._credentials = credentials
        self._names = model_names
        if auth_header == "auto":
            # Azure OpenAI wants its keys in ``api-key`` (Bearer is for Entra ID tokens).
            auth_header = "api-key" if is_azure_host(self.base_url) and credentials is None else "authorization"
        self._auth = _AuthHeader(auth_header, api_key, credentials)
        if model_listing == "auto":
            model_listing = "databricks" if urlsplit(self.base_url).path.endswith("/serving-endpoints") else "openai"
        self._model_listing = model_listing
        self._total_timeout_s = total_timeout_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_max_s = retry_after_max_s
        self._dialect = dialect
        self._dialects: dict[str, Dialect] = {}
        self._client = httpx.AsyncClient(
            # A read may not outlast the whole turn; the total is also checked between reads.
            timeout=httpx.Timeout(
                connect=connect_timeout_s,
                read=min(read_timeout_s, total_timeout_s),
                write=min(read_timeout_s, total_timeout_s),
                pool=connect_timeout_s,
            ),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
            trust_env=trust_env,
            headers={"user-agent": "execbridge"},
        )
        use_fast = http == "fast" or (
            http == "auto" and transport is None and not (trust_env and _proxy_applies(self.base_url))
        )
        self._fast = (
            Http11Endpoint(
                str(self._url),
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=min(read_timeout_s, total_timeout_s),
                max_connections=max_connections,
                ssl_context=default_ssl_context(trust_env) if self._url.scheme == "https" else None,
            )
            if use_fast
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, base_url: str | None = None, **overrides: Any) -> OpenAIChatUpstream:
        """The client ``settings`` describe; ``base_url`` (e.g. from Databricks auth) wins over theirs."""
        url = base_url or settings.upstream_url
        if not url:
            raise ValueError("settings.upstream_url is not set")
        key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        kwargs: dict[str, Any] = {
            "connect_timeout_s": settings.upstream_connect_timeout_s,
            "read_timeout_s": settings.upstream_read_timeout_s,
            "total_timeout_s": settings.upstream_total_timeout_s,
            "max_retries": settings.upstream_max_retries,
            "model_names": ModelNames(settings.model_map, provider=settings.provider),
            "dialect": forced_dialect(settings.upstream_dialect),
        }
        if settings.upstream_dialect == "azure":
            kwargs["auth_header"] = "api-key"
        kwargs.update(overrides)
        return cls(url, key, **kwargs)

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        await self._client.aclose()

    def dialect(self, model: str) -> Dialect:
        found = self._dialects.get(model)
        if found is None:
            if isinstance(self._dialect, Dialect):
                found = self._dialect
            elif self._dialect is not None:
                found = self._dialect(model)
            else:
                found = dialect_for(self.base_url, model)
            self._dialects[model] = found
        return found

    def upstream_model(self, name: str) -> str:
        """The upstream's name for what a client calls ``name`` (the configured map and defaults)."""
        return self._names.upstream(name) if self._names is not None else name

    async def list_models(self, api_key: str | None = None) -> list[ModelInfo]:
        """What the upstream offers: ``GET {base}/models``, or on Databricks the serving endpoints
        (``GET {host}/api/2.0/serving-endpoints``, chat endpoints only). Not the hot path."""
        if self._model_listing == "databricks":
            url = _url(self.base_url.removesuffix("/serving-endpoints"), "/api/2.0/serving-endpoints")
        else:
            url = _url(self.base_url, "/models")
        header = await self._auth.for_request(api_key)
        try:
            response = await self._client.get(url, headers=header.headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, url)[0] from exc
        if response.status_code >= 400:
            error = error_from_response(response.status_code, response.content, response.headers)
            raise self._credential_refused(error) if api_key is None else error
        data = load_json(response.content)
        if self._model_listing == "databricks":
            return [
                ModelInfo(e["name"], _epoch_s(e.get("creation_timestamp"), millis=True))
                for e in data.get("endpoints") or ()
                if isinstance(e, dict) and e.get("name") and "chat" in str(e.get("task") or "chat")
            ]
        return [
            ModelInfo(m["id"], _epoch_s(m.get("created")))
            for m in data.get("data") or ()
            if isinstance(m, dict) and m.get("id")
        ]

    # ------------------------------------------------------------ one turn

    async def stream_turn(self, turn: ChatTurn) -> AsyncGenerator[UpstreamEvent, None]:
        model = self.upstream_model(turn.model)
        if model != turn.model:
            turn = replace(turn, model=model)
        if turn.stop and not turn.stream:
            # Stop sequences are matched here, not upstream (``stop_match.py``): streaming lets the turn
            # end at the match instead of running on to the token limit.
            turn = replace(turn, stream=True)
        dialect = self.dialect(model)
        body = await _encoded(turn, dialect)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout_s
        attempt = adaptations = 0
        reauthenticated = False
        while True:
            yielded = False
            try:
                header = await self._auth.for_request(turn.api_key)
                async with self._post(body, header) as response:
                    if response.status_code >= 400:
                        raw = await _read_capped(response)
                        raise error_from_response(response.status_code, raw, response.headers)
                    if "text/event-stream" in response.headers.get("content-type", ""):
                        events = sse_events(response.aiter_bytes(), deadline, loop.time)
                    else:
                        events = _json_events(response)
                    matcher = StopMatcher(turn.stop) if turn.stop else None
                    try:
                        async for event in events:
                            for out in matcher.feed(event) if matcher is not None else (event,):
                                yielded = True
                                yield out
                            if matcher is not None and matcher.done:
                                if not matcher.usage_seen:
                                    yield _estimated_usage(len(body), matcher.output_chars)
                                break  # the turn ended at a stop sequence: stop reading (and close)
                    finally:
                        await events.aclose()  # now, not whenever the garbage collector gets to it
                    return
            except UpstreamError as exc:
                error, retryable = exc, exc.status in RETRY_STATUSES
            except httpx.HTTPError as exc:
                error, retryable = transport_error(exc, str(self._url))
                error.__cause__ = exc
            if yielded:
                raise error
            if adaptations < _MAX_ADAPTATIONS:
                adapted = adapt(dialect, error, turn)
                if adapted is not None:
                    # Refused before any output: resend at once, and remember for this model.
                    dialect = self._dialects[model] = adapted
                    body = await _encoded(turn, dialect)
                    adaptations += 1
                    continue
            if error.status in (401, 403) and turn.api_key is None:
                if error.status == 401 and self._credentials is not None and not reauthenticated:
                    self._credentials.invalidate()  # maybe revoked or expired early: one fresh token
                    reauthenticated = True
                    continue
                raise self._credential_refused(error)
            if not retryable or attempt >= self._max_retries:
                raise error
            delay = self._retry_delay(attempt, error.retry_after)
            if delay is None or loop.time() + delay > deadline:
                raise error
            attempt += 1
            self._telemetry.upstream_retried(str(error.status) if error.status is not None else "transport")
            await asyncio.sleep(delay)

    def _post(self, body: bytes, header: _Header) -> AbstractAsyncContextManager[_Response]:
        """POST ``body`` with the credential ``header``, on the fast path when there is one."""
        if self._fast is not None:
            return self._fast.post(body, header.line)
        return self._client.stream("POST", self._url, content=body, headers=header.headers)

    def _credential_refused(self, error: UpstreamError) -> UpstreamError:
        """A 401/403 to the gateway's own credential: not the client's fault, so a bad gateway (502)."""
        if error.status not in (401, 403) or (self._credentials is None and self._api_key is None):
            return error
        return UpstreamError(
            f"the upstream refused the gateway's credential (HTTP {error.status}): {error.message}",
            code="upstream_credential_refused",
        )

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``; ``None`` means give up now."""
        if retry_after is not None:
            # The server knows when it will have room; waiting less only earns another refusal, and a
            # wait longer than our cap is better left to the client (it gets ``retry_after``).
            return max(retry_after, 0.0) if retry_after <= self._retry_after_max_s else None
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2.0**attempt))
        return ceiling * (0.5 + random.random() / 2)  # jitter so that retrying clients spread out


class _Header:
    """One request's credential header, in both encodings: a raw line for ``_http11``, a dict for httpx."""

    __slots__ = ("headers", "line", "value")

    def __init__(self, name: str, value: str) -> None:
        self.value = value
        self.line = f"{name}: {value}\r\n".encode("ascii") if name else b""
        self.headers = {"content-type": "application/json"}
        if name:
            self.headers[name] = value


_NO_AUTH = _Header("", "")


class _AuthHeader:
    """Which credential header each request carries: a client's key (pass-through), else the gateway's
    ``Credentials`` (a whole ``authorization`` value, refreshed), else the configured key, else none.

    Keys go in ``authorization`` as ``Bearer <key>``, or as they are in ``api-key`` (Azure). Every value
    is checked before it goes into a header line; the configured key is encoded once, and a
    credential's encoding is kept while its value does not change (a token outlives many requests).
    """

    __slots__ = ("_cached", "_credentials", "_fixed", "_name")

    def __init__(
        self, name: Literal["authorization", "api-key"], api_key: str | None, credentials: Credentials | None
    ) -> None:
        self._name = name
        self._credentials = credentials
        self._fixed = self.for_key(api_key)
        self._cached = _NO_AUTH

    def for_key(self, key: str | None) -> _Header:
        if not key:
            return _NO_AUTH
        if self._name == "api-key":
            return _Header("api-key", _checked_key(key))
        # Credentials hand over whole header values ("Bearer …"); keys get the scheme added.
        return _Header("authorization", _checked_key(key if key.startswith("Bearer ") else f"Bearer {key}"))

    async def for_request(self, client_key: str | None) -> _Header:
        if client_key is not None:
            return self.for_key(client_key)
        if self._credentials is None:
            return self._fixed
        value = await self._credentials.authorization()
        if value != self._cached.value:
            self._cached = _Header("authorization", _checked_key(value))
        return self._cached


def _checked_key(api_key: str) -> str:
    # A key goes into a raw header line: CR/LF or other controls would let it forge headers.
    if not api_key.isascii() or not api_key.isprintable():
        raise AuthenticationFailed("the API key contains characters that cannot be sent in an HTTP header")
    return api_key


def _epoch_s(value: Any, *, millis: bool = False) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value / 1000 if millis else value)
    return None


def _proxy_applies(url: str) -> bool:
    """Whether httpx would route ``url`` through a proxy from the environment (the fast path cannot)."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


async def _read_capped(response: _Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _ERROR_BODY_LIMIT:
            break
    return b"".join(chunks)[:_ERROR_BODY_LIMIT]


async def _encoded(turn: ChatTurn, dialect: Dialect) -> bytes:
    """The request body. PDFs whose text the payload needs are read on a thread first (pypdf is slow)."""
    if not dialect.file_parts:
        pdfs = [
            p.data
            for m in turn.messages
            for p in m.parts
            if isinstance(p, Document) and p.data and p.media_type == "application/pdf"
        ]
        if pdfs:
            await asyncio.to_thread(warm, pdfs)
    return orjson.dumps(build_payload(turn, dialect))


def _estimated_usage(request_bytes: int, output_chars: int) -> TokenUsage:
    """A turn cut at a stop sequence ends before the upstream's usage report: about four characters a
    token (docs/protocol.md §1.5)."""
    return TokenUsage(max(1, request_bytes // 4), output_chars // 4 + 1)


async def _json_events(response: _Response) -> AsyncGenerator[UpstreamEvent, None]:
    raw = await response.aread()
    for event in events_from_completion(load_json(raw)):
        yield event
