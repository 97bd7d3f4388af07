"""``execbridge serve`` started as root, as the README starts it: the HTTP gateway runs as the user
``execbridge`` beside a root sandbox host, which it restarts when it dies; the CLI talks to that host."""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]


def _processes_of(data_dir: Path) -> dict[str, tuple[int, int]]:
    """``{"gateway" | "sandbox-host" | "supervisor": (pid, uid)}`` of the execbridge processes of ``data_dir``."""
    found: dict[str, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            uid = int((entry / "status").read_text().split("\nUid:")[1].split()[0])
        except (OSError, IndexError):
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "execbridge" not in args or str(data_dir) not in args:
            continue
        if "sandbox-host" in args:
            found["sandbox-host"] = (int(entry.name), uid)
        elif "serve" in args and "--sandbox-host" in args:
            found["gateway"] = (int(entry.name), uid)
    return found


def _code_turns(command: str) -> list:
    return [Turn.text("Running.").call("bash_code_execution", command=command), lambda req: Turn.text("Done.")]


def _run(gateway: Gateway, command: str, container: str | None = None) -> tuple[str, str]:
    """One code-execution request; (the command's stdout, the container id)."""
    gateway.fake.reset(_code_turns(command))
    message = sdk_client(gateway.url, CLIENT_KEY).beta.messages.create(
        model="databricks-claude-sonnet-4-5",
        max_tokens=1024,
        betas=["code-execution-2025-08-25"],
        tools=CODE_EXECUTION,
        container=container,
        messages=[{"role": "user", "content": "run it"}],
    )
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert len(results) == 1 and results[0].content.type == "bash_code_execution_result", message.content
    assert message.container is not None
    return results[0].content.stdout.strip(), message.container.id


@pytest.fixture
def split_gateway(fake_upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serve(fake_upstream, tmp_path_factory.mktemp("split-data")) as running:
        yield running


def test_the_gateway_runs_unprivileged_beside_a_root_sandbox_host(split_gateway: Gateway) -> None:
    user = pwd.getpwnam("execbridge")
    processes = _processes_of(split_gateway.data_dir)
    assert processes["gateway"][1] == user.pw_uid
    assert processes["sandbox-host"][1] == 0
    # The store and files are the gateway user's; the sandbox part is root's alone, and the data
    # directory is sticky so the gateway cannot swap the sandbox directory for its own.
    data = split_gateway.data_dir.stat()
    assert (data.st_uid, data.st_gid, data.st_mode & 0o7777) == (0, user.pw_gid, 0o1770)
    sandbox = (split_gateway.data_dir / "sandbox").stat()
    assert (sandbox.st_uid, sandbox.st_mode & 0o777) == (0, 0o700)
    assert (split_gateway.data_dir / "execbridge.sqlite3").stat().st_uid == user.pw_uid
    assert (split_gateway.data_dir / "files").stat().st_uid == user.pw_uid
    # And code still runs, as a client sees it.
    assert _run(split_gateway, "echo hello from the sandbox")[0] == "hello from the sandbox"


def test_the_gateway_process_cannot_reach_the_sandbox_part(split_gateway: Gateway) -> None:
    """Read as the gateway user: its own files yes, the container records and images no."""
    _run(split_gateway, "echo x")
    user = pwd.getpwnam("execbridge")
    probe = subprocess.run(
        [sys.executable, "-c", "import os, sys; os.listdir(sys.argv[1])", str(split_gateway.data_dir / "sandbox")],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert probe.returncode != 0 and "PermissionError" in probe.stderr


def test_a_dead_sandbox_host_is_restarted_and_containers_keep_their_files(split_gateway: Gateway) -> None:
    _, container = _run(split_gateway, "echo kept > note.txt")
    host_pid, _ = _processes_of(split_gateway.data_dir)["sandbox-host"]
    os.kill(host_pid, signal.SIGKILL)
    log = split_gateway.log
    # The supervisor says so in its log, then the host is back: wait for that line, not for a guess.
    deadline = time.monotonic() + 120
    while "the sandbox host is back" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert "the sandbox host exited (status -9)" in log.read_text()
    new_pid, uid = _processes_of(split_gateway.data_dir)["sandbox-host"]
    assert new_pid != host_pid and uid == 0
    assert _run(split_gateway, "cat note.txt", container) == ("kept", container)


def test_readyz_says_when_the_sandbox_host_does_not_answer(split_gateway: Gateway) -> None:
    """A stopped host still accepts connections (the kernel's backlog) but answers nothing: not ready."""
    ready = httpx.get(f"{split_gateway.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["checks"]["sandbox"]["ok"], ready.text
    host_pid, _ = _processes_of(split_gateway.data_dir)["sandbox-host"]
    os.kill(host_pid, signal.SIGSTOP)
    try:
        stalled = httpx.get(f"{split_gateway.url}/readyz", timeout=30)
        assert httpx.get(f"{split_gateway.url}/healthz", timeout=30).status_code == 200
    finally:
        os.kill(host_pid, signal.SIGCONT)
    assert stalled.status_code == 503, stalled.text
    checks = stalled.json()["checks"]
    assert checks["sandbox"] == {"ok": False, "detail": "no answer within 5 s"}
    assert checks["store"]["ok"] and checks["upstream_credentials"]["ok"]
    assert httpx.get(f"{split_gateway.url}/readyz", timeout=30).status_code == 200


def test_the_cli_talks_to_the_running_sandbox_host(split_gateway: Gateway) -> None:
    """While serve holds the data directory, `sandbox exec|ls|rm` are requests to its host (as root)."""
    _, container = _run(split_gateway, "echo from-the-gateway > g.txt")
    env = {**os.environ, "EXECBRIDGE_DATA_DIR": str(split_gateway.data_dir)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "execbridge", "sandbox", *args], env=env, capture_output=True, text=True
        )

    listed = cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert container in [json.loads(line)["id"] for line in listed.stdout.splitlines()]
    owner = next(json.loads(line)["owner"] for line in listed.stdout.splitlines() if container in line)
    ran = cli("exec", "--container", container, "--owner", owner, "--bash", "cat g.txt")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["stdout"] == "from-the-gateway\n"
    assert cli("rm", container).returncode == 0
    assert container not in cli("ls").stdout


def test_the_socket_belongs_to_root_and_the_gateway_group(split_gateway: Gateway) -> None:
    host_pid, _ = _processes_of(split_gateway.data_dir)["sandbox-host"]
    argv = Path(f"/proc/{host_pid}/cmdline").read_bytes().split(b"\0")
    socket_path = Path(argv[argv.index(b"--socket") + 1].decode())
    st = socket_path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, grp.getgrnam("execbridge").gr_gid, 0o660)
