"""The data directory's disk full, under a real ``execbridge serve``: uploads fail with a clear error and
leave nothing behind, the store is not corrupted, reads go on, and writes work again once space is free."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def _fill(disk: Path) -> Path:
    """Take every free block of ``disk``; returns the file that holds them."""
    filler = disk / "filler"
    stats = os.statvfs(disk)
    subprocess.run(["fallocate", "-l", str(stats.f_bavail * stats.f_frsize), str(filler)], check=True)
    assert os.statvfs(disk).f_bavail == 0
    return filler


def test_a_full_disk_refuses_uploads_cleanly_and_keeps_serving_reads(fake_upstream, small_disk: Path) -> None:
    data_dir = small_disk / "data"
    data_dir.mkdir()
    with serve(fake_upstream, data_dir, EXECBRIDGE_SANDBOX__MIN_FREE_DISK_MB="1") as gateway:
        client = sdk_client(gateway.url, CLIENT_KEY)
        kept = client.beta.files.upload(file=("kept.txt", b"kept " * 200, "text/plain"))
        container = _command(gateway, "echo before")[2]
        filler = _fill(small_disk)

        # A command whose output file cannot be stored still gives its result, and says what was lost.
        stdout, stderr, _ = _command(
            gateway, "echo during; head -c 60000 /dev/urandom > $OUTPUT_DIR/out.bin", container
        )
        assert stdout == "during\n"
        assert "out.bin" in stderr and "[execbridge]" in stderr, stderr

        with pytest.raises(anthropic.APIStatusError) as error:
            client.beta.files.upload(file=("big.bin", os.urandom(100_000), "application/octet-stream"))
        assert error.value.status_code == 500
        assert error.value.body["error"] == {
            "type": "api_error",
            "message": "could not store the file: No space left on device",
        }
        assert not list((data_dir / "files").glob(".tmp-*"))

        # Reads go on: listing and metadata; the readiness check says the store answers.
        assert [f.id for f in client.beta.files.list()] == [kept.id]
        assert client.beta.files.retrieve_metadata(kept.id).size_bytes == 1000
        assert _ready(gateway)

        filler.unlink()
        again = client.beta.files.upload(file=("after.txt", b"room again", "text/plain"))
        assert {f.id for f in client.beta.files.list()} == {kept.id, again.id}
    with sqlite3.connect(data_dir / "execbridge.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _command(gateway: Gateway, command: str, container: str | None = None) -> tuple[str, str, str]:
    gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command=command), Turn.text("Done.")])
    message = sdk_client(gateway.url, CLIENT_KEY).beta.messages.create(
        model="databricks-claude-sonnet-4-5",
        max_tokens=256,
        betas=["code-execution-2025-08-25"],
        tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
        container=container,
        messages=[{"role": "user", "content": "run it"}],
    )
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert message.container is not None and len(results) == 1, message.content
    assert results[0].content.type == "bash_code_execution_result", results[0].content
    return results[0].content.stdout, results[0].content.stderr, message.container.id


def _ready(gateway: Gateway) -> bool:
    import httpx

    return httpx.get(f"{gateway.url}/readyz").status_code == 200
