"""Malformed but parseable requests against a real ``execbridge serve`` (issue 9, finding 7).

Every bad input is answered with a 4xx in Anthropic's error envelope carrying a request id
(docs/protocol.md §1.7): never a 500, never a reset, never a traceback in the server's log. Mutations
that happen to stay valid may succeed; nothing may fail on the server's side. After each batch the same
server still answers a valid request. Deterministic: fixed lists, and mutations generated from two
valid requests in a fixed order (about 2,200 requests in all, some 20 s). Only 127.0.0.1 is contacted:
the gateway, its instant fake upstream, and for the model's side the session's scripted one.
"""

from __future__ import annotations

import copy
import io
import re
import socket
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from execbridge.testing import FakeUpstream, Turn

from .conftest import CLIENT_KEY, MAX_FILE_BYTES, Gateway, sdk_client, serve

pytestmark = pytest.mark.adversarial

LIMIT = 256 << 10  # this gateway's max_request_bytes: small, so oversized bodies are quick to send
HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
ERROR_TYPES = {"invalid_request_error", "authentication_error", "not_found_error", "request_too_large"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with (
        FakeUpstream(instant=True, require_api_key=CLIENT_KEY) as fake,
        serve(fake, tmp_path_factory.mktemp("hostile"), EXECBRIDGE_MAX_REQUEST_BYTES=str(LIMIT)) as running,
    ):
        yield running
    log = running.log.read_text(errors="replace")
    assert "unexpected error" not in log and "Exception in ASGI application" not in log, log[-4000:]


@pytest.fixture
def http(hostile: Gateway) -> Iterator[httpx.Client]:
    """One keep-alive connection for a whole batch, so a reset or a half-read body shows up."""
    with httpx.Client(base_url=hostile.url, headers=HEADERS, timeout=30) as client:
        yield client
    assert_still_serving(hostile)


# ---------------------------------------------------------------- what every answer must look like


def envelope_problem(response: httpx.Response) -> str | None:
    """Why ``response`` is not a 4xx in the error envelope with a request id (None if it is)."""
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.text[:200]}"
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return f"{response.status_code} with a body that is not JSON: {response.text[:200]}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or body.get("type") != "error":
        return f"not an error envelope: {body}"
    if error.get("type") not in ERROR_TYPES or not isinstance(error.get("message"), str) or not error["message"]:
        return f"bad error object: {error}"
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id.startswith("req_"):
        return f"no request id: {body}"
    if response.headers.get("request-id") != request_id:
        return f"request-id header {response.headers.get('request-id')!r} differs from the body's {request_id!r}"
    if response.headers.get("content-type") != "application/json":
        return f"content-type {response.headers.get('content-type')!r}"
    return None


def outcome(send: Callable[[], httpx.Response], *, success: bool | None = False, says: str = "") -> str | None:
    """None if the answer is what it must be, else what was wrong with it: a 4xx envelope whose message
    contains ``says`` (``success=False``), a 200 (``True``), or either (``None``: a mutation may stay valid)."""
    try:
        response = send()
    except httpx.TransportError as exc:
        return f"transport error {type(exc).__name__}: {exc}"
    if success is not False and response.status_code == 200:
        return None
    if success:
        return f"status {response.status_code}: {response.text[:200]}"
    problem = envelope_problem(response)
    if problem is None and says not in response.json()["error"]["message"]:
        return f"message does not say {says!r}: {response.json()['error']['message']}"
    return problem


def assert_all_answered(results: dict[str, str | None]) -> None:
    failures = [f"{name}: {problem}" for name, problem in results.items() if problem is not None]
    if failures:
        pytest.fail(f"{len(failures)} of {len(results)} failed:\n" + "\n".join(failures), pytrace=False)


def assert_still_serving(gateway: Gateway) -> None:
    message = sdk_client(gateway.url, CLIENT_KEY).messages.create(
        model="fake-model", max_tokens=16, messages=[{"role": "user", "content": "still there?"}]
    )
    assert message.content and message.stop_reason == "end_turn"


# ---------------------------------------------------------------- valid requests, and their JSON


