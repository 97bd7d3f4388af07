"""``OpenAIChatUpstream``: the ``Upstream`` for OpenAI-compatible Chat Completions servers.

Job: send one ``ChatTurn`` to ``POST {base}/chat/completions`` (Databricks ``/serving-endpoints``,
OpenAI, Azure, vLLM, Ollama, LiteLLM, …) and yield neutral ``UpstreamEvent``s, whether the upstream
streamed (SSE) or answered in one JSON body. Failures become ``errors.UpstreamError`` subclasses that
keep the upstream's status and its own message, whichever envelope it used (OpenAI ``{"error":{…}}``
or Databricks ``{"error_code","message"}``). Also lists the upstream's models (``list_models``).

Who authenticates: the client's own key when the turn carries one (pass-through), else the gateway's
``Credentials`` (Databricks unified auth, refreshed) or fixed ``api_key``. A 401 with refreshable
credentials is retried once with a fresh token; a gateway credential the upstream refuses is the
operator's problem, so it is reported as a bad gateway, not as the client's authentication error.

Quirks are learnt: a 400 that names a parameter the endpoint does not support (``max_tokens`` vs
``max_completion_tokens``, ``stream_options``, ``parallel_tool_calls``, ``top_k``) or refuses several
tool calls per assistant message switches that model's ``Dialect`` and resends at once (nothing was
processed), and the model keeps the adapted dialect from then on.

Must not: leak HTTP or JSON shapes to callers, retry once an event has been yielded, or keep a
connection open after the consumer stops iterating (the ``async with client.stream`` scope closes it
on ``aclose()`` and on cancellation; consumers should iterate under ``contextlib.aclosing``).

Event order per turn: text, reasoning and tool-call pieces as they come (pieces of one call never
interleave with another call's), then ``TokenUsage`` when the upstream reported it, then exactly one
``Finished``, always last.

Hot path: one ``orjson.dumps`` per request, one ``orjson.loads`` per SSE event, a hand-rolled SSE
line splitter, no pydantic. HTTP goes through ``_http11`` (asyncio + httptools, about 10x less CPU per
request than httpx here) unless a proxy applies or a transport was injected; then through httpx.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from execbridge.config import Settings
from execbridge.errors import (
    AuthenticationFailed,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from execbridge.ids import random_token
from execbridge.upstream._http11 import Http11Endpoint, default_ssl_context
from execbridge.upstream.base import (
    ChatTurn,
    Credentials,
    Finished,
    FinishReason,
    ModelInfo,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    UpstreamEvent,
)
from execbridge.upstream.models import ModelNames
from execbridge.upstream.translate import DATABRICKS, DATABRICKS_GPT_OSS, PRESETS, Dialect, build_payload, dialect_for

__all__ = ["OpenAIChatUpstream", "error_from_response", "events_from_completion", "parse_retry_after"]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}
_ERROR_BODY_LIMIT = 64 << 10  # an error page bigger than this is not worth reading whole
# Words with which servers say a parameter is not accepted (OpenAI "Unsupported parameter",
# "Unrecognized request argument", vLLM/pydantic "Extra inputs are not permitted", Databricks "not
# supported"). A value error ("max_tokens must be at most …") carries none of them.
_UNSUPPORTED = ("unsupported", "not supported", "unrecognized", "unknown", "not permitted", "extra input")
_MAX_ADAPTATIONS = 4  # each one flips a different dialect flag, so this bounds the resends


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._url = httpx.URL(_url(self.base_url, "/chat/completions"))
        self._api_key = api_key
        self._credentials = credentials
        self._names = model_names
        host = (urlsplit(self.base_url).hostname or "").lower()
        if auth_header == "auto":
            # Azure OpenAI wants its keys in ``api-key`` (Bearer is for Entra ID tokens).
            azure = host.endswith((".openai.azure.com", ".cognitiveservices.azure.com"))
            auth_header = "api-key" if azure and credentials is None else "authorization"
        self._auth_header = auth_header
        if model_listing == "auto":
            model_listing = "databricks" if urlsplit(self.base_url).path.endswith("/serving-endpoints") else "openai"
        self._model_listing = model_listing
        self._auth_cache: tuple[str, bytes] = ("", b"")  # last credential value and its header line
        self._total_timeout_s = total_timeout_s
        self._max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retry_after_max_s = retry_after_max_s
        self._dialect = dialect
        self._dialects: dict[str, Dialect] = {}
        self._headers = self._make_headers(api_key)
        self._header_bytes = self._make_header_bytes(api_key)
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
            "dialect": _forced_dialect(settings.upstream_dialect),
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
        auth = await self._auth_value(api_key)
        headers = self._make_headers(auth) if auth else {"content-type": "application/json"}
        try:
            response = await self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, url)[0] from exc
        if response.status_code >= 400:
            error = error_from_response(response.status_code, response.content, response.headers)
            raise self._credential_refused(error) if api_key is None else error
        data = _loads(response.content)
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

    async def stream_turn(self, turn: ChatTurn) -> AsyncIterator[UpstreamEvent]:
        model = self.upstream_model(turn.model)
        if model != turn.model:
            turn = replace(turn, model=model)
        dialect = self.dialect(model)
        body = orjson.dumps(build_payload(turn, dialect))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout_s
        attempt = adaptations = 0
        reauthenticated = False
        while True:
            yielded = False
            try:
                auth = await self._auth_line(turn.api_key)
                async with self._post(body, auth) as response:
                    if response.status_code >= 400:
                        raw = await _read_capped(response)
                        raise error_from_response(response.status_code, raw, response.headers)
                    if "text/event-stream" in response.headers.get("content-type", ""):
                        events = _sse_events(response, loop, deadline)
                    else:
                        events = _json_events(response)
                    try:
                        async for event in events:
                            yielded = True
                            yield event
                    finally:
                        await events.aclose()  # now, not whenever the garbage collector gets to it
                    return
            except UpstreamError as exc:
                error, retryable = exc, exc.status in RETRY_STATUSES
            except httpx.HTTPError as exc:
                error, retryable = _transport_error(exc, str(self._url))
                error.__cause__ = exc
            if yielded:
                raise error
            if error.status == 400 and adaptations < _MAX_ADAPTATIONS:
                adapted = _adapt(dialect, error, turn)
                if adapted is not None:
                    # Refused before any processing: resend at once, and remember for this model.
                    dialect = self._dialects[model] = adapted
                    body = orjson.dumps(build_payload(turn, dialect))
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
            await asyncio.sleep(delay)

    async def _auth_value(self, api_key: str | None) -> str | None:
        """The credential for one request: the client's key, else the gateway's (fresh), else none."""
        if api_key is not None:
            return api_key
        if self._credentials is not None:
            return await self._credentials.authorization()
        return self._api_key

    async def _auth_line(self, api_key: str | None) -> bytes | str | None:
        """What ``_post`` sends: ``None`` for the configured key, a client key, or a credential's header
        line (kept while the credential does not change, so the fast path encodes it once)."""
        if api_key is not None:
            return api_key
        if self._credentials is None:
            return None
        value = await self._credentials.authorization()
        cached_value, line = self._auth_cache
        if value != cached_value:
            line = f"authorization: {_checked_key(value)}\r\n".encode("ascii")
            self._auth_cache = (value, line)
        return line

    def _post(self, body: bytes, auth: bytes | str | None) -> AbstractAsyncContextManager[_Response]:
        """POST ``body``; ``auth`` is ``None`` (configured key), a bare key, or a whole header line."""
        if self._fast is not None:
            if auth is None:
                headers = self._header_bytes
            elif isinstance(auth, bytes):
                headers = auth
            else:
                headers = self._make_header_bytes(auth)
            return self._fast.post(body, headers)
        if auth is None:
            http_headers = self._headers
        elif isinstance(auth, bytes):
            http_headers = {"content-type": "application/json", "authorization": self._auth_cache[0]}
        else:
            http_headers = self._make_headers(auth)
        return self._client.stream("POST", self._url, content=body, headers=http_headers)

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

    def _make_header_bytes(self, api_key: str | None) -> bytes:
        if not api_key:
            return b""
        if self._auth_header == "api-key":
            return f"api-key: {_checked_key(api_key)}\r\n".encode("ascii")
        return f"authorization: {_bearer(api_key)}\r\n".encode("ascii")

    def _make_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if api_key:
            if self._auth_header == "api-key":
                headers["api-key"] = _checked_key(api_key)
            else:
                headers["authorization"] = _bearer(api_key)
        return headers


def _bearer(key: str) -> str:
    # Credentials hand over whole header values ("Bearer …"); keys get the scheme added.
    return _checked_key(key) if key.startswith("Bearer ") else f"Bearer {_checked_key(key)}"


def _forced_dialect(name: str) -> Dialect | Callable[[str], Dialect] | None:
    """The ``upstream_dialect`` setting: ``auto`` guesses per model; Databricks keeps its gpt-oss rule."""
    if name == "auto":
        return None
    if name == "databricks":
        return lambda model: DATABRICKS_GPT_OSS if "gpt-oss" in model.lower() else DATABRICKS
    return PRESETS[name]


def _adapt(dialect: Dialect, error: UpstreamError, turn: ChatTurn) -> Dialect | None:
    """The dialect that avoids what a 400 complains about, or ``None`` if it is about something else."""
    message = error.message.lower()
    if "multiple tool calls" in message and not dialect.one_tool_call_per_message:
        return replace(dialect, one_tool_call_per_message=True)
    # Optional extras we only ever send with valid values: a 400 naming one, however worded, means
    # the endpoint does not take it, and leaving it out loses little.
    if "stream_options" in message and turn.stream and dialect.stream_options_supported:
        return replace(dialect, stream_options_supported=False)
    if "parallel_tool_calls" in message and dialect.send_parallel_tool_calls and turn.parallel_calls is False:
        return replace(dialect, send_parallel_tool_calls=False)
    if "top_k" in message and dialect.supports_top_k and turn.sampling.top_k is not None:
        return replace(dialect, supports_top_k=False)
    # The token limit carries a client's value: switch fields only when the field itself is refused.
    if not any(word in message for word in _UNSUPPORTED):
        return None
    if "max_completion_tokens" in message and dialect.max_tokens_field == "max_completion_tokens":
        return replace(dialect, max_tokens_field="max_tokens")
    if "max_tokens" in message and dialect.max_tokens_field == "max_tokens":
        return replace(dialect, max_tokens_field="max_completion_tokens")
    return None


def _epoch_s(value: Any, *, millis: bool = False) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value / 1000 if millis else value)
    return None


def _checked_key(api_key: str) -> str:
    # A client's key goes into a raw header line: CR/LF or other controls would let it forge headers.
    if not api_key.isascii() or not api_key.isprintable():
        raise AuthenticationFailed("the API key contains characters that cannot be sent in an HTTP header")
    return api_key


# ---------------------------------------------------------------- reading responses


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


async def _json_events(response: _Response) -> AsyncGenerator[UpstreamEvent, None]:
    raw = await response.aread()
    for event in events_from_completion(_loads(raw)):
        yield event


async def _sse_events(
    response: _Response, loop: asyncio.AbstractEventLoop, deadline: float
) -> AsyncGenerator[UpstreamEvent, None]:
    """Split the SSE byte stream into ``data:`` payloads and fold each chunk into events.

    Follows the SSE framing rules that matter here: lines end in LF or CRLF, an event is dispatched on
    a blank line, several ``data:`` lines of one event join with LF, other fields are ignored.
    """
    state = _TurnState()
    out: list[UpstreamEvent] = []
    pending = b""
    data: list[bytes] = []
    chunks = response.aiter_bytes()
    async for chunk in chunks:
        if loop.time() > deadline:
            raise UpstreamTimeout("the upstream did not finish the turn within the total timeout", status=None)
        lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line and line[-1] == 13:  # CR of a CRLF line ending
                line = line[:-1]
            if line:
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                continue
            if not data:
                continue
            payload = data[0] if len(data) == 1 else b"\n".join(data)
            data.clear()
            if payload.startswith(b"[DONE]"):
                state.finish_turn(out)
                for event in out:
                    yield event
                # Read to the end of the body (normally just the chunked terminator, already buffered)
                # so that httpx returns the connection to the pool instead of closing it.
                async for _ in chunks:
                    pass
                return
            try:
                state.feed(_loads(payload), out)
            except UpstreamError:
                # What the model said before the error still reaches the consumer, however the bytes
                # happened to be split into reads (and then the error is not retried).
                for event in out:
                    yield event
                raise
        if out:
            for event in out:
                yield event
            out.clear()
    # The body ended without [DONE]: accept it if the turn had finished, else it was cut short.
    tail = pending.rstrip(b"\r")
    if tail.startswith(b"data:"):
        data.append(tail[5:].lstrip(b" "))
    if data and not data[0].startswith(b"[DONE]"):
        state.feed(_loads(b"\n".join(data)), out)
    if state.finish is None:
        for event in out:
            yield event
        raise UpstreamError("the upstream stream ended before the turn finished", code="stream_truncated")
    state.finish_turn(out)
    for event in out:
        yield event


def events_from_completion(completion: Mapping[str, Any]) -> list[UpstreamEvent]:
    """A whole (non-streamed) ``chat.completion`` as the same events a stream would give."""
    out: list[UpstreamEvent] = []
    state = _TurnState()
    state.feed(completion, out)
    state.finish_turn(out)
    return out


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"the upstream sent invalid JSON: {raw[:200]!r}", code="invalid_json") from exc


class _Call:
    __slots__ = ("id", "index", "upstream_index")

    def __init__(self, index: int, id: str, upstream_index: int | None) -> None:
        self.index = index
        self.id = id
        self.upstream_index = upstream_index


class _TurnState:
    """Folds chunks (or one whole completion: ``message`` is read like a ``delta``) into events."""

    __slots__ = ("_by_index", "_calls", "_current", "_held_empty", "finish", "stop_sequence", "usage")

    def __init__(self) -> None:
        self.finish: str | None = None
        self.stop_sequence: str | None = None
        self.usage: TokenUsage | None = None
        self._calls: list[_Call] = []
        self._by_index: dict[int, _Call] = {}
        self._current: _Call | None = None
        self._held_empty: _Call | None = None

    def feed(self, chunk: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        error = chunk.get("error")
        if error:
            raise error_from_body(None, chunk, None)
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        choices = chunk.get("choices")
        if not choices:
            return
        choice = choices[0]
        delta = choice.get("delta") or choice.get("message")
        if delta:
            self._delta(delta, out)
        finish = choice.get("finish_reason")
        if finish:
            self.finish = finish
            stop_reason = choice.get("stop_reason")  # vLLM names the stop string that matched
            if isinstance(stop_reason, str):
                self.stop_sequence = stop_reason

    def _delta(self, delta: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            self._release_held(out)
            out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content:
            self._release_held(out)
            if isinstance(content, str):
                out.append(TextDelta(content))
            else:
                _content_parts(content, out)
        refusal = delta.get("refusal")
        if refusal:
            out.append(TextDelta(refusal))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            for piece in tool_calls:
                self._tool_piece(piece, out)

    def _tool_piece(self, piece: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        upstream_index = piece.get("index")
        piece_id = piece.get("id")
        fn = piece.get("function") or {}
        arguments = fn.get("arguments") or ""
        call = self._find_call(upstream_index, piece_id)
        if call is None:
            self._release_held(out)
            call = _Call(len(self._calls), piece_id or f"call_{random_token()}", upstream_index)
            self._calls.append(call)
            if upstream_index is not None:
                self._by_index[upstream_index] = call
            self._current = call
            if arguments == "{}":  # Databricks may send "{}" first and the real arguments after it
                self._held_empty = call
                arguments = ""
            out.append(ToolCallDelta(call.index, call.id, fn.get("name") or "", arguments))
            return
        if call is not self._current:
            self._release_held(out)
            self._current = call
        if arguments:
            if self._held_empty is call:
                self._held_empty = None  # real arguments follow; the "{}" placeholder is dropped
            out.append(ToolCallDelta(call.index, None, None, arguments))

    def _find_call(self, upstream_index: int | None, piece_id: str | None) -> _Call | None:
        if upstream_index is not None:
            call = self._by_index.get(upstream_index)
            # Some servers reuse index 0 for every call; a new id then means a new call.
            if call is not None and (piece_id is None or piece_id == call.id):
                return call
            return None
        if piece_id is not None:
            return next((c for c in self._calls if c.id == piece_id), None)
        return self._current

    def _release_held(self, out: list[UpstreamEvent]) -> None:
        held = self._held_empty
        if held is not None:
            self._held_empty = None
            out.append(ToolCallDelta(held.index, None, None, "{}"))

    def finish_turn(self, out: list[UpstreamEvent]) -> None:
        self._release_held(out)
        reason = _FINISH.get(self.finish or "", "stop")
        # Some servers (Ollama, vLLM with some parsers) say "stop" after emitting tool calls.
        if self._calls and reason == "stop":
            reason = "tool_calls"
        if self.usage is not None:
            out.append(self.usage)
        out.append(Finished(reason, self.stop_sequence))


def _content_parts(parts: Any, out: list[UpstreamEvent]) -> None:
    """Databricks (Claude endpoints) may send ``content`` as a list of text and reasoning parts."""
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if text:
                out.append(TextDelta(text))
        elif kind == "reasoning":
            for summary in part.get("summary") or ():
                text = summary.get("text") or ""
                signature = summary.get("signature")
                if text or signature:
                    out.append(ReasoningDelta(text, signature or None))


def _usage(usage: Mapping[str, Any]) -> TokenUsage:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if details else None
    return TokenUsage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, cached or 0)


# ---------------------------------------------------------------- errors


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """An HTTP error answer as the matching ``UpstreamError`` subclass, keeping the upstream's words."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        text = body.decode("utf-8", errors="replace").strip()[:500]
        parsed = {"message": text or f"the upstream answered HTTP {status}"}
    return error_from_body(status, parsed, headers)


