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

from ._bash import run_bash
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
        container = run_bash(gateway, "echo before").container
        filler = _fill(small_disk)

        # A command whose output file cannot be stored still gives its result, and says what was lost.
        during = run_bash(gateway, "echo during; head -c 60000 /dev/urandom > $OUTPUT_DIR/out.bin", container)
        assert during.stdout == "during\n"
        assert "out.bin" in during.stderr and "[execbridge]" in during.stderr, during.stderr

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


def _ready(gateway: Gateway) -> bool:
    import httpx

    return httpx.get(f"{gateway.url}/readyz").status_code == 200
