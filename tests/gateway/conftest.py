"""A real ``execbridge serve`` process over HTTP, with a real sandbox, against the scripted fake upstream."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import pytest

from execbridge.testing import FakeUpstream
from execbridge.testing.processes import stop_with_parent

CLIENT_KEY = "dapi-test-token-alice"
OTHER_KEY = "dapi-test-token-bob"
LISTER_KEY = "dapi-test-token-lister"  # owns only the files of the listing test
# The keys the fake upstream accepts: in pass-through mode no other key may create anything.
UPSTREAM_KEYS = frozenset({CLIENT_KEY, OTHER_KEY, LISTER_KEY})
# Small enough for a test to cross quickly, big enough for the CSVs and charts the tests make.
MAX_FILE_BYTES = 256 << 10
OUTPUT_FILE_LIMIT_BYTES = 512 << 10


@dataclass
class Gateway:
    url: str
    fake: FakeUpstream
    data_dir: Path
    log: Path

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The ``execbridge serve`` process (the supervisor, when the privilege split runs)."""
        return SERVE_PROCESSES[self.url]


SERVE_PROCESSES: dict[str, subprocess.Popen[bytes]] = {}


_SDK_CLIENTS: list[anthropic.Anthropic] = []


def sdk_client(url: str, key: str) -> anthropic.Anthropic:
    """The official SDK against a gateway, closed when the test ends (an unclosed client's sockets
    would be collected in some later test, whose run then fails on the ResourceWarning)."""
    client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
    _SDK_CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_sdk_clients() -> Iterator[None]:
    yield
    while _SDK_CLIENTS:
        _SDK_CLIENTS.pop().close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    accepted = {f"Bearer {key}" for key in UPSTREAM_KEYS}
    with FakeUpstream(authorize=accepted.__contains__) as fake:
        yield fake


def searchable_by_the_gateway_user(data_dir: Path) -> None:
    """pytest's temporary directories are 0700; a gateway started as root runs as ``execbridge``, which
    must reach its data directory (only search permission is added, nothing becomes listable)."""
    for parent in data_dir.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o001)


@contextmanager
def serve_process(
    env: dict[str, str], data_dir: Path, *args: str, as_user: str | None = None, prefix: Sequence[str] = ()
) -> Iterator[str]:
    """``execbridge serve --host 127.0.0.1 --port <free> *args`` until the block ends; yields its URL.

    The process's output goes to ``data_dir/serve.log`` (appended, so a restart keeps the history).
    ``as_user`` runs it as that user, as the privilege split's supervisor runs its gateway. ``prefix``
    goes before the command (e.g. ``unshare --mount``, which execs serve, so the process
    is still serve's).
    """
    searchable_by_the_gateway_user(data_dir)
    log = data_dir / "serve.log"
    port = _free_port()
    command = [
        *prefix,
        *(sys.executable, "-m", "execbridge", "serve", "--host", "127.0.0.1", "--port", str(port), *args),
    ]
    with log.open("ab") as sink:
        if as_user is None:
            process = subprocess.Popen(
                command, env=env, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=stop_with_parent
            )
        else:
            user = pwd.getpwnam(as_user)
            process = subprocess.Popen(
                command,
                env={**env, "HOME": user.pw_dir},
                stdout=sink,
                stderr=subprocess.STDOUT,
                user=user.pw_uid,
                group=user.pw_gid,
                extra_groups=[],
                cwd="/",
                preexec_fn=stop_with_parent,  # after the user switch, which would clear it
            )
    url = f"http://127.0.0.1:{port}"
    SERVE_PROCESSES[url] = process
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"execbridge serve did not start:\n{log.read_text()}") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        SERVE_PROCESSES.pop(url, None)
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()  # reaped: an unreaped child fails a later test with a ResourceWarning


@contextmanager
def serve(
    fake_upstream: FakeUpstream, data_dir: Path, *, prefix: Sequence[str] = (), **extra_env: str
) -> Iterator[Gateway]:
    """``execbridge serve`` on ``data_dir`` until the block ends (a second one may reopen the same dir);
    ``prefix`` as for ``serve_process``."""
    env = {
        **os.environ,
        "EXECBRIDGE_DATA_DIR": str(data_dir),
        "EXECBRIDGE_MAX_ITERATIONS": "3",
        "EXECBRIDGE_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        "EXECBRIDGE_SANDBOX__MEMORY_MB": "512",
        "EXECBRIDGE_SANDBOX__DISK_MB": "64",
        "EXECBRIDGE_SANDBOX__PIDS": "128",
        "EXECBRIDGE_SANDBOX__COMMAND_TIMEOUT_S": "20",
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "1",
        "EXECBRIDGE_SANDBOX__OUTPUT_FILE_LIMIT_BYTES": str(OUTPUT_FILE_LIMIT_BYTES),
        "EXECBRIDGE_SHUTDOWN_GRACE_S": "2",
        **extra_env,
    }
    with serve_process(env, data_dir, "--upstream", fake_upstream.databricks_url, prefix=prefix) as url:
        yield Gateway(url, fake_upstream, data_dir, data_dir / "serve.log")


@pytest.fixture(scope="session")
def gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serve(fake_upstream, tmp_path_factory.mktemp("gateway-data")) as running:
        yield running


@pytest.fixture
def fake(gateway: Gateway) -> Iterator[FakeUpstream]:
    gateway.fake.reset()
    yield gateway.fake
    assert gateway.fake.remaining == 0, "the test left scripted turns unused"
