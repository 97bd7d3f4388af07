"""Persistent metadata behind small protocols (``base``); SQLite by default (``sqlite``)."""

from execbridge.store.base import (
    ApiKeyRecord,
    ContainerRecord,
    ContainerStore,
    FileRecord,
    FileStore,
    KeyStore,
    Store,
)

__all__ = ["ApiKeyRecord", "ContainerRecord", "ContainerStore", "FileRecord", "FileStore", "KeyStore", "Store"]
