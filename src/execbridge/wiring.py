"""The composition root: the one place that builds concrete objects from settings.

Must not: import a surface (``api``, ``cli``); surfaces import it.

Everything else receives its collaborators through constructors. Resources are opened and closed
lexically (``async with open_services(settings)``), so a stopped server leaves no task, connection
or sandbox process behind.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from execbridge.config import Settings
from execbridge.engine.loop import Engine
from execbridge.engine.openai_containers import OpenAIContainers
from execbridge.errors import ConfigurationError, SandboxUnavailable
from execbridge.files import FileService
from execbridge.keys import KeyGate, key_gate
from execbridge.observability.metrics import PrometheusSink
from execbridge.observability.usage import UsageSink
from execbridge.sandbox.base import ContainerService
from execbridge.sandbox.host_client import SandboxHostClient, host_answers
from execbridge.sandbox.manager import ContainerManager
from execbridge.sandbox.runtime_check import runtime_problems
from execbridge.store.base import ResponseStore, Store, ThreadStore
from execbridge.store.sqlite import SqliteStore
from execbridge.telemetry import OFF, Sink, Telemetry
from execbridge.upstream.anthropic_messages import AnthropicMessagesUpstream
from execbridge.upstream.base import Credentials, GatewayUpstream, ModelCatalog
from execbridge.upstream.key_check import UpstreamKeyCheck
from execbridge.upstream.model_names import ModelNames
from execbridge.upstream.openai_chat import OpenAIChatUpstream
from execbridge.upstream.routes import RoutedUpstream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Probe:
    """One readiness check (``GET /readyz``): ``check`` returns a short detail, or raises to say why not."""

    name: str
    check: Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Services:
    """The concrete objects a running gateway serves requests with; surfaces receive one."""

    settings: Settings
    engine: Engine
    containers: ContainerService
    files: FileService
    models: ModelCatalog | None = None  # GET /v1/models; None: not offered
    key_gate: KeyGate | None = None  # gateway keys required (the gateway holds the upstream credential)
    # Pass-through mode: a client's key must be one the upstream accepts before it may create state.
    key_check: UpstreamKeyCheck | None = None
    probes: tuple[Probe, ...] = ()  # what ``GET /readyz`` checks
    threads: ThreadStore | None = None  # message threads (api/threads.py); None: not held
    responses: ResponseStore | None = None  # stored Responses-API responses; None: nothing is stored
    # OpenAI's Containers API and the containers of /v1/responses; None: not offered
    openai_containers: OpenAIContainers | None = None
    telemetry: Telemetry = OFF  # metrics, traces and usage per key are reported here
    metrics: PrometheusSink | None = None  # GET /metrics; None: not served


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """Where the upstream is and, for Databricks, the gateway's refreshable credential for it.

    ``anthropic_url`` is the base of an Anthropic Messages route (before ``/v1/messages``) and
    ``native_for`` which models take it: ``"all"``, ``"claude"`` (Databricks: Claude models, with a
    fall-back to Chat Completions at ``base_url``) or ``"none"`` (Chat Completions only).
    """

    base_url: str
    credentials: Credentials | None = None
    anthropic_url: str | None = None
    native_for: Literal["all", "claude", "none"] = "none"


def _on_databricks(url: str) -> bool:
    """A Databricks serving or AI Gateway path (``/serving-endpoints/anthropic``, ``/ai-gateway/anthropic``)."""
    path = urlsplit(url).path
    return "/serving-endpoints" in path or "/ai-gateway/" in path


def _ends_in_anthropic(url: str) -> bool:
    return urlsplit(url).path.rstrip("/").removesuffix("/v1/messages").removesuffix("/v1").endswith("/anthropic")


def _native_target(settings: Settings, base_url: str, credentials: Credentials | None) -> UpstreamTarget:
    """Which route(s) ``settings.upstream_format`` asks for, from the upstream's base URL."""
    native = settings.upstream_format == "anthropic" or (
        settings.upstream_format == "auto" and _ends_in_anthropic(base_url)
    )
    if native:
        return UpstreamTarget(base_url, credentials, base_url, "all")
    return UpstreamTarget(base_url, credentials)


