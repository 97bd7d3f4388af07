"""Cgroups taken away from a running ``execbridge serve``: a controller's hierarchy turned read-only
(in the gateway's own mount namespace, so the rest of the machine is untouched), and the gateway's
parent cgroup removed by someone else. A new container is refused with a clear error and leaves no
half-made cgroup behind, containers already running go on, ``execbridge doctor`` says which controller
failed, and service comes back with the hierarchy; a removed parent is simply made again."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import anthropic
import pytest

from execbridge.testing import Turn

from ._bash import ask_with_code_execution, run_bash
from ._mounts import PRIVATE_MOUNTS, change_mounts_of, in_mounts_of
from .conftest import Gateway, serve

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/sys/fs/cgroup/memory/cgroup.procs").exists(),
    reason="remounts cgroup v1 hierarchies in a mount namespace",
)

CONTROLLERS = ("memory", "pids", "cpu")


@pytest.mark.parametrize("controller", ["memory", "pids"])  # the first one made, and one after it
def test_a_read_only_cgroup_hierarchy_refuses_new_containers_cleanly(fake_upstream, tmp_path: Path, controller) -> None:
    hierarchy = f"/sys/fs/cgroup/{controller}"
    with serve(fake_upstream, tmp_path, prefix=PRIVATE_MOUNTS, EXECBRIDGE_SANDBOX__SPARE_CONTAINERS="0") as gateway:
        instance = _instance(gateway)
        running = run_bash(gateway, "echo kept > kept.txt", None).container
        before = _cgroups(instance), _images(tmp_path)
        assert before == ({c: ["1"] for c in CONTROLLERS}, ["1.img"])
        change_mounts_of(gateway, "mount", "-o", "remount,bind,ro", hierarchy)
        try:
            gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command="echo new")])
            with pytest.raises(anthropic.InternalServerError) as error:
                ask_with_code_execution(gateway, None)
            gateway.fake.reset()
            assert error.value.body["error"] == {
                "type": "api_error",
                "message": "cannot create the container's cgroup: Read-only file system",
                "details": {"error_code": "cgroups_unavailable"},
            }
            # Nothing half made: no cgroup directory in the other controllers, no workspace image.
            assert (_cgroups(instance), _images(tmp_path)) == before

            doctor = in_mounts_of(
                gateway,
                *(sys.executable, "-m", "execbridge", "--data-dir", str(tmp_path / "doctor"), "doctor"),
                check=False,
            )
            assert doctor.returncode == 1
            assert f"MISSING  cgroup {controller}" in doctor.stdout, doctor.stdout

            kept = run_bash(gateway, "cat kept.txt", running)
            assert (kept.container, kept.stdout) == (running, "kept\n")
        finally:
            change_mounts_of(gateway, "mount", "-o", "remount,bind,rw", hierarchy)
        assert run_bash(gateway, "echo back", None).stdout == "back\n"


def test_a_removed_parent_cgroup_is_made_again(fake_upstream, tmp_path: Path) -> None:
    with serve(fake_upstream, tmp_path, EXECBRIDGE_SANDBOX__SPARE_CONTAINERS="0") as gateway:
        instance = _instance(gateway)
        parents = [Path(f"/sys/fs/cgroup/{c}/execbridge/{instance}") for c in CONTROLLERS]
        limit = (parents[0] / "memory.limit_in_bytes").read_text()
        for parent in parents:  # empty: no container yet, no spare
            parent.rmdir()
        assert run_bash(gateway, "echo new", None).stdout == "new\n"
        assert all(p.is_dir() for p in parents)
        assert (parents[0] / "memory.limit_in_bytes").read_text() == limit  # the cap on all containers too
        assert _cgroups(instance) == {c: ["1"] for c in CONTROLLERS}
    assert "parent cgroup" in gateway.log.read_text()


def _instance(gateway: Gateway) -> str:
    found = re.search(r"/run/execbridge/([0-9a-f]+)/sandbox\.sock", gateway.log.read_text())
    assert found, gateway.log.read_text()
    return found.group(1)


def _cgroups(instance: str) -> dict[str, list[str]]:
    """The container cgroups of ``instance`` in each controller."""
    return {
        c: sorted(p.name for p in Path(f"/sys/fs/cgroup/{c}/execbridge/{instance}").iterdir() if p.is_dir())
        for c in CONTROLLERS
    }


def _images(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "sandbox").rglob("*.img"))
