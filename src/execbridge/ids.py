"""Identifiers that look like Anthropic's (``msg_…``, ``srvtoolu_…``, ``container_…``, ``file_…``) and,
for the OpenAI surfaces, like OpenAI's (``file-…``, ``cntr_…``, ``cfile_…``).

Ids are unguessable: 24 base62 characters from ``secrets`` (≈ 143 bits). Knowing one container id
never helps to guess another; ownership is still checked on every use.
"""

from __future__ import annotations

import hashlib
import secrets

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# Random bytes below 248 (4 * 62) map uniformly onto the alphabet; the others are dropped.
_TO_ALPHABET = bytes(ord(_ALPHABET[b % 62]) for b in range(248)) + bytes(8)
_DROPPED = bytes(range(248, 256))


def random_token(length: int = 24) -> str:
    # Rejection sampling in C, over one read of the OS's random source (``secrets.choice`` per character
    # read it once each, ~25 µs an id): twice the bytes needed leave, almost always, enough after the 3 %
    # dropped.
    token = b""
    while len(token) < length:
        token += secrets.token_bytes(2 * length).translate(_TO_ALPHABET, _DROPPED)
    return token[:length].decode()


def new_id(prefix: str) -> str:
    """A fresh id such as ``container_011C…``; the ``011C`` mimics Anthropic's version tag."""
    return f"{prefix}_011C{random_token()}"


def message_id() -> str:
    return new_id("msg")


def server_tool_use_id() -> str:
    return new_id("srvtoolu")


def tool_use_id() -> str:
    return new_id("toolu")


def container_id() -> str:
    return new_id("container")


def file_id() -> str:
    return new_id("file")


def openai_file_id() -> str:
    """An OpenAI Files API id: ``file-`` and 22 base62 characters (``file-Kef7WASTZXWQai3TTSjUWZ``)."""
    return "file-" + random_token(22)


def openai_container_id() -> str:
    """An OpenAI container id: ``cntr_`` and 48 hex digits (192 bits), the shape OpenAI's have."""
    return "cntr_" + secrets.token_hex(24)


def container_file_id() -> str:
    """A file in an OpenAI container: ``cfile_`` and 32 hex digits."""
    return "cfile_" + secrets.token_hex(16)


def request_id() -> str:
    return new_id("req")


def key_id(secret: str) -> str:
    """The id of the key ``secret`` (``keys.py``; a gateway key or a passed-through upstream key): also
    the owner of what the key makes. Here, at the bottom layer, so a sandbox host derives owners by the
    same formula as the gateway without importing it."""
    return "key_" + hashlib.sha256(secret.encode()).hexdigest()[:40]
