"""The Python API is exactly what ``execbridge.__all__`` lists: adding or removing a name is a decision."""

from __future__ import annotations

import subprocess
import sys

import execbridge

PUBLIC = [
    "AuthenticationFailed",
    "BlockFinished",
    "BlockStarted",
    "Caller",
    "CitationsDelta",
    "ConfigurationError",
    "Engine",
    "EngineEvent",
    "ExecbridgeError",
    "GenerationRequest",
    "Heartbeat",
    "InputJsonDelta",
    "InvalidRequest",
    "LocalGateway",
    "MessageFinished",
    "MessageStarted",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RequestTooLarge",
    "SandboxError",
    "SandboxSettings",
    "SandboxUnavailable",
    "ServerToolResultReady",
    "Services",
    "Settings",
    "StorageError",
    "TextDelta",
    "ThinkingDelta",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "__version__",
    "create_app",
    "load_settings",
    "open",
    "open_services",
    "parse_messages_request",
]


def test_all_is_pinned_and_sorted() -> None:
    assert execbridge.__all__ == PUBLIC
    assert sorted(PUBLIC) == PUBLIC


def test_every_name_is_what_its_owner_defines() -> None:
    for name in PUBLIC:
        value = getattr(execbridge, name)
        if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
            # Re-exported from the owning module, never redefined here.
            assert value.__module__.startswith("execbridge.") and value.__module__ != "execbridge", name


def test_errors_share_one_root() -> None:
    errors = [getattr(execbridge, n) for n in PUBLIC if n[0].isupper() and isinstance(getattr(execbridge, n), type)]
    roots = [e for e in errors if issubclass(e, Exception)]
    assert roots and all(issubclass(e, execbridge.ExecbridgeError) for e in roots)


def test_importing_the_package_starts_nothing() -> None:
    """``import execbridge`` opens no socket, thread or file: building services is the caller's call."""
    code = "import threading, execbridge; assert threading.active_count() == 1, threading.enumerate()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_lazy_table_names_exactly_the_public_names() -> None:
    assert sorted(execbridge._OWNERS) == [n for n in PUBLIC if n != "__version__"]


def test_importing_a_kernel_module_loads_no_web_stack() -> None:
    code = (
        "import sys, execbridge.types; assert 'starlette' not in sys.modules and 'execbridge.engine' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
