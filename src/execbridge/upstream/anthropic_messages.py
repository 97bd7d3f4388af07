"""``AnthropicMessagesUpstream``: the ``Upstream`` for servers that speak Anthropic's Messages API.

Job: send one ``ChatTurn`` to ``POST {base}/v1/messages`` (Databricks ``/serving-endpoints/anthropic``
and its AI Gateway ``/ai-gateway/anthropic``, LiteLLM's and vLLM's ``/v1/messages``, Anthropic itself)
and yield neutral ``UpstreamEvent``s, streamed or whole (``anthropic_stream.py``); count a turn's
input tokens with ``POST {base}/v1/messages/count_tokens`` where the upstream serves it; list models
(``GET {base}/v1/models``). The body is ``anthropic_translate.build_messages_payload``: the client's
request as the engine carries it, thinking signatures and cache breakpoints included.

Who authenticates: the client's own key when the turn carries one (pass-through), else the gateway's
``Credentials`` (Databricks: a Bearer token, refreshed) or its fixed key. Keys go in ``x-api-key`` (what
Anthropic, LiteLLM and vLLM read) unless ``auth_header="authorization"``; credentials always go as
``Authorization``. A 401 to refreshable credentials is retried once with a fresh token.

What is learnt, per model, from the upstream's own refusals: ``anthropic-beta`` values it does not
accept (the request is sent again without betas, at once, as nothing was output), and that it does not
serve ``count_tokens`` (404: the caller estimates, and the upstream is not asked again), and that an
assistant message which only calls tools must carry (empty) text (an upstream that translates to Chat
Completions and whose backend then misses ``content``: "has no attribute 'content'").

Must not: leak HTTP or JSON shapes, retry once an event was yielded, or keep a connection open after
the consumer stops iterating. Invariants: as ``openai_chat.py`` (429, 5xx and connection failures are
retried with back-off while nothing was yielded and the total timeout allows; ``Finished`` last).

Hot path: one ``orjson.dumps`` per turn; HTTP through ``_http11`` unless a proxy applies or a transport
was injected.
"""

from __future__ import annotations

import asyncio
import random
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from execbridge.errors import AuthenticationFailed, UpstreamError
from execbridge.telemetry import OFF, Telemetry
from execbridge.upstream._http11 import Http11Endpoint, default_ssl_context
from execbridge.upstream.anthropic_stream import message_events, sse_message_events
from execbridge.upstream.anthropic_translate import build_messages_payload, has_call_only_turn
from execbridge.upstream.base import ChatTurn, Credentials, ModelInfo, UpstreamEvent
from execbridge.upstream.error_envelopes import error_from_response, transport_error
from execbridge.upstream.model_names import ModelNames
from execbridge.upstream.stream import load_json

__all__ = ["ANTHROPIC_VERSION", "AnthropicMessagesUpstream", "refused_betas"]

ANTHROPIC_VERSION: Final = "2023-06-01"
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504, 529})
_ERROR_BODY_LIMIT: Final = 64 << 10
_NOT_COUNTED: Final = frozenset({404, 405, 501})
# A Jinja chat template reading a message without content: an upstream that turned our call-only
# assistant message into a Chat Completions message without ``content`` (LiteLLM → llama-cpp-python).
_NO_CONTENT: Final = "has no attribute 'content'"
# Fields of a messages body that count_tokens does not take.
_NOT_FOR_COUNTING: Final = ("max_tokens", "stream", "stop_sequences", "temperature", "top_p", "top_k", "metadata")


def _url(base_url: str, path: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path))


def refused_betas(error: UpstreamError) -> bool:
    """Whether the upstream refused the request for its ``anthropic-beta`` header (Anthropic words it
    "Unexpected value(s) … for the `anthropic-beta` header"; others name the header too)."""
    return error.status == 400 and "anthropic-beta" in error.message.lower()


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aread(self) -> bytes: ...