def error_from_body(status: int | None, body: Mapping[str, Any], headers: Mapping[str, str] | None) -> UpstreamError:
    message, code = _envelope(body)
    if status is None:
        # An error inside a stream has no HTTP status; vLLM and others put one in ``code``.
        raw_code = body.get("error", {}).get("code") if isinstance(body.get("error"), dict) else None
        if isinstance(raw_code, int) or (isinstance(raw_code, str) and raw_code.isdigit()):
            status = int(raw_code)
    retry_after = parse_retry_after(headers) if headers is not None else None
    lowered = (code or "").lower()
    cls: type[UpstreamError]
    if status == 429 or "rate_limit" in lowered or lowered == "request_limit_exceeded":
        cls = UpstreamRateLimited
    elif status in (503, 529) or "overloaded" in lowered:
        cls = UpstreamOverloaded
    elif status in (408, 504):
        cls = UpstreamTimeout
    else:
        cls = UpstreamError
    return cls(message, status=status, code=code, retry_after=retry_after)


def _envelope(body: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(message, code)`` from an OpenAI, Databricks, FastAPI or bare error body."""
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        return str(error.get("message") or error), None if code is None else str(code)
    if isinstance(error, str) and error:
        return error, None
    if "error_code" in body or "message" in body:
        code = body.get("error_code")
        return str(body.get("message") or code), None if code is None else str(code)
    detail = body.get("detail")
    if detail:
        return str(detail), None
    return orjson.dumps(body).decode()[:500], None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _transport_error(exc: httpx.HTTPError, url: str) -> tuple[UpstreamError, bool]:
    """``(error, retryable)`` for a failure below HTTP: no answer, a refused or broken connection."""
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout(f"connecting to the upstream at {url} timed out", code="connect_timeout"), True
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"the upstream at {url} did not answer in time ({type(exc).__name__})"), False
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(f"cannot connect to the upstream at {url}: {exc}", code="connect_error"), True
    if isinstance(exc, httpx.TransportError):
        # Typically a pooled keep-alive connection the server had already closed: safe to retry as
        # long as nothing was yielded (the caller checks that).
        return UpstreamError(f"the connection to the upstream at {url} failed: {exc!r}", code="connection"), True
    return UpstreamError(f"upstream request to {url} failed: {exc}"), False
