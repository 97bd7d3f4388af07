"""Usage per key: the store's totals (SQLite and memory), and ``execbridge keys usage`` after a scripted
conversation through library mode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from execbridge.cli import main
from execbridge.ids import key_id
from execbridge.store.base import FileRecord, Store
from execbridge.store.memory import MemoryStore
from execbridge.store.sqlite import SqliteStore
from execbridge.testing import FakeUpstream
from library.conftest import KEY

from .conftest import SALES, converse


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store = await SqliteStore.open(tmp_path / "db.sqlite3") if request.param == "sqlite" else MemoryStore()
    yield opened
    await opened.close()


async def test_totals_add_up_per_owner_with_the_files_they_keep(store: Store) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    await store.usage.add("alice", requests=1, input_tokens=10, output_tokens=2, code_execution_s=0.5, at=start)
    later = start + timedelta(hours=1)
    await store.usage.add("alice", requests=2, input_tokens=5, output_tokens=1, code_execution_s=0.25, at=later)
    await store.usage.add("bob", requests=1, input_tokens=100, output_tokens=0, code_execution_s=0.0, at=start)
    for i, owner in enumerate(["alice", "alice", "carol"]):
        record = FileRecord(f"file_{i}", owner, "f.csv", "text/csv", 10 * (i + 1), start, downloadable=False)
        await store.files.insert(record)

    listed = [
        (r.owner, r.requests, r.input_tokens, r.output_tokens, r.code_execution_s, r.files, r.file_bytes)
        for r in await store.usage.list()
    ]
    assert listed == [
        ("bob", 1, 100, 0, 0.0, 0, 0),
        ("alice", 3, 15, 3, 0.75, 2, 30),
        ("carol", 0, 0, 0, 0.0, 1, 30),  # files only: never ran a model here
    ]
    usage = {r.owner: r for r in await store.usage.list()}
    assert usage["alice"].last_used_at == later and usage["carol"].last_used_at is None
    assert await store.usage.files_total() == (3, 60)


def test_keys_usage_after_a_conversation(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    converse(fake_upstream, tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["--data-dir", str(tmp_path), "keys", "usage", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["key"] == key_id(KEY) and row["gateway_key"] is False and row["name"] is None
    assert (row["requests"], row["input_tokens"], row["output_tokens"]) == (1, 250, 25)
    assert row["code_execution_seconds"] > 0
    assert (row["files"], row["file_bytes"]) == (1, len(SALES))
    assert KEY not in result.output

    table = runner.invoke(main, ["--data-dir", str(tmp_path), "keys", "usage"])
    assert table.exit_code == 0
    header, line = table.stdout.splitlines()
    assert header.split()[:3] == ["KEY", "REQUESTS", "TOKENS"]
    assert line.split()[:4] == [key_id(KEY), "1", "250", "25"]


async def test_totals_that_cannot_be_written_wait_for_the_next_flush(caplog: pytest.LogCaptureFixture) -> None:
    from execbridge.observability.usage import UsageSink
    from execbridge.telemetry import RequestReport, ToolReport, TurnReport
    from execbridge.types import Usage

    memory = MemoryStore()

    class Flaky:
        failures = 1

        async def add(self, owner: str, **totals: object) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError("disk full")
            await memory.usage.add(owner, **totals)  # type: ignore[arg-type]

    sink = UsageSink(Flaky(), flush_every_s=0)  # type: ignore[arg-type]
    sink.turn_finished(None, TurnReport("m", "alice", 0.1, Usage(7, 3), "stop"))
    sink.tool_finished(None, ToolReport("bash_code_execution", "c", "k", "alice", 0.5, "ok", 0))
    sink.request_finished(None, RequestReport("r", "POST", "/v1/messages", 200, 0.2, "m", "alice"))
    sink.request_finished(None, RequestReport("r", "GET", "/v1/files", 200, 0.2, None, "alice"))  # not counted
    await sink.flush()
    assert "usage totals could not be written" in caplog.text
    assert await memory.usage.list() == []
    sink.turn_finished(None, TurnReport("m", "alice", 0.1, Usage(1, 1), "stop"))
    await sink.aclose()
    (alice,) = await memory.usage.list()
    assert (alice.requests, alice.input_tokens, alice.output_tokens, alice.code_execution_s) == (1, 8, 4, 0.5)


def test_tracing_without_its_extra_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    from execbridge.config import load_settings
    from execbridge.errors import ConfigurationError
    from execbridge.wiring import telemetry_sinks

    monkeypatch.setitem(sys.modules, "execbridge.observability.tracing", None)  # as if opentelemetry were missing
    monkeypatch.setitem(sys.modules, "execbridge.observability.mlflow_tracing", None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    store = MemoryStore()
    with pytest.raises(ConfigurationError, match=r"pip install 'execbridge\[tracing\]'"):
        telemetry_sinks(load_settings(data_dir=tmp_path), store)
    with pytest.raises(ConfigurationError, match=r"pip install 'execbridge\[mlflow\]'"):
        telemetry_sinks(load_settings(data_dir=tmp_path, tracing="off", mlflow_tracing=True), store)
    metrics, sinks = telemetry_sinks(load_settings(data_dir=tmp_path, tracing="off", metrics=False, usage=False), store)
    assert metrics is None and sinks == []