async def resolve_upstream(settings: Settings) -> UpstreamTarget:
    """The upstream ``settings`` name. For Databricks this resolves unified auth and fetches a first
    token, within ``upstream_auth_timeout_s`` (a ``ConfigurationError`` naming the host otherwise)."""
    if settings.provider == "databricks":
        # Imported here: the SDK takes about a second to import, and only this provider needs it.
        from execbridge.upstream.databricks import DatabricksCredentials

        credentials = await DatabricksCredentials.connect(timeout_s=settings.upstream_auth_timeout_s)
        if settings.upstream_url:
            # --upstream may still point somewhere else on the workspace (e.g. an AI gateway path).
            return _native_target(settings, settings.upstream_url, credentials)
        if settings.upstream_format == "chat":
            return UpstreamTarget(credentials.base_url, credentials)
        # Claude is served through Anthropic's own API too: thinking signatures, prompt caching and
        # exact usage survive there, so Claude models take that route (docs/protocol.md, "Anthropic-native").
        anthropic_url = f"{credentials.base_url}/anthropic"
        native_for: Literal["all", "claude"] = "all" if settings.upstream_format == "anthropic" else "claude"
        return UpstreamTarget(credentials.base_url, credentials, anthropic_url, native_for)
    if not settings.upstream_url:
        raise ConfigurationError(
            "no upstream: pass --upstream URL (an OpenAI-compatible or Anthropic base URL) or --provider databricks"
        )
    return _native_target(settings, settings.upstream_url, None)


def _anthropic_upstream(
    settings: Settings, target: UpstreamTarget, url: str, telemetry: Telemetry = OFF
) -> AnthropicMessagesUpstream:
    key = settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
    return AnthropicMessagesUpstream(
        url,
        key,
        credentials=target.credentials,
        # Databricks takes its tokens, and its PATs given as keys (passed through too), as Bearer.
        auth_header="authorization" if settings.provider == "databricks" or _on_databricks(url) else "x-api-key",
        connect_timeout_s=settings.upstream_connect_timeout_s,
        read_timeout_s=settings.upstream_read_timeout_s,
        total_timeout_s=settings.upstream_total_timeout_s,
        max_retries=settings.upstream_max_retries,
        model_names=ModelNames(settings.model_map, provider=settings.provider),
        telemetry=telemetry,
    )


@asynccontextmanager
async def open_upstream(
    settings: Settings, target: UpstreamTarget | None = None, telemetry: Telemetry = OFF
) -> AsyncIterator[GatewayUpstream]:
    """The upstream ``target`` names: Chat Completions, Anthropic-native, or both routed per model."""
    target = target or await resolve_upstream(settings)
    upstream: GatewayUpstream
    if target.native_for == "all" and target.anthropic_url is not None:
        upstream = _anthropic_upstream(settings, target, target.anthropic_url, telemetry)
    else:
        chat = OpenAIChatUpstream.from_settings(
            settings, base_url=target.base_url, credentials=target.credentials, telemetry=telemetry
        )
        if target.native_for == "claude" and target.anthropic_url is not None:
            upstream = RoutedUpstream(_anthropic_upstream(settings, target, target.anthropic_url, telemetry), chat)
        else:
            upstream = chat
    try:
        yield upstream
    finally:
        await upstream.aclose()


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[SqliteStore]:
    """The SQLite store in the data directory."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await SqliteStore.open(settings.database_path, busy_timeout_s=settings.store_busy_timeout_s)
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def open_containers(settings: Settings, telemetry: Telemetry = OFF) -> AsyncIterator[ContainerService]:
    """The containers ``settings`` name: a running sandbox host's (``sandbox_host``), else in-process."""
    if settings.sandbox_host is not None:
        sb = settings.sandbox
        client = SandboxHostClient(
            settings.sandbox_socket_path,
            output_limits=(sb.output_file_limit_bytes, sb.output_file_count, sb.output_total_limit_bytes),
        )
        try:
            yield client
        finally:
            await client.aclose()
        return
    async with open_local_containers(settings, telemetry) as manager:
        yield manager


@asynccontextmanager
async def open_local_containers(settings: Settings, telemetry: Telemetry = OFF) -> AsyncIterator[ContainerManager]:
    """The container manager of this data directory, over its own store in the sandbox directory."""
    async with AsyncExitStack() as stack:
        await asyncio.to_thread(_prepare_sandbox_dir, settings.sandbox_dir)
        fresh = not settings.sandbox_database_path.exists()
        store = await SqliteStore.open(settings.sandbox_database_path, busy_timeout_s=settings.store_busy_timeout_s)
        stack.push_async_callback(store.close)
        if fresh:
            await _adopt_legacy_records(settings, store)
        manager = ContainerManager(settings, store, telemetry=telemetry)
        await manager.start()
        stack.push_async_callback(manager.close)
        yield manager


def _prepare_sandbox_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # images, records and the lock: the sandbox's alone


async def _adopt_legacy_records(settings: Settings, store: SqliteStore) -> None:
    """Container records from before the privilege split lived in the gateway's database; move them once."""
    if not settings.database_path.exists():
        return
    legacy = await SqliteStore.open(settings.database_path)
    try:
        records = await legacy.containers.list()
        for record in records:
            await store.containers.insert(record)
        for record in records:
            await legacy.containers.delete(record.id)
    finally:
        await legacy.close()
    if records:
        log.info("moved %d container records into %s", len(records), settings.sandbox_database_path)


