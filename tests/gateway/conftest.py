"""A real ``execbridge serve`` process over HTTP, with a real sandbox, against the scripted fake upstream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from execbridge.upstream.fake import FakeUpstream

CLIENT_KEY = "dapi-test-token-alice"
OTHER_KEY = "dapi-test-token-bob"


@dataclass
class Gateway:
    url: str
    fake: FakeUpstream
    data_dir: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(require_api_key=CLIENT_KEY) as fake:
        yield fake


@pytest.fixture(scope="session")
def gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("gateway-data")
    log = data_dir / "serve.log"
    port = _free_port()
    env = {
        **os.environ,
        "EXECBRIDGE_DATA_DIR": str(data_dir),
        "EXECBRIDGE_MAX_ITERATIONS": "3",
        "EXECBRIDGE_SANDBOX__MEMORY_MB": "512",
        "EXECBRIDGE_SANDBOX__DISK_MB": "64",
        "EXECBRIDGE_SANDBOX__PIDS": "128",
        "EXECBRIDGE_SANDBOX__COMMAND_TIMEOUT_S": "20",
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "1",
    }
    command = [
        sys.executable, "-m", "execbridge", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--upstream", fake_upstream.databricks_url,
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/health-probe", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"execbridge serve did not start:\n{log.read_text()}") from None
            time.sleep(0.05)
    try:
        yield Gateway(url, fake_upstream, data_dir, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def fake(gateway: Gateway) -> Iterator[FakeUpstream]:
    gateway.fake.reset()
    yield gateway.fake
    assert gateway.fake.remaining == 0, "the test left scripted turns unused"
