"""The sandbox runtime taken away at run time, under a real ``execbridge serve``: bubblewrap or the
runtime directory disappears from under a running gateway (in a mount namespace of its own, so the rest
of the machine keeps both). A new container is refused with a clear error, ``/readyz`` says what is
missing, ``execbridge doctor`` names it (and only it), a container already running goes on, and once
the runtime is back everything works again."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anthropic
import httpx
import pytest

from execbridge.testing import Turn

from ._mounts import PRIVATE_MOUNTS, in_mounts_of
from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts over the runtime in a mount namespace")

RUNTIME = Path("/opt/execbridge/runtime")
BWRAP = Path("/usr/bin/bwrap")

# what goes, how it is taken away (inside the gateway's mount namespace), what /readyz and the error
# say, and the doctor's line for it
CASES = {
    "runtime directory emptied": (
        RUNTIME,
        ("mount", "-t", "tmpfs", "-o", "ro,size=1m,mode=0755", "tmpfs", str(RUNTIME)),
        f"the runtime interpreter {RUNTIME}/bin/python3 is missing or not executable",
        "MISSING  runtime interpreter",
    ),
    "bubblewrap not executable": (
        BWRAP,
        ("mount", "--bind", "{empty}", str(BWRAP)),
        f"bubblewrap ({BWRAP}) is missing or not executable",
        "MISSING  bubblewrap",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_vanished_runtime_is_named_by_the_error_readyz_and_doctor(fake_upstream, tmp_path: Path, case: str) -> None:
    target, take_away, problem, doctor_line = CASES[case]
    empty = tmp_path / "empty"  # a plain file, mode 0644: what bwrap looks like once it cannot run
    empty.write_bytes(b"")
    command = tuple(part.format(empty=empty) for part in take_away)
    with serve(fake_upstream, tmp_path, prefix=PRIVATE_MOUNTS, EXECBRIDGE_SANDBOX__SPARE_CONTAINERS="0") as gateway:
        running = _run(gateway, "echo kept > kept.txt", None)[0]
        assert _ready(gateway) == (200, None)
        in_mounts_of(gateway, *command)
        try:
            gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command="echo new")])
            with pytest.raises(anthropic.InternalServerError) as error:
                _create(gateway, None)
            gateway.fake.reset()
            assert error.value.body["error"] == {
                "type": "api_error",
                "message": f"the sandbox runtime is missing on this server: {problem} (see execbridge doctor)",
                "details": {"error_code": "sandbox_runtime_missing"},
            }
            assert _ready(gateway) == (503, {"ok": False, "detail": problem})

            doctor = in_mounts_of(
                gateway,
                *(sys.executable, "-m", "execbridge", "--data-dir", str(tmp_path / "doctor"), "doctor"),
                check=False,
            )
            assert doctor.returncode == 1
            missing = [line for line in doctor.stdout.splitlines() if line.startswith("MISSING")]
            assert missing[0].startswith(doctor_line), doctor.stdout
            if target == RUNTIME:
                # Only what is gone: the probe sandbox runs on the system's interpreter when the runtime's
                # is gone, so namespaces and seccomp are still checked, and found.
                assert not any(line.startswith("MISSING  user namespaces") for line in missing), doctor.stdout

            # A container whose sandbox runs already keeps its own view of the runtime.
            assert _run(gateway, "cat kept.txt", running) == (running, "kept\n")
        finally:
            in_mounts_of(gateway, "umount", str(target))
        assert _ready(gateway) == (200, None)
        assert _run(gateway, "echo back", None)[1] == "back\n"


def _ready(gateway: Gateway) -> tuple[int, dict[str, object] | None]:
    answer = httpx.get(f"{gateway.url}/readyz")
    sandbox = answer.json()["checks"]["sandbox"]
    return answer.status_code, None if sandbox["ok"] else sandbox


def _create(gateway: Gateway, container: str | None) -> anthropic.types.beta.BetaMessage:
    return sdk_client(gateway.url, CLIENT_KEY).beta.messages.create(
        model="databricks-claude-sonnet-4-5",
        max_tokens=256,
        betas=["code-execution-2025-08-25"],
        tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
        container=container,
        messages=[{"role": "user", "content": "run it"}],
    )


def _run(gateway: Gateway, command: str, container: str | None) -> tuple[str, str]:
    """(container id, stdout) of one bash command."""
    gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command=command), Turn.text("Done.")])
    message = _create(gateway, container)
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert message.container is not None and len(results) == 1, message.content
    assert results[0].content.type == "bash_code_execution_result", results[0].content
    return message.container.id, results[0].content.stdout