def telemetry_sinks(settings: Settings, store: Store) -> tuple[PrometheusSink | None, list[Sink]]:
    """The sinks ``settings`` ask for: the metrics sink (also returned alone, for ``GET /metrics``), usage
    per key, OpenTelemetry and MLflow spans (their libraries imported only when asked for)."""
    sinks: list[Sink] = []
    metrics = PrometheusSink(files_total=store.usage.files_total) if settings.metrics else None
    if metrics is not None:
        sinks.append(metrics)
    if settings.usage:
        sinks.append(UsageSink(store.usage, flush_every_s=settings.usage_flush_s))
    otlp_asked = settings.tracing == "otlp" or (
        settings.tracing == "auto" and any(os.environ.get(v) for v in _OTLP_ENDPOINT_VARIABLES)
    )
    if otlp_asked:
        tracing = _optional("execbridge.observability.tracing", "tracing", "OpenTelemetry tracing")
        sinks.append(tracing.OpenTelemetrySink(tracing.otlp_provider(), shutdown=True))
    if settings.mlflow_tracing:
        mlflow_tracing = _optional("execbridge.observability.mlflow_tracing", "mlflow", "MLflow tracing")
        sinks.append(mlflow_tracing.MlflowSink())
    return metrics, sinks


_OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def _optional(module: str, extra: str, what: str) -> Any:
    """A sink module whose library is an optional extra; a missing one is a configuration error, said so."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{what} is on but {exc.name} is not installed: pip install 'execbridge[{extra}]'"
        ) from None


@asynccontextmanager
async def open_services(
    settings: Settings, target: UpstreamTarget | None = None, *, sinks: Sequence[Sink] = ()
) -> AsyncIterator[Services]:
    """Everything ``serve`` runs on; ``target`` when the caller resolved the upstream already; ``sinks``
    receive telemetry besides those the settings ask for (a test's in-memory span exporter, say)."""
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(settings))
        gate = await key_gate(settings, store.keys)
        target = target or await resolve_upstream(settings)
        metrics, configured = telemetry_sinks(settings, store)
        telemetry = Telemetry([*configured, *sinks])
        stack.push_async_callback(telemetry.aclose)  # before the store closes: usage totals are written
        containers = await stack.enter_async_context(open_containers(settings, telemetry))
        if metrics is not None and isinstance(containers, ContainerManager):
            metrics.watch_containers(containers.counts)
        files = FileService(
            store.files,
            settings.files_dir,
            max_bytes=settings.max_file_bytes,
            max_owner_bytes=settings.max_file_bytes_per_owner,
            placement_ttl=timedelta(seconds=2 * settings.sandbox.retention_s),
        )
        files.prepare()
        await files.sweep_all()  # then on every upload and listing (``FileService.sweep``)
        upstream = await stack.enter_async_context(open_upstream(settings, target, telemetry))
        engine = Engine(
            upstream, containers, settings, files=files, pending_calls=store.pending_calls, telemetry=telemetry
        )
        key_check = None if settings.gateway_holds_credentials else UpstreamKeyCheck(upstream)
        yield Services(
            settings=settings,
            engine=engine,
            containers=containers,
            files=files,
            models=upstream,
            key_gate=gate,
            key_check=key_check,
            probes=readiness_probes(settings, store, target),
            threads=store.threads,
            responses=store.responses,
            openai_containers=OpenAIContainers(store.openai_containers, containers, files),
            telemetry=telemetry,
            metrics=metrics,
        )


def readiness_probes(settings: Settings, store: SqliteStore, target: UpstreamTarget) -> tuple[Probe, ...]:
    """What must answer for the gateway to serve a request: its store, its sandbox, its upstream credential."""

    async def store_answers() -> str:
        await store.keys.count()
        return "answers"

    async def sandbox_answers() -> str:
        # The host is on this machine (a Unix socket), so its runtime is this machine's: a few stats.
        if missing := runtime_problems(settings.sandbox):
            raise SandboxUnavailable("; ".join(missing))
        if settings.sandbox_host is None:
            return "in process"
        if not await host_answers(settings.sandbox_socket_path):
            raise ConfigurationError(f"the sandbox host at {settings.sandbox_socket_path} does not answer")
        return "the sandbox host answers"

    async def credentials_loaded() -> str:
        if target.credentials is not None:
            await target.credentials.authorization()
            return "the gateway's credential is loaded"
        if settings.upstream_api_key is not None:
            return "the gateway's key is set"
        return "clients bring their own keys"

    return (
        Probe("store", store_answers),
        Probe("sandbox", sandbox_answers),
        Probe("upstream_credentials", credentials_loaded),
    )
