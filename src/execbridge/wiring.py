"""The composition root: the one place that builds concrete objects from settings.

Everything else receives its collaborators through constructors. Resources are opened and closed
lexically (``async with open_services(settings)``), so a stopped server leaves no task, connection
or sandbox process behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from execbridge.api.services import Services
from execbridge.config import Settings
from execbridge.engine.loop import Engine
from execbridge.errors import ConfigurationError
from execbridge.sandbox.manager import ContainerManager
from execbridge.store.sqlite import SqliteStore
from execbridge.upstream.openai_chat import OpenAIChatUpstream


@asynccontextmanager
async def open_containers(settings: Settings) -> AsyncIterator[ContainerManager]:
    """The SQLite store and the container manager over it (used by ``serve`` and the CLI)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        store = await SqliteStore.open(settings.database_path)
        stack.push_async_callback(store.close)
        manager = ContainerManager(settings, store)
        await manager.start()
        stack.push_async_callback(manager.close)
        yield manager


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    if not settings.upstream_url:
        raise ConfigurationError("no upstream: pass --upstream URL (an OpenAI-compatible base URL)")
    async with AsyncExitStack() as stack:
        containers = await stack.enter_async_context(open_containers(settings))
        upstream = OpenAIChatUpstream.from_settings(settings)
        stack.push_async_callback(upstream.aclose)
        engine = Engine(upstream, containers, settings)
        yield Services(settings=settings, engine=engine, containers=containers)
