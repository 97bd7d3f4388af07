"""The incremental JSON-prefix check agrees with the parser the Anthropic SDK uses (jiter, partial mode)."""

from __future__ import annotations

import pytest
from jiter import from_json

from execbridge.engine.json_prefix import JsonPrefix
from execbridge.engine.turn import parse_arguments
from execbridge.types import MAX_NESTING

DOCUMENTS = [
    '{"command": "ls -la | head -5"}',
    '{"command":"create","path":"a.py","file_text":"print(\\"hi\\")\\n\\u00e9\\t"}',
    '{"a": [1, -2.5e+3, 0, 0.25, true, false, null, {"b": []}], "c": {}}',
    '  { "nested" : [ [ ] , [ { } ] ] }  ',
    '{"emoji": "😀", "ctrl": "\\b\\f\\r\\/"}',
    "[]",
    '"just a string"',
    "-0.5E-7",
]

INVALID = [
    '{"command": oops}',
    '{"a": 1,,}',
    '{"a" 1}',
    '{"a": 01}',
    '{"a": -}',
    '{"a": 1.}',
    '{"a": tru}',
    '{"a": "\\x"}',
    '{"a": "\\u12G4"}',
    '{"a": [1, 2}',
    '{"a": 1}}',
    "{'a': 1}",
    '{"a": "line\nbreak"}',
    '{"a": 1} {',
    "]",
]


def sdk_accepts(prefix: str) -> bool:
    if not prefix:
        return True
    try:
        from_json(prefix.encode(), partial_mode=True)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_prefix_of_a_valid_document_is_valid(document):
    checker = JsonPrefix()
    for i, ch in enumerate(document):
        assert checker.feed(ch), f"rejected at {i}: {document[: i + 1]!r}"
    assert sdk_accepts(document)


def rejection_index(text: str) -> int | None:
    checker = JsonPrefix()
    return next((i for i, ch in enumerate(text) if not checker.feed(ch)), None)


@pytest.mark.parametrize("text", INVALID)
def test_invalid_text_is_rejected_no_later_than_the_sdk_rejects_it(text):
    rejected_at = rejection_index(text)
    assert rejected_at is not None, f"never rejected {text!r}"
    # jiter's partial mode forgives some errors (a mismatched bracket, text after the document); where
    # it does fail, we must have stopped forwarding no later.
    first_sdk_failure = next((i for i in range(1, len(text) + 1) if not sdk_accepts(text[:i])), None)
    if first_sdk_failure is not None:
        assert rejected_at <= first_sdk_failure - 1, (rejected_at, first_sdk_failure)
    assert sdk_accepts(text[:rejected_at])  # what was accepted before the rejection, the SDK accepts too


def test_once_invalid_stays_invalid():
    checker = JsonPrefix()
    assert not checker.feed('{"a": x')
    assert not checker.feed('"fine"}')
    assert not checker.valid


def test_fragments_of_any_size_give_the_same_answer():
    text = '{"file_text": "' + "line\\n" * 50 + '", "path": "x"}'
    for size in (1, 3, 7, 64):
        checker = JsonPrefix()
        assert all(checker.feed(text[i : i + size]) for i in range(0, len(text), size))


def test_nesting_past_the_bound_is_invalid():
    """Arguments deeper than ``MAX_NESTING`` stop streaming where they pass it; ``parse_arguments``
    refuses them too, so the call becomes ``invalid_tool_input`` either way."""
    at_bound = '{"k":' * MAX_NESTING + "1" + "}" * MAX_NESTING
    assert JsonPrefix().feed(at_bound)
    assert parse_arguments(at_bound) is not None
    too_deep = "[" + at_bound + "]"
    assert not JsonPrefix().feed("[" * (MAX_NESTING + 1))
    assert not JsonPrefix().feed(too_deep)
    assert parse_arguments('{"a":' + too_deep + "}") is None
