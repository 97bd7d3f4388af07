"""Is this text still the beginning of some valid JSON document? Answered incrementally.

Tool arguments stream to the client as ``input_json_delta`` fragments, and the Anthropic SDK parses
the concatenation after every fragment (partial mode): a fragment that makes it invalid JSON makes
the client's stream fail. The loop therefore checks each fragment before forwarding it and holds
back the rest of a call once its arguments stop being a valid prefix.

Why not a library: jiter re-parses the whole buffer each time, and ijson's push parser rescans a
partial token on every chunk; both are quadratic in a long string argument (a 300 KB ``file_text``
arrives in thousands of fragments). This is a linear, character-at-a-time state machine.

Must not: build values or allocate per character beyond its small stack. Invariants: once invalid,
it stays invalid; nesting deeper than ``types.MAX_NESTING`` is invalid (``turn.parse_arguments``
refuses such arguments too, so the call becomes ``invalid_tool_input`` either way).
"""

from __future__ import annotations

from typing import Final

from execbridge.types import MAX_NESTING

_WHITESPACE: Final = frozenset(" \t\n\r")
_ESCAPES: Final = frozenset('"\\/bfnrtu')
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_DIGITS: Final = frozenset("0123456789")
_LITERALS: Final = {"t": "rue", "f": "alse", "n": "ull"}
# Number states -> {character class: next state}; a number may end in the states listed in _NUMBER_END.
_NUMBER: Final[dict[str, dict[str, str]]] = {
    "minus": {"0": "zero", "d": "int"},
    "zero": {".": "dot", "e": "e"},
    "int": {"0": "int", "d": "int", ".": "dot", "e": "e"},
    "dot": {"0": "frac", "d": "frac"},
    "frac": {"0": "frac", "d": "frac", "e": "e"},
    "e": {"0": "exp", "d": "exp", "+": "esign", "-": "esign"},
    "esign": {"0": "exp", "d": "exp"},
    "exp": {"0": "exp", "d": "exp"},
}
_NUMBER_END: Final = frozenset({"zero", "int", "frac", "exp"})


def _number_class(ch: str) -> str:
    if ch == "0":
        return "0"
    if ch in _DIGITS:
        return "d"
    return "e" if ch in "eE" else ch


class JsonPrefix:
    """Feed fragments; ``valid`` says whether everything fed so far can still become valid JSON."""

    __slots__ = ("_escape", "_expect", "_key", "_literal", "_number", "_stack", "_string", "valid")

    def __init__(self) -> None:
        self.valid = True
        self._stack: list[str] = []  # "{" or "["
        self._expect = "value"  # value | value_or_end | key | key_or_end | colon | comma_or_end | done
        self._string = False
        self._key = False  # the open string is an object key
        self._escape = 0  # 0: none; -1: after a backslash; n > 0: hex digits of \\uXXXX still due
        self._literal = ""  # characters of true/false/null still due
        self._number: str | None = None

    def feed(self, text: str) -> bool:
        for ch in text:
            if not self.valid:
                break
            self.valid = self._step(ch)
        return self.valid

    def _step(self, ch: str) -> bool:
        if self._string:
            return self._string_char(ch)
        if self._literal:
            if ch != self._literal[0]:
                return False
            self._literal = self._literal[1:]
            if not self._literal:
                self._value_done()
            return True
        if self._number is not None:
            following = _NUMBER[self._number].get(_number_class(ch))
            if following is not None:
                self._number = following
                return True
            if self._number not in _NUMBER_END:
                return False
            self._number = None
            self._value_done()  # the number ended; this character belongs to what follows
        if ch in _WHITESPACE:
            return True
        match self._expect:
            case "value" | "value_or_end":
                if ch == "]" and self._expect == "value_or_end":
                    return self._close("[")
                return self._start_value(ch)
            case "key" | "key_or_end":
                if ch == "}" and self._expect == "key_or_end":
                    return self._close("{")
                if ch != '"':
                    return False
                self._string, self._key = True, True
                return True
            case "colon":
                if ch != ":":
                    return False
                self._expect = "value"
                return True
            case "comma_or_end":
                if ch == ",":
                    self._expect = "key" if self._stack[-1] == "{" else "value"
                    return True
                return ch in "}]" and self._close("{" if ch == "}" else "[")
            case _:  # done: only whitespace may follow a complete document
                return False

    def _start_value(self, ch: str) -> bool:
        if ch == '"':
            self._string, self._key = True, False
        elif ch in "{[":
            if len(self._stack) >= MAX_NESTING:
                return False  # deeper than any tool input may nest (``types.MAX_NESTING``)
            self._stack.append(ch)
            self._expect = "key_or_end" if ch == "{" else "value_or_end"
        elif ch in _LITERALS:
            self._literal = _LITERALS[ch]
        elif ch == "-":
            self._number = "minus"
        elif ch in _DIGITS:
            self._number = "zero" if ch == "0" else "int"
        else:
            return False
        return True

    def _string_char(self, ch: str) -> bool:
        if self._escape == -1:
            if ch not in _ESCAPES:
                return False
            self._escape = 4 if ch == "u" else 0
        elif self._escape > 0:
            if ch not in _HEX:
                return False
            self._escape -= 1
        elif ch == "\\":
            self._escape = -1
        elif ch == '"':
            self._string = False
            if self._key:
                self._expect = "colon"
            else:
                self._value_done()
        elif ch < " ":
            return False  # control characters must be escaped inside strings
        return True

    def _close(self, opener: str) -> bool:
        if not self._stack or self._stack[-1] != opener:
            return False
        self._stack.pop()
        self._value_done()
        return True

    def _value_done(self) -> None:
        self._expect = "comma_or_end" if self._stack else "done"
