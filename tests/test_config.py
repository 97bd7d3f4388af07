"""Settings precedence: flags > EXECBRIDGE_* environment > TOML file > defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from execbridge.config import load_settings


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "execbridge.toml"
    path.write_text('port = 9001\nhost = "0.0.0.0"\nmax_iterations = 4\n[sandbox]\nmemory_mb = 300\ncpus = 0.5\n')
    return path


def test_defaults(monkeypatch):
    for name in ("EXECBRIDGE_CONFIG", "EXECBRIDGE_PORT", "EXECBRIDGE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.port == 8787 and settings.host == "127.0.0.1" and settings.max_iterations == 10
    assert settings.data_dir.parts[-3:] == (".local", "share", "execbridge") or settings.data_dir.name == "execbridge"
    assert settings.sandbox.memory_mb == 5120


def test_toml_then_env_then_flags(monkeypatch, toml_file: Path, tmp_path: Path):
    monkeypatch.delenv("EXECBRIDGE_CONFIG", raising=False)
    settings = load_settings(toml_file)
    assert (settings.port, settings.host, settings.max_iterations) == (9001, "0.0.0.0", 4)
    assert (settings.sandbox.memory_mb, settings.sandbox.cpus) == (300, 0.5)
    assert "EXECBRIDGE_CONFIG" not in os.environ  # the file choice stays local to the call

    monkeypatch.setenv("EXECBRIDGE_PORT", "9002")
    monkeypatch.setenv("EXECBRIDGE_SANDBOX__MEMORY_MB", "400")
    monkeypatch.setenv("EXECBRIDGE_DATA_DIR", str(tmp_path / "state"))
    settings = load_settings(toml_file)
    assert settings.port == 9002 and settings.sandbox.memory_mb == 400 and settings.sandbox.cpus == 0.5
    assert settings.data_dir == tmp_path / "state"
    assert settings.database_path == tmp_path / "state" / "execbridge.sqlite3"

    settings = load_settings(toml_file, port=9003, sandbox={"memory_mb": 500, "cpus": None})
    assert settings.port == 9003 and settings.sandbox.memory_mb == 500 and settings.sandbox.cpus == 0.5
    assert settings.host == "0.0.0.0"


def test_settings_are_frozen():
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.port = 1  # type: ignore[misc]
