"""The Messages request parser, fuzzed: whatever arrives, the answer is a parsed request or a 400
naming the field (``InvalidRequest``), never another exception (which the app would answer 500)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from execbridge.api.wire import parse_messages_request
from execbridge.errors import InvalidRequest
from execbridge.types import GenerationRequest

from .strategies import ANY, REQUEST

HEADERS = st.sampled_from([{}, {"anthropic-version": "2023-06-01"}, {"anthropic-version": "2099-01-01"}])


def _parse(body: Any, headers: dict[str, str]) -> None:
    # Through orjson and back, as the app receives it: what cannot be JSON never reaches the parser.
    try:
        body = orjson.loads(orjson.dumps(body))
    except orjson.JSONEncodeError:
        return
    try:
        assert isinstance(parse_messages_request(body, headers), GenerationRequest)
    except InvalidRequest as exc:
        assert exc.message  # says what is wrong


@given(ANY, HEADERS)
def test_any_json_is_parsed_or_refused_with_a_400(body: Any, headers: dict[str, str]) -> None:
    _parse(body, headers)


@given(REQUEST, HEADERS)
def test_almost_right_requests_are_parsed_or_refused_with_a_400(body: dict[str, Any], headers: dict[str, str]) -> None:
    _parse(body, headers)
