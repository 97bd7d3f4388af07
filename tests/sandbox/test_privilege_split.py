"""The privilege split from the side of a compromised gateway: a real ``execbridge sandbox-host`` (root)
and requests sent to its socket by a process running as the unprivileged gateway user.

What a gateway can do through the protocol is what any code running as that user can do, so the
"gateway" here is a small script run as that user that speaks the raw frames: it can create
containers only for keys it presents, and it cannot name an owner, list everyone's containers, or
reach (get, lease, run in, read from, delete) a container whose key it does not hold.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from execbridge import ids
from execbridge.sandbox.host_client import SandboxHostClient, host_answers
from execbridge.types import Caller

from .conftest import TEST_UID_BASE

pytestmark = pytest.mark.adversarial

GATEWAY_USER = "execbridge"
LIMITS = (1 << 20, 8, 4 << 20)


def _gateway_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(GATEWAY_USER)
    except KeyError:
        pytest.fail("the user 'execbridge' is missing: scripts/install.sh creates it")


@pytest.fixture(scope="module")
def host() -> Iterator[Path]:
    """A sandbox host on a private data directory; yields its socket (0660, group execbridge)."""
    user = _gateway_user()
    scratch = Path(tempfile.mkdtemp(prefix="execbridge-split-", dir="/tmp"))
    os.chmod(scratch, 0o755)  # the gateway user reaches the socket's directory, and nothing else here
    socket_path = scratch / "run" / "sandbox.sock"
    env = {
        **os.environ,
        "EXECBRIDGE_SANDBOX__UID_BASE": str(TEST_UID_BASE + 900),
        "EXECBRIDGE_SANDBOX__MEMORY_MB": "256",
        "EXECBRIDGE_SANDBOX__DISK_MB": "64",
        "EXECBRIDGE_SANDBOX__PIDS": "64",
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0",
        "EXECBRIDGE_SANDBOX__COMMAND_TIMEOUT_S": "900",
    }
    command = [sys.executable, "-m", "execbridge", "--data-dir", str(scratch / "data"), "sandbox-host"]
    log = (scratch / "host.log").open("wb")
    process = subprocess.Popen(
        [*command, "--socket", str(socket_path), "--group", GATEWAY_USER], env=env, stdout=log, stderr=log
    )
    try:
        while not asyncio.run(host_answers(socket_path)):
            if process.poll() is not None:
                pytest.fail(f"the sandbox host did not start:\n{(scratch / 'host.log').read_text()}")
            asyncio.run(asyncio.sleep(0.05))
        assert user.pw_gid  # the socket's group is the user's own
        yield socket_path
    finally:
        process.terminate()
        process.wait(timeout=120)
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)


# The compromised gateway: raw frames, as the gateway user. It prints one JSON answer per request.
_GATEWAY_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from execbridge.sandbox.protocol import encode_frame, read_frame

    async def main(path, requests):
        reader, writer = await asyncio.open_unix_connection(path)
        answers = []
        for request in requests:
            writer.write(encode_frame(request))
            await writer.drain()
            try:
                while True:
                    frame = await read_frame(reader, max_body=1 << 24)
                    if frame.get("op") != "file":
                        break
            except asyncio.IncompleteReadError:
                answers.append({"status": "closed"})
                break
            answers.append({k: v for k, v in frame.items() if not isinstance(v, bytes)})
        print(json.dumps(answers))

    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
    """
)


