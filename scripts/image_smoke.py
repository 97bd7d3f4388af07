"""Runs the execbridge image the way the README says and sends it code-execution requests through the
official anthropic SDK, against the scripted fake upstream on this machine (scripts/test-image.sh).

Prints each step with its time; exits non-zero on the first thing that is not as expected. Everything
it starts (the container, its data volume, the fake upstream) is removed again, whatever happens.
Usage: .venv/bin/python scripts/image_smoke.py IMAGE  (as root, with the podman flags in $PODMAN_GLOBAL
and $PODMAN_LIMITS, as scripts/podman-flags.sh sets them)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import httpx

from execbridge.testing import FakeUpstream, Turn

# The documented run flags (README.md, "Container image"); only the network differs: the test's upstream
# listens on this machine's loopback, so the container shares the host's network instead of -p 8787:8787.
RUN_FLAGS = [
    "--cap-add", "SYS_ADMIN",  # mount workspace images; with it the default seccomp profile allows namespaces
    "--security-opt", "unmask=ALL",  # bwrap mounts a fresh /proc, refused while parts of /proc are masked
    "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",  # per-container memory, pids and CPU limits
    "--device", "/dev/loop-control",  # one loop-mounted ext4 image per container workspace
    "--device-cgroup-rule", "b 7:* rmw",
    "--volume", "/dev:/dev",
]  # fmt: skip
KEY = "dapi-image-smoke"

# Docker's default profile as far as user namespaces go (clone/unshare with CLONE_NEWUSER: EPERM; clone3:
# ENOSYS), in the OCI seccomp format both engines read; everything else allowed.
DOCKER_LIKE_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [
        {
            "names": ["clone", "unshare"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "args": [{"index": 0, "value": 0x10000000, "valueTwo": 0x10000000, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    ],
}


def step(what: str, started: float) -> None:
    print(f"   {what:<58} {time.monotonic() - started:7.2f} s", flush=True)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    flags = shlex.split(os.environ.get("PODMAN_GLOBAL", ""))
    return subprocess.run(["podman", *flags, *args], capture_output=True, text=True, check=check)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def container(image: str, upstream: str, port: int) -> Iterator[str]:
    name = f"execbridge-smoke-{os.getpid()}"
    volume = f"{name}-data"
    podman("volume", "create", volume)
    try:
        podman(
            "run", "--detach", "--name", name, "--network", "host",
            *shlex.split(os.environ.get("PODMAN_LIMITS", "")), *RUN_FLAGS,
            "--volume", f"{volume}:/var/lib/execbridge",
            "--env", "EXECBRIDGE_HOST=127.0.0.1", "--env", f"EXECBRIDGE_PORT={port}",
            "--env", f"EXECBRIDGE_UPSTREAM_URL={upstream}",
            "--env", "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS=1",
            image,
        )  # fmt: skip
        try:
            yield name
        finally:
            print(podman("logs", name, check=False).stdout[-3000:], file=sys.stderr)
            podman("rm", "--force", "--time", "30", name, check=False)
    finally:
        podman("volume", "rm", "--force", volume, check=False)


def main(image: str) -> None:
    with FakeUpstream(models=("databricks-claude-sonnet-4-5",)) as fake:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with container(image, fake.databricks_url, port) as name:
            wait_ready(url, name)
            step("podman run → /readyz 200", started)

            doctor = podman("exec", name, "execbridge", "doctor", check=False)
            print("\n".join(f"     {line}" for line in doctor.stdout.splitlines()))
            assert doctor.returncode == 0, doctor.stdout + doctor.stderr

            client = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
            code = "import numpy, pandas, sys; print(sys.version.split()[0], numpy.__version__, pandas.__version__)"
            for attempt in ("first", "second"):
                fake.reset(
                    [
                        Turn.text("Running.").call("code_execution", code=code),
                        Turn.text("Done."),
                    ]
                )
                t0 = time.monotonic()
                message = client.beta.messages.create(
                    model="databricks-claude-sonnet-4-5",
                    max_tokens=256,
                    betas=["code-execution-2025-05-22"],
                    tools=[{"type": "code_execution_20250522", "name": "code_execution"}],
                    messages=[{"role": "user", "content": "Which Python, numpy and pandas?"}],
                )
                results = [b for b in message.content if b.type == "code_execution_tool_result"]
                assert len(results) == 1 and results[0].content.type == "code_execution_result", message.content
                print(f"     sandbox says: {results[0].content.stdout.strip()}")
                assert results[0].content.return_code == 0, results[0].content
                step(f"{attempt} code-execution request through the SDK", t0)

            t0 = time.monotonic()
            podman("stop", "--time", "30", name)
            step("podman stop (SIGTERM: drain, stop containers)", t0)
            state = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            assert state == "0", f"serve exited {state}"
            client.close()
    failure_modes(image)


def doctor_names_the_policy(image: str, flags: list[str], expected: str) -> None:
    """``execbridge doctor`` in a container run with ``flags``: user namespaces fail, and the policy
    line names ``expected`` and the flag that fixes it."""
    doctor = podman(
        "run", "--rm", "--network", "none", *shlex.split(os.environ.get("PODMAN_LIMITS", "")), *flags,
        image, "doctor", check=False,
    )  # fmt: skip
    lines = doctor.stdout.splitlines()
    policy = next((line for line in lines if "user namespace policy" in line), "")
    print(f"     {policy[:150]}…")
    assert doctor.returncode == 1 and any(line.startswith("MISSING  user namespaces") for line in lines), doctor
    assert policy.startswith("MISSING") and expected in policy and "--cap-add SYS_ADMIN" in policy, policy


def failure_modes(image: str) -> None:
    """The seccomp failure modes the README names, in real containers: Docker's default profile (its
    user-namespace rules, as a profile file) and podman's own default profile without CAP_SYS_ADMIN."""
    without_sys_admin = [flag for flag in RUN_FLAGS if flag not in ("--cap-add", "SYS_ADMIN")]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as profile:
        json.dump(DOCKER_LIKE_PROFILE, profile)
        profile.flush()
        t0 = time.monotonic()
        doctor_names_the_policy(
            image, [*RUN_FLAGS, "--security-opt", f"seccomp={profile.name}"], "denies unshare(CLONE_NEWUSER)"
        )
        step("doctor under Docker's user-namespace rules names the fix", t0)
    t0 = time.monotonic()
    doctor_names_the_policy(image, without_sys_admin, "denies sethostname")
    step("doctor under podman's default profile names the fix", t0)


def wait_ready(url: str, name: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        running = podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        assert running == "true", "the container stopped before it was ready"
        assert time.monotonic() < deadline, "not ready within 120 s"
        time.sleep(0.2)


if __name__ == "__main__":
    main(sys.argv[1])