def valid_body() -> dict[str, Any]:
    """Every field the gateway reads, client tools only (no sandbox), valid as a whole."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}
    call = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "r"}]}
    return {
        "model": "fake-model",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief."}],
        "metadata": {"user_id": "u1"},
        "stop_sequences": ["STOP"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "stream": False,
        "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": False},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, image, document]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, call]},
            {"role": "user", "content": [result, {"type": "text", "text": "go on"}]},
        ],
    }


def code_execution_body() -> dict[str, Any]:
    """A continuation with an answered server call (each valid variant takes a container)."""
    call = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "bash_code_execution", "input": {"command": "true"}}
    output = {"type": "bash_code_execution_result", "stdout": "", "stderr": "", "return_code": 0, "content": []}
    result = {"type": "bash_code_execution_tool_result", "tool_use_id": "srvtoolu_1", "content": output}
    return {
        "model": "fake-model",
        "max_tokens": 64,
        "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
        "messages": [
            {"role": "user", "content": "run it"},
            {"role": "assistant", "content": [call, result]},
            {"role": "user", "content": "thanks"},
        ],
    }


def deep_json(levels: int) -> bytes:
    """``levels`` containers nested, objects and arrays alternating, as JSON text."""
    opening = b"".join(b"[" if i % 2 else b'{"k":' for i in range(levels))
    closing = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(levels)))
    return opening + b"1" + closing


_RAW: list[bytes] = []
_RAW_MARKER = re.compile(rb'"\\u0001raw(\d+)\\u0001"')


def raw(text: bytes) -> str:
    """Stands for the JSON text ``text`` in a body given to ``encode``: numbers orjson cannot write,
    and nesting deeper than the 255 levels it writes."""
    _RAW.append(text)
    return f"\u0001raw{len(_RAW) - 1}\u0001"


def encode(body: Any) -> bytes:
    return _RAW_MARKER.sub(lambda match: _RAW[int(match[1])], orjson.dumps(body))


def post_messages(http: httpx.Client, body: bytes, **headers: str) -> Callable[[], httpx.Response]:
    return partial(http.post, "/v1/messages", content=body, headers=headers)


# ---------------------------------------------------------------- every field, every wrong value

# Wrong types and odd values of every JSON kind; every path of a valid request gets each of them.
REPLACEMENTS: tuple[tuple[str, Any], ...] = (
    ("null", None),
    ("true", True),
    ("zero", 0),
    ("negative", -1),
    ("fraction", 1.5),
    ("huge float", 1e30),
    ("beyond int64", raw(b"18446744073709551616")),
    ("below int64", raw(b"-9223372036854775809")),
    ("tiny", 5e-324),
    ("NaN string", "NaN"),
    ("empty string", ""),
    ("nul string", "\u0000"),
    ("odd unicode", "\u202e\ufeff\U0001f600\u0301"),
    ("huge string", "x" * (LIMIT // 4)),
    ("empty array", []),
    ("array of null", [None]),
    ("empty object", {}),
    ("unknown block", {"type": "no_such_block"}),
    ("nested 300", raw(deep_json(300))),
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``value``, parents before children."""
    items: Any = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def mutations(base: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``base`` with one path deleted or replaced, for every path and every replacement."""
    for path in paths(base):
        name = ".".join(map(str, path))
        for label, replacement in (("deleted", None), *REPLACEMENTS):
            changed = copy.deepcopy(base)
            parent = changed
            for key in path[:-1]:
                parent = parent[key]
            if label != "deleted":
                parent[path[-1]] = replacement
            elif isinstance(parent, dict):
                del parent[path[-1]]
            else:
                continue
            yield f"{name} {label}", changed


@pytest.mark.parametrize("base", [valid_body, code_execution_body])
def test_every_field_of_a_valid_request_mutated(http: httpx.Client, base: Callable[[], dict[str, Any]]) -> None:
    results = {name: outcome(post_messages(http, encode(body)), success=None) for name, body in mutations(base())}
    assert len(results) > 500
    assert_all_answered(results)


# ---------------------------------------------------------------- nesting, numbers, bodies

FORWARDED = ("tool_use.input", "server_tool_use.input", "input_schema")


def with_deep(place: str, levels: int) -> dict[str, Any]:
    """A valid body with a value nested ``levels`` deep at ``place``."""
    body = code_execution_body() if place == "server_tool_use.input" else valid_body()
    nested = raw(deep_json(levels))
    if place == "tool_use.input":
        body["messages"][1]["content"][1]["input"] = nested
    elif place == "server_tool_use.input":
        body["messages"][1]["content"][0]["input"] = nested
    elif place == "input_schema":
        body["tools"][0]["input_schema"] = nested
    elif place == "unknown field":
        # cache_control is read now (it reaches Anthropic-native upstreams); a field nobody reads is not
        body["messages"][0]["content"][0]["x_extension"] = nested
    else:
        body["metadata"]["extra"] = nested
    return body


@pytest.mark.parametrize("place", [*FORWARDED, "unknown field", "metadata"])
def test_deep_nesting_is_refused_with_a_clear_message(http: httpx.Client, place: str) -> None:
    """What reaches an encoder (inputs, schemas) may nest 100 levels; ignored fields up to the parser's
    1024 levels for the whole body. Past either bound: a 400 that says so."""
    forwarded = place in FORWARDED
    results = {}
    for levels in (101, 254, 255, 256, 300, 1000, 1100, 5000) if forwarded else (300, 1000, 1100, 5000):
        served = not forwarded and levels <= 1000
        send = post_messages(http, encode(with_deep(place, levels)))
        results[f"{levels}"] = outcome(send, success=served, says="levels deep")
    results["100"] = outcome(post_messages(http, encode(with_deep(place, 100))), success=True)
    assert_all_answered(results)


VALID = orjson.dumps(valid_body())
# (name, body, extra headers)
RAW_BODIES: tuple[tuple[str, bytes, dict[str, str]], ...] = (
    ("empty body", b"", {}),
    ("whitespace", b"  \n", {}),
    ("not JSON", b"hello", {}),
    ("truncated", VALID[:-1], {}),
    ("trailing garbage", VALID + b"}", {}),
    ("two documents", VALID + VALID, {}),
    ("array", b"[" + VALID + b"]", {}),
    ("string", b'"hi"', {}),
    ("number", b"42", {}),
    ("null", b"null", {}),
    ("invalid UTF-8", VALID.replace(b'"hi"', b'"h\xff\xfe"'), {}),
    ("overlong UTF-8", VALID.replace(b'"hi"', b'"\xc0\xaf"'), {}),
    ("UTF-16", VALID.decode().encode("utf-16"), {}),
    ("BOM then JSON", b"\xef\xbb\xbf" + VALID, {}),
    ("lone surrogate escape", VALID.replace(b'"hi"', b'"\\ud800"'), {}),
    ("raw NUL byte", VALID.replace(b'"hi"', b'"h\x00i"'), {}),
    ("NaN literal", VALID.replace(b'"max_tokens":64', b'"max_tokens":NaN'), {}),
    ("Infinity literal", VALID.replace(b'"max_tokens":64', b'"max_tokens":Infinity'), {}),
    ("1e400", VALID.replace(b'"max_tokens":64', b'"max_tokens":1e400'), {}),
    ("-1e400", VALID.replace(b'"temperature":0.5', b'"temperature":-1e400'), {}),
    ("hex number", VALID.replace(b'"max_tokens":64', b'"max_tokens":0x40'), {}),
    ("leading zeros", VALID.replace(b'"max_tokens":64', b'"max_tokens":064'), {}),
    ("single quotes", VALID.replace(b'"model"', b"'model'"), {}),
    ("comment", b"/* hi */" + VALID, {}),
    ("duplicate key, the last one wrong", VALID[:-1] + b',"max_tokens":"many"}', {}),
    ("duplicate messages, the last one empty", VALID[:-1] + b',"messages":[]}', {}),
    ("form body", b"model=m&max_tokens=5", {"content-type": "application/x-www-form-urlencoded"}),
    ("text/plain garbage", b"max_tokens: 5", {"content-type": "text/plain"}),
    ("no content-type, garbage", b"\x00\x01\x02", {"content-type": ""}),
    ("gzip claimed, not gzip", VALID, {"content-encoding": "gzip"}),
    ("brotli claimed", VALID, {"content-encoding": "br"}),
)

# field → the JSON numbers (and strings), space-separated, it must refuse with a message naming it
NUMBERS: dict[str, str] = {
    "max_tokens": "1e30 -1e30 1e308 9223372036854775808 18446744073709551615 18446744073709551616 "
    '-9223372036854775809 2147483648 4.2e9 -1 -0.5 1.0000000001 "1e30" "NaN" "Infinity"',
    "top_k": "1e30 18446744073709551616 2147483648 -1",
    "temperature": '1e308 -5e-324 "NaN"',
    "top_p": "1.0000001",
}


def test_raw_bodies_are_refused(http: httpx.Client) -> None:
    results = {name: outcome(post_messages(http, body, **headers)) for name, body, headers in RAW_BODIES}
    assert_all_answered(results)


@pytest.mark.parametrize("stream", [False, True])
def test_out_of_range_numbers_are_refused(http: httpx.Client, stream: bool) -> None:
    results = {}
    for field, numbers in NUMBERS.items():
        for number in numbers.split():
            body = {**valid_body(), "stream": stream, field: raw(number.encode())}
            results[f"{field}={number}"] = outcome(post_messages(http, encode(body)), says=f"{field}: ")
    assert_all_answered(results)


def test_references_to_what_does_not_exist(http: httpx.Client) -> None:
    results = {}
    for container in ("x" * 5000, "\u0000", "../../etc", "container_", {"id": "container_zz"}):
        body = {**code_execution_body(), "container": container}
        results[f"container {container!r:.30}"] = outcome(post_messages(http, encode(body)))
    for file_id in ("", "file_x", "\u0000", "../../../etc/passwd"):
        body = code_execution_body()
        body["messages"][0]["content"] = [
            {"type": "container_upload", "file_id": file_id},
            {"type": "text", "text": "q"},
        ]
        results[f"container_upload {file_id!r}"] = outcome(post_messages(http, encode(body)))
    assert_all_answered(results)


# ---------------------------------------------------------------- routes, methods, headers

WRONG_ROUTES = [
    *"""GET /v1/messages
    PUT /v1/messages
    DELETE /v1/messages
    PATCH /v1/files
    POST /v1/files/file_x
    POST /v1/files/file_x/content
    POST /v1/models
    DELETE /v1/models/fake-model
    GET /v1/nope
    GET /
    POST /v1/messages/count_tokens
    POST /v1/messages/batches
    GET /v1/files/%00
    GET /v1/files/..%2F..%2Fetc%2Fpasswd
    GET /v1/files/\u00e9\U0001f600/content
    DELETE /v1/files/file_does_not_exist
    GET /v1/models/%ff%fe
    GET /v1/files?limit=abc
    GET /v1/files?limit=0
    GET /v1/files?limit=1e3
    GET /v1/files?limit=99999999999999999999999999
    GET /v1/files?page=garbage
    GET /v1/files?page=page_%ff
    GET /v1/files?after_id=a&before_id=b
    GET /v1/files?ids=a&limit=3""".splitlines(),
    "GET /v1/files/" + "f" * 8000,
    "GET /v1/files?page=page_" + "A" * 4000,
    "GET /v1/files?" + "&".join(f"ids={i}" for i in range(101)),
]

BAD_HEADERS: dict[str, dict[str, str | bytes]] = {
    "unknown version": {"anthropic-version": "1999-01-01"},
    "empty version": {"anthropic-version": ""},
    "binary version": {"anthropic-version": b"\xff\xfe"},
    "non-ASCII key": {"x-api-key": "cl\u00e9".encode()},
    "empty key": {"x-api-key": ""},
    "bearer without token": {"x-api-key": "", "authorization": "Bearer"},
    "basic auth": {"x-api-key": "", "authorization": "Basic YTpi"},
}


def test_wrong_routes_methods_and_headers(http: httpx.Client) -> None:
    results = {}
    for route in WRONG_ROUTES:
        method, path = route.split(maxsplit=1)
        results[f"{method} {path[:60]}"] = outcome(partial(http.request, method, path))
    for name, headers in BAD_HEADERS.items():
        results[name] = outcome(partial(http.post, "/v1/messages", content=VALID, headers=headers))
    assert_all_answered(results)


# ---------------------------------------------------------------- bodies over the limit


def oversized(path: str, size: int, *, chunked: bool, close: bool, expect: bool = False) -> tuple[str, Iterator[bytes]]:
    """A request of exactly ``size`` body bytes (before chunk framing): its head, and its body's chunks."""
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {CLIENT_KEY}\r\nanthropic-version: 2023-06-01\r\n"
    head += "content-type: multipart/form-data; boundary=b\r\n" if path == "/v1/files" else ""
    head += "transfer-encoding: chunked\r\n" if chunked else f"content-length: {size}\r\n"
    head += "connection: close\r\n" if close else ""
    head += "expect: 100-continue\r\n" if expect else ""
    if path == "/v1/files":
        first = b'--b\r\ncontent-disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    else:
        first = b'{"model":"fake-model","max_tokens":5,"messages":[{"role":"user","content":"'
    piece = b"x" * (64 << 10)
    pieces, rest = divmod(size - len(first), len(piece))

    def body() -> Iterator[bytes]:
        for data in (first, *([piece] * pieces), *([piece[:rest]] if rest else [])):
            yield b"%x\r\n%b\r\n" % (len(data), data) if chunked else data
        if chunked:
            yield b"0\r\n\r\n"

    return head, body()


def exchange(url: str, head: str, chunks: Iterator[bytes], *, wait_for_answer: bool = False) -> str | None:
    """Over a raw socket, as a client that sends its whole body before reading (unless it waits for
    ``100 Continue``): None if it could send everything and then read a 413 envelope up to the
    server's clean close, else what went wrong."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n")
        try:
            for chunk in () if wait_for_answer else chunks:
                sock.sendall(chunk)
            received = b""
            while data := sock.recv(65536):  # until the server closes
                received += data
        except OSError as exc:
            return f"{exc!r}"
    head_part, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head_part.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    response = httpx.Response(int(status_line.split()[1]), headers=headers, content=body)
    return envelope_problem(response) or (None if response.status_code == 413 else f"status {response.status_code}")


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/files"])
def test_bodies_over_the_limit_get_413_not_a_reset(hostile: Gateway, path: str) -> None:
    results = {}
    for size in (LIMIT + (64 << 10), 8 << 20):
        for chunked in (False, True):
            for close in (False, True):
                name = f"{size} {'chunked' if chunked else 'content-length'} {'close' if close else 'keep-alive'}"
                results[name] = exchange(hostile.url, *oversized(path, size, chunked=chunked, close=close))
    # A client that waits for 100-continue is told at once, and never sends its body.
    head, chunks = oversized(path, 8 << 20, chunked=False, close=False, expect=True)
    results["expect: 100-continue"] = exchange(hostile.url, head, chunks, wait_for_answer=True)
    assert_all_answered(results)
    assert_still_serving(hostile)


# ---------------------------------------------------------------- the Files API


def part(name: str, data: bytes, *, filename: bytes | None = b"a.txt", extra: bytes = b"") -> bytes:
    disposition = b'form-data; name="%b"' % name.encode()
    disposition += b'; filename="%b"' % filename if filename is not None else b""
    return b"--b\r\ncontent-disposition: " + disposition + b"\r\n" + extra + b"\r\n" + data + b"\r\n"


END = b"--b--\r\n"
MULTIPART = "multipart/form-data; boundary=b"
# (name, content-type, body)
BAD_UPLOADS: tuple[tuple[str, str, bytes], ...] = (
    ("no body", MULTIPART, b""),
    ("no content-type", "", part("file", b"x") + END),
    ("JSON instead", "application/json", b'{"file": "x"}'),
    ("multipart without boundary", "multipart/form-data", part("file", b"x") + END),
    ("multipart/mixed", "multipart/mixed; boundary=b", part("file", b"x") + END),
    ("other boundary in body", "multipart/form-data; boundary=zz", part("file", b"x") + END),
    ("garbage", MULTIPART, b"\x00\xff" * 100),
    ("no closing boundary", MULTIPART, part("file", b"cut short")),
    ("cut inside the headers", MULTIPART, b"--b\r\ncontent-disposition: form-da"),
    ("only the closing boundary", MULTIPART, END),
    ("no file part", MULTIPART, part("purpose", b"x", filename=None) + END),
    ("file part with a broken header", MULTIPART, part("file", b"x", extra=b"content-type\r\n") + END),
    ("file part named otherwise", MULTIPART, part("files", b"x") + END),
    ("two file parts", MULTIPART, part("file", b"x") + part("file", b"y") + END),
    ("too many fields", MULTIPART, b"".join(part(f"f{i}", b"v", filename=None) for i in range(40)) + END),
    ("field too large", MULTIPART, part("purpose", b"v" * 4096, filename=None) + part("file", b"x") + END),
    ("part without headers", MULTIPART, b"--b\r\n\r\nx\r\n" + END),
    ("header without colon", MULTIPART, b"--b\r\nnonsense\r\n\r\nx\r\n" + END),
    ("file over the limit", MULTIPART, part("file", b"x" * (MAX_FILE_BYTES + 1)) + END),
)


def test_malformed_uploads_are_refused(http: httpx.Client) -> None:
    results = {
        name: outcome(partial(http.post, "/v1/files", content=body, headers={"content-type": content_type}))
        for name, content_type, body in BAD_UPLOADS
    }
    assert_all_answered(results)
    listed = http.get("/v1/files")
    assert listed.status_code == 200 and listed.json()["data"] == [], "a refused upload left a file behind"


def test_odd_but_valid_uploads_are_stored(http: httpx.Client) -> None:
    """File names nobody should send are the gateway's to sanitise, not reasons to fail."""
    odd = ("../../etc/passwd", "a\u0000b", "\u202egnp.exe", "x" * 1000, "", "-rf", "\U0001f600")
    for filename in (*(name.encode() for name in odd), b"\xed\xa0\xbd", b"\xff\xfe"):
        body = part("file", b"data", filename=filename) + END
        response = http.post("/v1/files", content=body, headers={"content-type": MULTIPART})
        assert response.status_code == 200, (filename, response.text)
        assert http.delete(f"/v1/files/{response.json()['id']}").status_code == 200


# ---------------------------------------------------------------- through the official SDK


def test_sdk_sees_4xx_errors_not_500s_or_resets(hostile: Gateway) -> None:
    client = sdk_client(hostile.url, CLIENT_KEY)
    deep_input = orjson.loads(deep_json(250))
    call = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": deep_input}
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
    ]
    tool = {"name": "lookup", "input_schema": {"type": "object"}}
    deep_tool = {**tool, "input_schema": deep_input}
    cases: dict[str, dict[str, Any]] = {
        "tool_use.input 250 deep": {"max_tokens": 5, "messages": history, "tools": [tool]},
        "input_schema 250 deep": {"max_tokens": 5, "messages": history[:1], "tools": [deep_tool]},
        "max_tokens 1e30": {"max_tokens": 1e30, "messages": history[:1]},
        "max_tokens 2**64": {"max_tokens": 2**64, "messages": history[:1]},
        "max_tokens -1": {"max_tokens": -1, "messages": history[:1]},
    }
    for name, params in cases.items():
        for stream in (False, True):
            with pytest.raises(anthropic.BadRequestError) as caught:
                # an explicit timeout: the SDK refuses to wait for a huge max_tokens without one
                answer = client.messages.create(model="fake-model", stream=stream, timeout=30, **params)
                if stream:
                    list(answer)  # type: ignore[call-overload]
            assert caught.value.request_id and caught.value.request_id.startswith("req_"), name

    with pytest.raises(anthropic.APIStatusError) as too_large:
        client.messages.create(model="fake-model", max_tokens=5, messages=[{"role": "user", "content": "x" * LIMIT}])
    assert too_large.value.status_code == 413
    assert too_large.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    with pytest.raises(anthropic.APIStatusError) as too_large:
        client.beta.files.upload(file=("big.bin", io.BytesIO(b"x" * (MAX_FILE_BYTES + 1)), "application/octet-stream"))
    assert too_large.value.status_code == 413
    assert_still_serving(hostile)


# ---------------------------------------------------------------- the model's side


@pytest.mark.parametrize("stream", [False, True])
def test_model_arguments_nested_too_deep_are_invalid_input_not_a_500(gateway: Gateway, fake: Any, stream: bool) -> None:
    """Arguments no encoder could write back (orjson stops at 255 levels) count as invalid JSON."""
    fake.reset([Turn.tool_call("lookup", deep_json(300).decode())])
    body = {
        "model": "fake-model",
        "max_tokens": 64,
        "stream": stream,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "look it up"}],
    }
    response = httpx.post(f"{gateway.url}/v1/messages", content=encode(body), headers=HEADERS, timeout=30)
    assert response.status_code == 200, response.text
    if stream:
        events = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
        assert "error" not in events and events[-1] == "message_stop", events
        assert '"stop_reason":"tool_use"' in response.text
    else:
        message = response.json()
        assert message["stop_reason"] == "tool_use"
        assert [(b["type"], b["input"]) for b in message["content"]] == [("tool_use", {})]
