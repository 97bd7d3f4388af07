"""The store locked by another process, under a real ``execbridge serve``: a second process holds a
SQLite write lock on the gateway's database (files, keys, threads) or on the sandbox host's (container
records). Requests that must write get a retryable 503 in Anthropic's envelope, reads and existing
containers go on, nothing is corrupted, and once the lock goes the same requests succeed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anthropic
import httpx
import pytest

from execbridge.testing import FakeUpstream, Turn

from ._bash import ask_with_code_execution, run_bash
from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the privilege split runs only when started as root")

# Holds a write lock (BEGIN IMMEDIATE) on the database argv[1] until its stdin closes; prints "locked"
# once it holds it, so the test waits for that line, never for a clock.
_LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""

# Short, so each refused write returns soon; how long the lock is held does not depend on it.
BUSY_TIMEOUT_S = "0.2"


@contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """Another process holds ``database``'s write lock for the duration of the block."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert locker.stdin is not None and locker.stdout is not None
    try:
        assert locker.stdout.readline() == "locked\n"
        yield
    finally:
        locker.stdin.close()
        locker.stdout.close()
        assert locker.wait(timeout=30) == 0


@contextmanager
def _gateway(fake_upstream: FakeUpstream, data_dir: Path) -> Iterator[Gateway]:
    with serve(fake_upstream, data_dir, EXECBRIDGE_STORE_BUSY_TIMEOUT_S=BUSY_TIMEOUT_S) as gateway:
        yield gateway
    for database in (data_dir / "execbridge.sqlite3", data_dir / "sandbox" / "containers.sqlite3"):
        with sqlite3.connect(database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "Traceback" not in (data_dir / "serve.log").read_text()


def _assert_store_busy(error: anthropic.APIStatusError, database: str) -> None:
    assert error.status_code == 503
    assert error.body["error"] == {
        "type": "overloaded_error",
        "message": f"the store ({database}) is locked by another process; retry",
        "details": {"error_code": "store_busy"},
    }
    assert error.response.headers["retry-after"] == "1"


def test_a_locked_gateway_store_refuses_uploads_with_a_retryable_error(fake_upstream, tmp_path: Path) -> None:
    with _gateway(fake_upstream, tmp_path) as gateway:
        client = sdk_client(gateway.url, CLIENT_KEY)
        kept = client.beta.files.upload(file=("kept.txt", b"kept", "text/plain"))
        with write_locked(tmp_path / "execbridge.sqlite3"):
            with pytest.raises(anthropic.APIStatusError) as error:
                client.beta.files.upload(file=("late.txt", b"late", "text/plain"))
            _assert_store_busy(error.value, "execbridge.sqlite3")
            assert not list((tmp_path / "files").glob("*late*")) and not list((tmp_path / "files").glob(".tmp-*"))
            # Reads go on beside the writer (WAL), and the store still answers the readiness check.
            assert [f.id for f in client.beta.files.list()] == [kept.id]
            assert client.beta.files.retrieve_metadata(kept.id).size_bytes == 4
            assert httpx.get(f"{gateway.url}/readyz").status_code == 200
        again = client.beta.files.upload(file=("late.txt", b"late", "text/plain"))
        assert {f.id for f in client.beta.files.list()} == {kept.id, again.id}


def test_a_locked_sandbox_store_refuses_new_containers_and_keeps_old_ones(fake_upstream, tmp_path: Path) -> None:
    with _gateway(fake_upstream, tmp_path) as gateway:
        container = run_bash(gateway, "echo kept > kept.txt", None).container
        with write_locked(tmp_path / "sandbox" / "containers.sqlite3"):
            gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command="echo new")])
            with pytest.raises(anthropic.APIStatusError) as error:
                ask_with_code_execution(gateway, None)
            _assert_store_busy(error.value, "containers.sqlite3")
            gateway.fake.reset()
            # A container that exists still runs commands: only its last-use time waits for the lock.
            assert run_bash(gateway, "cat kept.txt", container).stdout == "kept\n"
        assert run_bash(gateway, "cat kept.txt", container).stdout == "kept\n"
        assert run_bash(gateway, "echo new", None).stdout == "new\n"