def as_gateway(socket_path: Path, *requests: dict[str, object], user: str = GATEWAY_USER) -> list[dict[str, object]]:
    """Send ``requests`` on one connection (after hello) as ``user``; the answers, in order."""
    entry = pwd.getpwnam(user)
    hello = {"op": "hello", "protocol": 1}
    result = subprocess.run(
        [sys.executable, "-c", _GATEWAY_SCRIPT, str(socket_path), json.dumps([hello, *requests])],
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert answers[0]["status"] == "ok", answers[0]
    return answers[1:]


def _victim(socket_path: Path) -> tuple[str, str]:
    """A container of the victim's key (made by root, as the real gateway would for that client), with a
    secret file in it; returns (container id, victim key)."""
    victim_key = "sk-victim-" + ids.random_token()

    async def make() -> str:
        client = SandboxHostClient(socket_path, output_limits=LIMITS)
        try:
            caller = Caller(owner=ids.key_id(victim_key), key=victim_key)
            info = await client.create(caller)
            async with client.lease(info.id, caller) as session:
                result = await session.run_bash("echo the-victims-secret > secret.txt")
                assert result.return_code == 0
            return info.id
        finally:
            await client.aclose()

    return asyncio.run(make()), victim_key


def test_a_gateway_creates_containers_only_for_the_keys_it_presents(host: Path) -> None:
    created = as_gateway(host, {"op": "create", "owner": {"key": "sk-mine"}})[0]
    assert created["status"] == "ok"
    assert created["container"]["owner"] == ids.key_id("sk-mine")  # type: ignore[index]
    victim_owner = ids.key_id("sk-someone-else")
    named = as_gateway(host, {"op": "create", "owner": {"id": victim_owner}})[0]
    assert (named["status"], named["kind"], named["code"]) == ("error", "refused", "owner_refused")


def test_a_gateway_cannot_reach_another_keys_container_by_any_request(host: Path) -> None:
    victim, victim_key = _victim(host)
    victim_owner = ids.key_id(victim_key)
    for owner in ({"key": "sk-attacker"}, {"key": victim_owner}, {"key": ""}):
        answers = as_gateway(
            host,
            {"op": "get", "id": victim, "owner": owner},
            {"op": "delete", "id": victim, "owner": owner},
            {"op": "lease", "id": victim, "owner": owner},
        )
        for answer in answers:
            assert answer["status"] == "error" and answer["kind"] in ("not_found", "bad_request"), (owner, answer)
    for owner in ({"id": victim_owner}, {"id": "cli"}, {"id": "root"}):
        answers = as_gateway(
            host, {"op": "get", "id": victim, "owner": owner}, {"op": "lease", "id": victim, "owner": owner}
        )
        assert [(a["status"], a["kind"]) for a in answers] == [("error", "refused")] * 2, owner
    malformed = as_gateway(host, {"op": "get", "id": victim, "owner": {"key": "sk-a", "id": victim_owner}})
    assert malformed[0]["kind"] == "bad_request"
    # Still there, untouched, for its owner.
    assert _read_secret(host, victim, victim_key) == "the-victims-secret\n"


def test_a_gateway_cannot_list_other_owners_containers(host: Path) -> None:
    victim, _ = _victim(host)
    everyone = as_gateway(host, {"op": "list", "owner": None})[0]
    assert (everyone["status"], everyone["kind"]) == ("error", "refused")
    mine = as_gateway(host, {"op": "list", "owner": {"key": "sk-attacker-lists"}})[0]
    assert mine["status"] == "ok" and victim not in json.dumps(mine)


def test_a_leased_connection_reaches_only_its_own_container(host: Path) -> None:
    """Inside its own lease a gateway runs commands in its own container; the victim's files are not there."""
    victim, _ = _victim(host)
    created = as_gateway(host, {"op": "create", "owner": {"key": "sk-attacker-2"}})[0]
    mine = created["container"]["id"]  # type: ignore[index]
    answers = as_gateway(
        host,
        {"op": "lease", "id": mine, "owner": {"key": "sk-attacker-2"}},
        {"op": "run_bash", "source": "cat secret.txt; ls / /run /workspace 2>&1; echo done", "timeout": 30},
        {"op": "view", "path": f"/../{victim}/secret.txt"},
        {"op": "release"},
        {"op": "lease", "id": victim, "owner": {"key": "sk-attacker-2"}},
    )
    ran = answers[1]
    assert ran["status"] == "ok" and "done" in ran["stdout"]  # type: ignore[operator]
    assert "the-victims-secret" not in ran["stdout"] and victim not in ran["stdout"]  # type: ignore[operator]
    assert answers[2]["outcome"] == "failure"
    assert answers[3]["status"] == "ok"
    assert answers[4]["kind"] == "not_found"


def test_a_wrong_protocol_version_is_refused_and_the_connection_closed(host: Path) -> None:
    entry = pwd.getpwnam(GATEWAY_USER)
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from execbridge.sandbox.protocol import encode_frame, read_frame
        async def main():
            reader, writer = await asyncio.open_unix_connection(sys.argv[1])
            writer.write(encode_frame({"op": "hello", "protocol": 99}))
            await writer.drain()
            answer = await read_frame(reader, max_body=0)
            print(json.dumps([answer, await reader.read()  == b""]))
        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(host)],
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    answer, closed = json.loads(result.stdout)
    assert (answer["status"], answer["code"], closed) == ("error", "protocol_version", True)


def test_the_socket_is_for_root_and_the_gateway_group_only(host: Path) -> None:
    st = host.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, grp.getgrnam(GATEWAY_USER).gr_gid, 0o660)
    result = subprocess.run(
        [sys.executable, "-c", f"import socket; socket.socket(socket.AF_UNIX).connect({str(host)!r})"],
        user=65534,
        group=65534,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )
    assert result.returncode != 0 and "PermissionError" in result.stderr


def test_a_gateway_that_goes_away_mid_command_releases_the_lease(host: Path) -> None:
    """A dropped connection cancels its command: the container is free again long before the command
    (ten minutes of sleep) could have ended by itself."""

    async def scenario() -> str:
        client = SandboxHostClient(host, output_limits=LIMITS)
        caller = Caller(owner=ids.key_id("sk-drop"), key="sk-drop")
        try:
            info = await client.create(caller)

            async def long_command() -> None:
                async with client.lease(info.id, caller) as session:
                    await session.run_bash(f"sleep {MARKER}")

            task = asyncio.create_task(long_command())
            async with asyncio.timeout(120):  # waits for the command to run, however slow the machine
                while not _running(f"sleep {MARKER}"):  # noqa: ASYNC110 (another process's state: polled)
                    await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(300):  # far below 600 s: only a released lease gets here
                async with client.lease(info.id, caller) as session:
                    result = await session.run_bash("echo free; pgrep -c sleep || true")
            assert not _running(f"sleep {MARKER}")
            return result.stdout
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == "free\n0\n"


def test_root_may_act_for_an_owner_by_name(host: Path) -> None:
    """The operator's CLI: root names owners (``sandbox exec --owner``, ``sandbox ls``, ``rm``)."""

    async def scenario() -> list[str]:
        client = SandboxHostClient(host, output_limits=LIMITS)
        try:
            info = await client.create("operator")
            listed = [i.id async for i in client.list()]
            await client.delete(info.id, "operator")
            return [info.id, *listed]
        finally:
            await client.aclose()

    made, *listed = asyncio.run(scenario())
    assert made in listed


MARKER = "600.0417"  # a sleep no other test runs


def _running(command_line: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"^{command_line}$"], capture_output=True).returncode == 0


def _read_secret(socket_path: Path, container_id: str, key: str) -> str:
    async def read() -> str:
        client = SandboxHostClient(socket_path, output_limits=LIMITS)
        try:
            caller = Caller(owner=ids.key_id(key), key=key)
            async with client.lease(container_id, caller) as session:
                return (await session.run_bash("cat secret.txt")).stdout
        finally:
            await client.aclose()

    return asyncio.run(read())
