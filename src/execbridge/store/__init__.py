"""Persistent metadata behind small protocols (``base``); SQLite by default (``sqlite``)."""

from execbridge.store.base import ContainerRecord, ContainerStore, Store

__all__ = ["ContainerRecord", "ContainerStore", "Store"]