class AnthropicMessagesUpstream:
    """A pooled HTTP client for one Anthropic Messages base URL (the part before ``/v1/messages``)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        credentials: Credentials | None = None,
        auth_header: Literal["x-api-key", "authorization"] = "x-api-key",
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 300.0,
        total_timeout_s: float = 900.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        retry_after_max_s: float = 30.0,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
        http: Literal["auto", "fast", "httpx"] = "auto",
        model_names: ModelNames | None = None,
        telemetry: Telemetry = OFF,
    ) -> None:
        self._telemetry = telemetry  # told of each retry
        self.base_url = base_url.rstrip("/").removesuffix("/v1/messages").removesuffix("/v1")
        self._messages_url = _url(self.base_url, "/v1/messages")
        self._count_url = _url(self.base_url, "/v1/messages/count_tokens")
        self._api_key = api_key
        self._credentials = credentials
        self._key_header = "authorization" if auth_header == "authorization" else "x-api-key"
        self._names = model_names
        self._total_timeout_s = total_timeout_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_max_s = retry_after_max_s
        self._no_betas: set[str] = set()  # models whose upstream refused our anthropic-beta values
        self._not_counting: set[str] = set()  # models whose upstream does not serve count_tokens
        self._text_in_call_turns: set[str] = set()  # models whose upstream needs text beside calls
        self._client = httpx.AsyncClient(
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
        scheme = urlsplit(self._messages_url).scheme
        self._fast = (
            Http11Endpoint(
                self._messages_url,
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=min(read_timeout_s, total_timeout_s),
                max_connections=max_connections,
                ssl_context=default_ssl_context(trust_env) if scheme == "https" else None,
            )
            if use_fast
            else None
        )

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        await self._client.aclose()

    def upstream_model(self, name: str) -> str:
        return self._names.upstream(name) if self._names is not None else name

    # ------------------------------------------------------------ headers

    async def _headers(self, client_key: str | None, betas: tuple[str, ...]) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        if client_key is not None:
            self._put_key(headers, client_key)
        elif self._credentials is not None:
            headers["authorization"] = _checked(await self._credentials.authorization())
        elif self._api_key:
            self._put_key(headers, self._api_key)
        return headers

    def _put_key(self, headers: dict[str, str], key: str) -> None:
        if self._key_header == "authorization":
            headers["authorization"] = _checked(key if key.startswith("Bearer ") else f"Bearer {key}")
        else:
            headers["x-api-key"] = _checked(key)

    # ------------------------------------------------------------ one turn

    async def stream_turn(self, turn: ChatTurn) -> AsyncGenerator[UpstreamEvent, None]:
        model = self.upstream_model(turn.model)
        if model != turn.model:
            turn = replace(turn, model=model)
        text_in_call_turns = model in self._text_in_call_turns
        payload = build_messages_payload(turn, text_in_call_turns=text_in_call_turns)
        body = orjson.dumps(payload)
        betas = () if model in self._no_betas else turn.betas
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout_s
        attempt = 0
        reauthenticated = False
        while True:
            yielded = False
            try:
                headers = await self._headers(turn.api_key, betas)
                async with self._post(body, headers) as response:
                    if response.status_code >= 400:
                        raise error_from_response(response.status_code, await _read_capped(response), response.headers)
                    if "text/event-stream" in response.headers.get("content-type", ""):
                        events = sse_message_events(response.aiter_bytes(), deadline, loop.time)
                    else:
                        events = _json_events(response)
                    try:
                        async for event in events:
                            yielded = True
                            yield event
                    finally:
                        await events.aclose()
                    return
            except UpstreamError as exc:
                error, retryable = exc, exc.status in RETRY_STATUSES
            except httpx.HTTPError as exc:
                error, retryable = transport_error(exc, self._messages_url)
                error.__cause__ = exc
            if yielded:
                raise error
            if betas and refused_betas(error):
                self._no_betas.add(model)  # refused before any output: send again without them
                betas = ()
                continue
            if not text_in_call_turns and _NO_CONTENT in error.message and has_call_only_turn(payload):
                self._text_in_call_turns.add(model)
                text_in_call_turns = True
                body = orjson.dumps(build_messages_payload(turn, text_in_call_turns=True))
                continue
            if error.status in (401, 403) and turn.api_key is None:
                if error.status == 401 and self._credentials is not None and not reauthenticated:
                    self._credentials.invalidate()
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

    def _post(self, body: bytes, headers: dict[str, str]) -> AbstractAsyncContextManager[_Response]:
        if self._fast is not None:
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k != "content-type")
            return self._fast.post(body, extra.encode("ascii"))
        return self._client.stream("POST", self._messages_url, content=body, headers=headers)

    def _credential_refused(self, error: UpstreamError) -> UpstreamError:
        if error.status not in (401, 403) or (self._credentials is None and self._api_key is None):
            return error
        return UpstreamError(
            f"the upstream refused the gateway's credential (HTTP {error.status}): {error.message}",
            code="upstream_credential_refused",
        )

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float | None:
        if retry_after is not None:
            return max(retry_after, 0.0) if retry_after <= self._retry_after_max_s else None
        ceiling = min(self._backoff_max_s, self._backoff_base_s * (2.0**attempt))
        return ceiling * (0.5 + random.random() / 2)

    # ------------------------------------------------------------ counting and listing

    async def count_tokens(self, turn: ChatTurn) -> int | None:
        """``POST {base}/v1/messages/count_tokens`` with the turn the model would get; ``None`` where the
        upstream does not serve it (404, 405, 501: remembered for the model)."""
        model = self.upstream_model(turn.model)
        if model in self._not_counting:
            return None
        payload = build_messages_payload(replace(turn, model=model), stream=False)
        for key in _NOT_FOR_COUNTING:
            payload.pop(key, None)
        betas = () if model in self._no_betas else turn.betas
        headers = await self._headers(turn.api_key, betas)
        try:
            response = await self._client.post(self._count_url, content=orjson.dumps(payload), headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, self._count_url)[0] from exc
        if response.status_code in _NOT_COUNTED:
            self._not_counting.add(model)
            return None
        if response.status_code >= 400:
            error = error_from_response(response.status_code, response.content, response.headers)
            raise self._credential_refused(error) if turn.api_key is None else error
        count = load_json(response.content).get("input_tokens")
        if type(count) is not int:
            raise UpstreamError("the upstream's count_tokens answer has no input_tokens", code="invalid_json")
        return count

    async def list_models(self, api_key: str | None = None) -> list[ModelInfo]:
        """``GET {base}/v1/models`` (Anthropic's listing, paged by the upstream; the first page)."""
        url = _url(self.base_url, "/v1/models")
        headers = await self._headers(api_key, ())
        try:
            response = await self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc, url)[0] from exc
        if response.status_code >= 400:
            error = error_from_response(response.status_code, response.content, response.headers)
            raise self._credential_refused(error) if api_key is None else error
        data = load_json(response.content)
        return [
            ModelInfo(m["id"], _created(m))
            for m in data.get("data") or ()
            if isinstance(m, dict) and isinstance(m.get("id"), str)
        ]


def _created(model: Mapping[str, Any]) -> int | None:
    """Anthropic lists ``created_at`` (RFC 3339); OpenAI-style listings (LiteLLM) ``created`` (epoch)."""
    created = model.get("created")
    if type(created) is int and created > 0:
        return created
    raw = model.get("created_at")
    if isinstance(raw, str):
        try:
            return int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return None
    return None


def _checked(value: str) -> str:
    # A value goes into a raw header line: CR/LF or other controls would let it forge headers.
    if not value.isascii() or not value.isprintable():
        raise AuthenticationFailed("the API key contains characters that cannot be sent in an HTTP header")
    return value


def _proxy_applies(url: str) -> bool:
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


async def _json_events(response: _Response) -> AsyncGenerator[UpstreamEvent, None]:
    raw = await response.aread()
    data = load_json(raw)
    if not isinstance(data, Mapping):
        raise UpstreamError(f"the upstream answered with JSON that is not a message: {raw[:200]!r}")
    for event in message_events(data):
        yield event
