"""Checked reads of decoded JSON, each failure an ``InvalidRequest`` that names the field's path.

Job: the small validation vocabulary the request parser (``wire``) and the result-block parser
(``blocks``) share: read a field of an expected JSON type, or fail with a pydantic-style message
(``messages.2.content.0.source.media_type: expected a string, got number``).

Must not: know any request shape. It is on the hot path: a path string is built only on failure.
Why by hand, and what it costs against msgspec: docs/architecture.md, "Request validation".
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

from execbridge.errors import InvalidRequest
from execbridge.types import MAX_NESTING, nests_deeper_than

__all__ = [
    "MISSING",
    "at",
    "choice_error",
    "fail",
    "kind_of",
    "nested_at_most",
    "opt_bool",
    "opt_int",
    "opt_str",
    "req_dict",
    "req_int",
    "req_str",
    "wrong",
]

MISSING: Final = object()
"""Stands for an absent key (``None`` is JSON null, a value)."""


# ---------------------------------------------------------------- small validators


def fail(path: str, message: str) -> NoReturn:
    raise InvalidRequest(f"{path}: {message}")


def kind_of(value: object) -> str:
    """The JSON name of a value's type, for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def at(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def wrong(path: str, key: str | int, expected: str, value: object) -> NoReturn:
    if value is MISSING:
        fail(at(path, key), "Field required")
    fail(at(path, key), f"expected {expected}, got {kind_of(value)}")


def req_str(obj: dict[str, Any], key: str, path: str) -> str:
    value = obj.get(key, MISSING)
    if type(value) is str:
        return value
    wrong(path, key, "a string", value)


def opt_str(obj: dict[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    wrong(path, key, "a string or null", value)


def req_dict(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = obj.get(key, MISSING)
    if type(value) is dict:
        return value
    wrong(path, key, "an object", value)


INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def req_int(obj: dict[str, Any], key: str, path: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """An integer in ``[minimum, maximum]``; by default any 64-bit one, since every encoder downstream
    (orjson, the upstream) stops there. An integral float counts (JSON has one number type; ``1024.0``
    and ``1e3`` are integers), and is range-checked before it becomes an ``int``."""
    value = obj.get(key, MISSING)
    if type(value) is not int and not (type(value) is float and value.is_integer()):
        wrong(path, key, "an integer", value)
    if value < minimum:
        fail(at(path, key), f"must be at least {minimum}")
    if value > maximum:
        fail(at(path, key), f"must be at most {maximum}")
    return int(value)


def opt_int(
    obj: dict[str, Any], key: str, path: str, *, minimum: int = INT64_MIN, maximum: int = INT64_MAX
) -> int | None:
    return None if obj.get(key) is None else req_int(obj, key, path, minimum=minimum, maximum=maximum)


def nested_at_most(value: dict[str, Any], path: str) -> dict[str, Any]:
    """``value``, unless it nests deeper than ``types.MAX_NESTING`` (it will reach an encoder)."""
    if nests_deeper_than(value, MAX_NESTING):
        fail(path, f"nests objects and arrays more than {MAX_NESTING} levels deep")
    return value


def opt_bool(obj: dict[str, Any], key: str, path: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if type(value) is bool:
        return value
    wrong(path, key, "a boolean", value)


def choice_error(value: object, path: str, allowed: tuple[str, ...]) -> NoReturn:
    options = ", ".join(repr(a) for a in allowed)
    if value is MISSING:
        fail(path, f"Field required (one of {options})")
    got = repr(value) if type(value) is str else kind_of(value)
    fail(path, f"expected one of {options}, got {got}")
