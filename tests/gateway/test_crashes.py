"""``kill -9`` against a real ``execbridge serve`` (the privilege split's gateway, its sandbox host, or
the whole tree at once) while a command runs and its stream is open, or while an upload is half
written. After a restart on the same data directory every container that existed serves requests with
its files, no partial upload is listed, and once it stops cleanly nothing of the instance is left on
the host: no process, mount, loop device, cgroup or temporary file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the privilege split runs only when started as root")

CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]
REQUEST = {
    "model": "databricks-claude-sonnet-4-5",
    "max_tokens": 256,
    "tools": CODE_EXECUTION,
    "messages": [{"role": "user", "content": "run it"}],
}
HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "code-execution-2025-08-25"}


def _until(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _instance(gateway: Gateway) -> str:
    found = re.search(r"/run/execbridge/([0-9a-f]+)/sandbox\.sock", gateway.log.read_text())
    assert found, gateway.log.read_text()
    return found.group(1)


def _processes(data_dir: Path) -> dict[str, int]:
    """``{"gateway" | "sandbox-host": pid}`` of the execbridge processes serving ``data_dir``."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "execbridge" in args and str(data_dir) in args:
            if "sandbox-host" in args:
                found["sandbox-host"] = int(entry.name)
            elif "--sandbox-host" in args:
                found["gateway"] = int(entry.name)
    return found


def _cgroup_parents(instance: str) -> list[Path]:
    """This instance's parent cgroup in each hierarchy (v1: one per controller; v2: the one). Not a walk
    of the whole tree: other tests' cgroups come and go in it, and a walk raises when one goes under it."""
    root = Path("/sys/fs/cgroup")
    return [*root.glob(f"execbridge/{instance}"), *root.glob(f"*/execbridge/{instance}")]


def _sandboxed(instance: str) -> list[int]:
    """Processes in this instance's container cgroups (which come and go meanwhile: os.walk and the
    reads below skip what vanished)."""
    pids: list[int] = []
    # os.walk, not Path.glob: the gateway removes cgroups while we look, and glob's walk raises when a
    # directory goes under it (os.walk skips it); a cgroup.procs gone before its read held nobody.
    for parent in _cgroup_parents(instance):
        for directory, _, files in os.walk(parent):
            if "cgroup.procs" in files:
                with contextlib.suppress(FileNotFoundError):
                    pids += [int(p) for p in (Path(directory) / "cgroup.procs").read_text().split()]
    return pids


def leftovers(data_dir: Path, instance: str) -> dict[str, list[str]]:
    """What of this instance is still on the host."""
    run_dir = f"/run/execbridge/{instance}"
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if run_dir in line]
    listing = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True).stdout
    loops = json.loads(listing)["loopdevices"] if listing.strip() else []
    return {
        "processes": [f"{k}={v}" for k, v in _processes(data_dir).items()] + [str(p) for p in _sandboxed(instance)],
        "mounts": mounts,
        "loop devices": [d["back-file"] for d in loops if str(data_dir) in (d.get("back-file") or "")],
        "cgroups": [str(p) for p in _cgroup_parents(instance) if p.is_dir()],
        "temporary files": [
            str(p) for p in [*data_dir.glob("files/.tmp-*"), *data_dir.glob("sandbox/spool/*")] if p.exists()
        ],
    }


def _run(gateway: Gateway, command: str, container: str | None = None) -> tuple[str, str]:
    gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command=command), Turn.text("Done.")])
    message = sdk_client(gateway.url, CLIENT_KEY).beta.messages.create(
        **REQUEST, betas=["code-execution-2025-08-25"], container=container
    )
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert message.container is not None and len(results) == 1, message.content
    return results[0].content.stdout, message.container.id


def _command_runs(instance: str, argv: list[str]) -> bool:
    """Whether a process of this instance's containers runs ``argv`` (workspaces are mounted only in
    their sandboxes' own mount namespaces, so the host cannot look at their files)."""
    wanted = ("\0".join(argv) + "\0").encode()
    for pid in _sandboxed(instance):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == wanted:
                return True
    return False


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash")


