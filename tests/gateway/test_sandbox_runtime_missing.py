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

from ._bash import ask_with_code_execution, run_bash
from ._mounts import PRIVATE_MOUNTS, change_mounts_of, in_mounts_of
from .conftest import Gateway, serve

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
        running = run_bash(gateway, "echo kept > kept.txt", None).container
        assert _ready(gateway) == (200, None)
        change_mounts_of(gateway, *command)
        try:
            gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command="echo new")])
            with pytest.raises(anthropic.InternalServerError) as error:
                ask_with_code_execution(gateway, None)
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
            kept = run_bash(gateway, "cat kept.txt", running)
            assert (kept.container, kept.stdout) == (running, "kept\n")
        finally:
            change_mounts_of(gateway, "umount", str(target))
        assert _ready(gateway) == (200, None)
        assert run_bash(gateway, "echo back", None).stdout == "back\n"


def _ready(gateway: Gateway) -> tuple[int, dict[str, object] | None]:
    answer = httpx.get(f"{gateway.url}/readyz")
    sandbox = answer.json()["checks"]["sandbox"]
    return answer.status_code, None if sandbox["ok"] else sandbox
