"""Settings: one frozen, typed object, loaded once at start-up and passed down.

Precedence, highest first: command-line flags, ``EXECBRIDGE_*`` environment variables (nested with
``__``, e.g. ``EXECBRIDGE_SANDBOX__MEMORY_MB``), an optional TOML file (``--config`` or
``EXECBRIDGE_CONFIG``), then the defaults below. Nothing reads settings at import time.
"""

from __future__ import annotations

import hashlib
import os
import types
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    personal = Path(base) / "execbridge"
    if os.geteuid() == 0 and not os.environ.get("XDG_DATA_HOME") and not personal.exists():
        # Root runs the privilege split: the gateway user must reach the data directory, and /root is 0700.
        return Path("/var/lib/execbridge")
    return personal


class SandboxSettings(BaseModel):
    """Limits and knobs for containers. Defaults follow Anthropic's published container resources."""

    model_config = ConfigDict(frozen=True)

    memory_mb: int = Field(5120, ge=32, description="RAM per container (cgroup memory limit; tmpfs counts).")
    cpus: float = Field(1.0, gt=0, description="CPU share per container (cgroup CPU quota).")
    pids: int = Field(512, ge=8, description="Processes and threads per container (cgroup pids.max).")
    disk_mb: int = Field(5120, ge=16, description="Hard cap on the workspace disk (ext4 loop image).")
    command_timeout_s: float = Field(180.0, gt=0, description="Wall-clock limit per command.")
    output_limit_bytes: int = Field(1 << 20, ge=1024, description="stdout/stderr bytes kept per command.")
    output_file_limit_bytes: int = Field(100 << 20, ge=1024, description="Largest file captured from $OUTPUT_DIR.")
    output_file_count: int = Field(32, ge=1, description="Most files captured from one $OUTPUT_DIR.")
    output_total_limit_bytes: int = Field(
        64 << 20,
        ge=1024,
        description="Most bytes captured from one $OUTPUT_DIR, all files together (apparent sizes, sparse or "
        "not; a hard link is taken once). A single file over this is too large, like one over "
        "output_file_limit_bytes; files that no longer fit are left out with a note.",
    )
    repl_cell_timeout_s: float = Field(
        90.0,
        gt=0,
        description="Wall-clock limit per cell of the persistent Python REPL (code_execution_20260120 and "
        "20260521): the cell is interrupted and its result says detection_timeout; the REPL keeps its state.",
    )
    ptc_call_timeout_s: float = Field(
        270.0,
        gt=0,
        description="How long a REPL cell waits for the client's tool_result of a client tool its code awaits "
        "(programmatic tool calling): then the await raises TimeoutError in the cell and the container may be "
        "evicted again.",
    )
    idle_evict_s: float = Field(300.0, gt=0, description="Stop a container's processes after this idle time.")
    retention_s: float = Field(30 * 86400.0, gt=0, description="Delete a container this long after last use.")
    spare_containers: int = Field(2, ge=0, description="Ready-made containers kept warm for new requests.")
    max_containers: int = Field(
        100_000,
        ge=1,
        description="Containers that may exist at once, live or stopped (each holds a host uid, uid_base + slot, "
        "and a workspace image); at the limit a new one is refused with 429 until one is deleted or expires.",
    )
    max_live_containers: int = Field(
        2000,
        ge=1,
        description="Containers with running processes at once. At the limit the least recently used idle ones "
        "are stopped first (their files stay; the next use restarts them); only when every live container is in "
        "use is a new one refused with 429.",
    )
    evict_early_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="When live containers reach this fraction of a budget (max_live_containers, total_memory_mb, "
        "the sandbox host's file descriptors), the least recently used idle ones are stopped early, in the "
        "background (their files stay), so that load never drives the host out of memory or descriptors.",
    )
    min_free_disk_mb: int = Field(
        256,
        ge=0,
        description="Free space the data directory's disk must keep: below it no new container is made (429). "
        "Workspace images are sparse, so disk_mb caps a container without reserving it; this floor keeps the "
        "store and the logs writable when their real growth fills the disk (raise it on a production host).",
    )
    max_live_per_owner: int = Field(
        500, ge=1, description="The same budget per owner (a key): one client cannot take every live container."
    )
    total_memory_mb: int | None = Field(
        None, ge=64, description="RAM for all containers together (default: 80% of the host's RAM)."
    )
    total_pids: int | None = Field(
        None, ge=64, description="Processes for all containers together (default: half the kernel's threads-max)."
    )
    python: Path = Field(
        Path("/opt/execbridge/runtime/bin/python3"),
        description="Interpreter that runs the executor inside the sandbox (a path valid inside: under "
        "/usr or runtime_dir).",
    )
    runtime_dir: Path | None = Field(
        Path("/opt/execbridge/runtime"),
        description="The sandbox runtime venv (scripts/install.sh builds it); bound read-only at the same path.",
    )
    tmp_mb: int = Field(
        512, ge=1, description="Size cap of the private /tmp and of /dev/shm (tmpfs; also counts against memory_mb)."
    )
    uid_base: int = Field(
        200000,
        ge=1000,
        description="Host uids for containers are uid_base + slot (slot 0 is the doctor's probe). Give each "
        "gateway instance on a machine its own range.",
    )
    run_dir: Path | None = Field(
        None,
        description="Runtime directory for live workspace mounts (default /run/execbridge/<instance>); every "
        "parent must be searchable by other users. Images and the database stay in data_dir.",
    )
    start_timeout_s: float = Field(20.0, gt=0, description="How long a new sandbox may take to report ready.")
    kill_grace_s: float = Field(
        5.0,
        gt=0,
        description="Past a command's time limit, how long to wait for the executor's own answer before the "
        "gateway kills the whole sandbox.",
    )
    allow_weak_isolation: bool = Field(False, description="Run even when a protection is missing (unsafe).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EXECBRIDGE_", env_nested_delimiter="__", frozen=True, extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8787
    upstream_url: str | None = None
    upstream_api_key: SecretStr | None = None
    provider: Literal["openai", "databricks"] = Field(
        "openai",
        description="openai: any OpenAI-compatible server at upstream_url. databricks: workspace and "
        "credentials from Databricks unified authentication (DATABRICKS_HOST/TOKEN, a ~/.databrickscfg "
        "profile, OAuth M2M); the base URL becomes https://<host>/serving-endpoints.",
    )
    upstream_format: Literal["auto", "anthropic", "chat"] = Field(
        "auto",
        description="How the gateway talks to the upstream. anthropic: Anthropic's Messages API, upstream_url being "
        "the base before /v1/messages (Databricks /serving-endpoints/anthropic or /ai-gateway/anthropic, "
        "LiteLLM, vLLM). chat: OpenAI Chat Completions. auto: anthropic when upstream_url's path ends in "
        "/anthropic; with provider databricks, Claude models go through /serving-endpoints/anthropic (falling "
        "back to Chat Completions per model where the workspace does not serve them there) and others through "
        "Chat Completions.",
    )
    upstream_dialect: Literal[
        "auto", "generic", "openai", "azure", "vllm", "ollama", "litellm", "llama-cpp", "databricks"
    ] = Field("auto", description="Force a preset of upstream quirks; auto guesses from the URL and the model name.")
    model_map: dict[str, str] = Field(
        default_factory=dict,
        description="Client model name → upstream model name (TOML table [model_map], or JSON in "
        "EXECBRIDGE_MODEL_MAP). Unmapped names: on Databricks claude-X → databricks-claude-X, else unchanged.",
    )
    upstream_auth_timeout_s: float = Field(
        10.0, gt=0, description="Bound on resolving Databricks auth and on each token refresh (start-up and requests)."
    )
    max_iterations: int = Field(10, ge=1, description="Server-tool rounds per request before pause_turn.")
    upstream_connect_timeout_s: float = 10.0
    upstream_read_timeout_s: float = 300.0
    upstream_total_timeout_s: float = 900.0
    upstream_max_retries: int = Field(3, ge=0)
    max_request_bytes: int = 32 << 20
    threads: bool = Field(
        True,
        description="Hold message threads (beta message-threads-2026-08-12); off: threaded requests get "
        "thread_unsupported_request and the SDK sends whole conversations.",
    )
    playground: bool = Field(
        True,
        description="Serve the playground page at GET /playground (a browser chat with code execution; the page "
        "itself needs no key, the API calls it makes do).",
    )
    thread_retention_s: int = Field(
        7 * 86400, ge=60, description="How long a thread is held after its newest message (default 7 days)."
    )
    store_busy_timeout_s: float = Field(
        5.0,
        ge=0,
        description="How long a database statement waits while another process (a backup, a hand-run sqlite3) "
        "holds the store's lock; past it the request gets a retryable 503 overloaded_error (store_busy) and "
        "nothing is written.",
    )
    shutdown_grace_s: float = Field(
        20.0,
        ge=0,
        description="On SIGTERM, how long requests in flight may go on before they are ended with a 503 / "
        "an SSE error (new ones get a 503 at once).",
    )
    max_file_bytes: int = Field(
        500 << 20,
        ge=1,
        description="Largest file accepted by POST /v1/files (Anthropic's limit is 500 MB); a bigger upload "
        "is refused with 413 request_too_large while it streams, so it is never held in memory.",
    )
    max_file_bytes_per_owner: int = Field(
        10 << 30,
        ge=1,
        description="Most bytes one owner (API key) may keep in the Files API, uploads and code-execution "
        "outputs together (the sum of size_bytes). An upload past it is refused with 400 "
        "invalid_request_error until files are deleted or expire; output files past it are not returned "
        "(a note on the command's stderr names them).",
    )
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    sandbox_host: str | None = Field(
        None,
        description="unix:PATH of a running sandbox host to keep containers in (serve --sandbox-host). Unset: "
        "serve started as root starts its own (see privilege_split); otherwise containers run in-process.",
    )
    privilege_split: bool = Field(
        True,
        description="serve started as root runs the HTTP gateway as gateway_user and keeps containers in a "
        "separate root sandbox host it starts and restarts (docs/sandbox.md, 'Privilege split').",
    )
    gateway_user: str = Field(
        "execbridge", description="The unprivileged user the gateway runs as (scripts/install.sh creates it)."
    )
    metrics: bool = Field(
        True, description="Serve Prometheus metrics at GET /metrics (no key needed; no label names a key or owner)."
    )
    tracing: Literal["auto", "otlp", "off"] = Field(
        "auto",
        description="OpenTelemetry spans per request, model turn and tool execution (the [tracing] extra). auto: "
        "exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set; otlp: always; "
        "off: never. The service is named by OTEL_SERVICE_NAME (default execbridge).",
    )
    mlflow_tracing: bool = Field(
        False,
        description="Send each request as an MLflow trace (the [mlflow] extra), to MLFLOW_TRACKING_URI and "
        "MLFLOW_EXPERIMENT_NAME as MLflow reads them (`databricks` for a workspace's trace UI).",
    )
    usage: bool = Field(
        True, description="Count requests, tokens and code-execution seconds per key (`execbridge keys usage`)."
    )
    usage_flush_s: float = Field(
        1.0, ge=0, description="How often usage totals are written to the store at most (0: after every request)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @property
    def gateway_holds_credentials(self) -> bool:
        """Whether the gateway itself authenticates to the upstream (then clients need gateway keys)."""
        return self.upstream_api_key is not None or self.provider == "databricks"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "execbridge.sqlite3"

    @property
    def instance(self) -> str:
        """Tells this data directory's cgroups, mounts and sandbox host apart from another instance's."""
        return hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]

    @property
    def sandbox_dir(self) -> Path:
        """The sandbox's part of the data directory (images, container records, the lock): root's alone."""
        return self.data_dir / "sandbox"

    @property
    def sandbox_database_path(self) -> Path:
        """Container records: beside the images, out of the gateway's reach, so no gateway can rewrite an owner."""
        return self.sandbox_dir / "containers.sqlite3"

    @property
    def sandbox_run_dir(self) -> Path:
        return self.sandbox.run_dir or Path("/run/execbridge") / self.instance

    @property
    def sandbox_socket_path(self) -> Path:
        """Where this data directory's sandbox host listens unless ``sandbox_host`` names another."""
        if self.sandbox_host is not None:
            return Path(self.sandbox_host.removeprefix("unix:"))
        return self.sandbox_run_dir / "sandbox.sock"

    @property
    def files_dir(self) -> Path:
        """Where Files-API bytes live (metadata is in the database)."""
        return self.data_dir / "files"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` are command-line flags (``None`` means "not given").

    Nested sandbox flags are passed as ``sandbox={...}`` and merged over env/TOML values field by field.
    """
    flags = {k: v for k, v in overrides.items() if v is not None}
    toml_file = config_file or os.environ.get("EXECBRIDGE_CONFIG")
    settings_cls: type[Settings] = Settings
    if toml_file:
        # A subclass that knows its file keeps the choice local to this call: no process-wide state.
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": Path(toml_file)})
        settings_cls = types.new_class("Settings", (Settings,), {}, lambda ns: ns.update(model_config=config))
    sandbox_flags = flags.pop("sandbox", None)
    settings = settings_cls(**flags)
    if sandbox_flags:
        merged = settings.sandbox.model_copy(update={k: v for k, v in sandbox_flags.items() if v is not None})
        settings = settings.model_copy(update={"sandbox": SandboxSettings.model_validate(merged.model_dump())})
    return settings