@pytest.mark.parametrize("victim", ["gateway", "sandbox-host", "supervisor", "everything"])
def test_kill_9_while_a_command_runs_and_its_stream_is_open(fake_upstream, data_dir: Path, victim: str) -> None:
    with serve(fake_upstream, data_dir) as gateway:
        instance = _instance(gateway)
        _, container = _run(gateway, "echo kept > kept.txt")
        command = "echo more >> kept.txt; touch started; sleep 600"
        gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command=command), Turn.text("Done.")])
        with httpx.stream(
            "POST", f"{gateway.url}/v1/messages", json={**REQUEST, "stream": True, "container": container},
            headers=HEADERS, timeout=120,
        ) as response:  # fmt: skip
            lines = response.iter_lines()
            _until(lambda: _command_runs(instance, ["sleep", "600"]), "the command to start")
            processes = _processes(data_dir)
            if victim == "everything":  # as the OOM killer or a power cut would: no one cleans up
                targets = [gateway.process.pid, processes["gateway"], processes["sandbox-host"]]
            elif victim == "supervisor":
                targets = [gateway.process.pid]
            else:
                targets = [processes[victim]]
            for pid in targets:
                os.kill(pid, signal.SIGKILL)
            try:
                rest = list(lines)
            except httpx.HTTPError:
                rest = ["(connection cut)"]
        if victim == "sandbox-host":
            # The gateway goes on: the command's result is an error, the stream ends cleanly, and the
            # supervisor brings the host back.
            assert any("event: message_stop" in line for line in rest), rest
            _until(lambda: "the sandbox host is back" in gateway.log.read_text(), "the host's restart")
            assert _run(gateway, "cat kept.txt", container) == ("kept\nmore\n", container)
        else:
            assert not any("event: message_stop" in line for line in rest), rest
            gateway.process.wait(timeout=120)
            if victim == "supervisor":  # its children stop themselves when it dies (PR_SET_PDEATHSIG)
                _until(lambda: not _processes(data_dir), "the gateway and the host to stop", timeout=120)
            if victim in ("gateway", "supervisor"):  # the host stopped itself and every container
                assert not any(leftovers(data_dir, instance).values()), leftovers(data_dir, instance)
    with serve(fake_upstream, data_dir) as gateway:
        assert _instance(gateway) == instance
        assert _run(gateway, "cat kept.txt", container) == ("kept\nmore\n", container)
    left = leftovers(data_dir, instance)
    assert not any(left.values()), left


def test_kill_9_mid_upload_lists_no_partial_file_and_leaves_no_bytes(fake_upstream, data_dir: Path) -> None:
    with serve(fake_upstream, data_dir) as gateway:
        instance = _instance(gateway)
        done = sdk_client(gateway.url, CLIENT_KEY).beta.files.upload(file=("whole.txt", b"all of it", "text/plain"))
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="half.txt"\r\n\r\n' + b"x" * 100_000
        port = int(gateway.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"POST /v1/files HTTP/1.1\r\nHost: gateway\r\nx-api-key: " + CLIENT_KEY.encode()
                + b"\r\nanthropic-beta: files-api-2025-04-14\r\ncontent-type: multipart/form-data; boundary=b"
                + b"\r\ncontent-length: 200000\r\n\r\n" + body
            )  # fmt: skip
            _until(lambda: any(data_dir.glob("files/.tmp-*")), "the upload's temporary file")
            os.kill(_processes(data_dir)["gateway"], signal.SIGKILL)
            gateway.process.wait(timeout=120)
    with serve(fake_upstream, data_dir) as gateway:
        listed = [f.id for f in sdk_client(gateway.url, CLIENT_KEY).beta.files.list()]
        assert listed == [done.id]
        assert sorted(p.name for p in (data_dir / "files").iterdir()) == [done.id]
    left = leftovers(data_dir, instance)
    assert not any(left.values()), left
