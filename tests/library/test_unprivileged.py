"""Library mode in a process that is not root: it uses a running ``execbridge sandbox-host`` on the same
data directory, and without one it says what is missing and how to start one."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from execbridge.config import load_settings
from execbridge.sandbox.host_client import host_answers
from execbridge.testing import FakeUpstream, Turn
from execbridge.testing.processes import stop_with_parent

from .conftest import KEY

USER = "execbridge"  # scripts/install.sh makes it (the privilege split's gateway user)

PROGRAM = """
import sys, anthropic, execbridge
upstream, data_dir, key = sys.argv[1:4]
try:
    gateway = execbridge.open(upstream=upstream, data_dir=data_dir, sandbox={"spare_containers": 0}).start()
except execbridge.SandboxUnavailable as error:
    print("unavailable:", error.message)
    sys.exit(3)
client = anthropic.Anthropic(api_key=key, base_url=gateway.base_url, http_client=gateway.http_client())
message = client.messages.create(
    model="m", max_tokens=100, tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
    messages=[{"role": "user", "content": "who runs this?"}],
)
(result,) = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
print(result.content.stdout, end="")
gateway.close()
"""


def _as_user(data_dir: Path, upstream: str) -> subprocess.CompletedProcess[str]:
    user = pwd.getpwnam(USER)
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, upstream, str(data_dir), KEY],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        env={**os.environ, "HOME": user.pw_dir},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def shared_data_dir(tmp_path: Path) -> Path:
    """A data directory the user may write and the sandbox host (root) keeps its part of, as the split has it."""
    try:
        gid = grp.getgrnam(USER).gr_gid
    except KeyError:
        pytest.skip(f"no user {USER!r} (scripts/install.sh makes it)")
    for parent in tmp_path.parents:  # pytest's directories are 0700: let the user search down to ours
        if parent in (Path("/tmp"), Path("/var/tmp"), Path("/")):
            break
        parent.chmod(parent.stat().st_mode | 0o001)
    tmp_path.chmod(0o711)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    os.chown(data_dir, 0, gid)
    data_dir.chmod(0o1770)
    return data_dir


@pytest.fixture
def sandbox_host(shared_data_dir: Path) -> Iterator[Path]:
    socket_path = load_settings(data_dir=shared_data_dir).sandbox_socket_path
    log = shared_data_dir.parent / "sandbox-host.log"
    with log.open("wb") as sink:
        host = subprocess.Popen(
            [sys.executable, "-m", "execbridge", "--data-dir", str(shared_data_dir), "sandbox-host", "--group", USER],
            env={**os.environ, "EXECBRIDGE_SANDBOX__UID_BASE": str(800_000 + (os.getpid() % 50) * 1000)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=stop_with_parent,
        )
    try:
        deadline = time.monotonic() + 60  # polls a condition (the host answering), bounded for a broken host
        while not asyncio.run(host_answers(socket_path)):
            assert host.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the sandbox host did not answer"
            time.sleep(0.05)
        yield socket_path
    finally:
        host.terminate()
        host.wait(60)


def test_without_root_or_a_sandbox_host_it_says_what_is_missing(
    fake_upstream: FakeUpstream, shared_data_dir: Path
) -> None:
    done = _as_user(shared_data_dir, fake_upstream.databricks_url)
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith("unavailable: sandbox protections missing: ")
    assert "not running as root" in done.stdout  # the doctor's own finding
    assert "Library mode runs containers in this process only as root" in done.stdout
    socket_path = load_settings(data_dir=shared_data_dir).sandbox_socket_path
    assert f"a sandbox host listening at {socket_path}" in done.stdout


def test_without_root_it_uses_a_running_sandbox_host(
    fake_upstream: FakeUpstream, shared_data_dir: Path, sandbox_host: Path
) -> None:
    fake_upstream.reset([Turn.text("").call("bash_code_execution", command="echo $PWD"), Turn.text("Done.")])
    done = _as_user(shared_data_dir, fake_upstream.databricks_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "/workspace\n"
    assert fake_upstream.remaining == 0
