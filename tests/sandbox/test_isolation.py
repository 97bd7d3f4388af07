"""What the sandbox itself lets a program see and do, checked from inside a real sandbox started
with production's argv (uid switch, namespaces, seccomp, read-only runtime) but without the executor."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from execbridge.sandbox.cgroups import CgroupLimits, detect
from execbridge.sandbox.doctor import DoctorReport

from ._direct import run_direct
from .conftest import TEST_UID_BASE, small_settings

SLOT = 900


@pytest.fixture
def settings(workdir: Path):
    return small_settings(workdir / "data")


@pytest.fixture
def workspace(workdir: Path) -> Path:
    ws = workdir / "ws"
    ws.mkdir(mode=0o700)
    os.chown(ws, TEST_UID_BASE + SLOT, TEST_UID_BASE + SLOT)
    return ws


async def sh(settings, workspace, command: str, **kw):
    return await run_direct(settings, command, slot=SLOT, workspace=workspace, **kw)


async def test_identity_capabilities_and_filters(doctor_report: DoctorReport, settings, workspace):
    r = await sh(
        settings, workspace, "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status"
    )
    assert r.return_code == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0:2] == ["1000", "1000"]
    status = dict(line.split(":\t") for line in lines[2:] if line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"


async def test_only_loopback_and_clean_environment(settings, workspace, monkeypatch):
    monkeypatch.setenv("EXECBRIDGE_UPSTREAM_API_KEY", "sk-secret-gateway-key")
    code = "import json, os, socket; print(json.dumps([sorted(n for _, n in socket.if_nameindex()), dict(os.environ)]))"
    r = await sh(settings, workspace, f"python3 -c '{code}'")
    assert r.return_code == 0, r.stderr
    ifaces, env = json.loads(r.stdout)
    assert ifaces == ["lo"]
    assert "sk-secret-gateway-key" not in r.stdout
    assert not any(k.startswith("EXECBRIDGE") for k in env)
    assert env["HOME"] == "/workspace" and env["USER"] == "user"


async def test_file_system_view(settings, workspace):
    script = r"""
for p in /root /home /var /sys /etc/shadow /etc/pip.conf /etc/resolv.conf /etc/machine-id /etc/ssl/private \
         /etc/ssh /work /srv; do [ -e "$p" ] && echo "VISIBLE $p"; done
echo "mnt: $(ls -A /mnt)"
touch /usr/x 2>/dev/null && echo "WROTE /usr"
touch /x 2>/dev/null && echo "WROTE /"
touch /etc/passwd 2>/dev/null && echo "WROTE /etc/passwd"
touch /opt/execbridge/runtime/x 2>/dev/null && echo "WROTE runtime"
echo hi > /workspace/f && echo ws-ok
echo hi > /tmp/f && echo tmp-ok
pwd; hostname; getent passwd user
"""
    r = await sh(settings, workspace, script)
    assert "VISIBLE" not in r.stdout and "WROTE" not in r.stdout, r.stdout
    assert "ws-ok" in r.stdout and "tmp-ok" in r.stdout
    assert "mnt: data\n" in r.stdout  # only the workspace again, at OpenAI's path (sandbox.base.DATA_ALIAS)
    assert "/workspace\nsandbox\nuser:x:1000:1000" in r.stdout
    # On the host, the file belongs to the container's own unprivileged uid.
    assert (workspace / "f").stat().st_uid == TEST_UID_BASE + SLOT


async def test_tmp_is_size_capped(settings, workspace):
    r = await sh(settings, workspace, "head -c 64M /dev/zero > /tmp/big; echo rc=$?; du -m /tmp/big | cut -f1")
    assert "rc=1" in r.stdout and "No space left" in r.stderr
    assert int(r.stdout.split()[-1]) <= settings.sandbox.tmp_mb


async def test_processes_start_inside_the_cgroup(settings, workspace):
    driver = detect(f"execbridge/test-{os.getpid()}")
    assert driver is not None, "no usable cgroups"
    driver.prepare()
    cg = driver.create("iso", CgroupLimits(256 << 20, 64, 1.0))
    try:
        r = await sh(settings, workspace, "cat /proc/self/cgroup; ulimit -u; ulimit -c", cgroup=cg)
        assert r.return_code == 0, r.stderr
        # Own cgroup namespace: the container sees itself at its root, not the host's hierarchy.
        assert "execbridge" not in r.stdout
        assert r.stdout.split()[-2:] == ["64", "0"]  # RLIMIT_NPROC = pids, no core dumps
        assert cg.memory_peak() and cg.memory_peak() > 0  # the sandbox's memory was charged here
    finally:
        await cg.kill_all()
        cg.remove()
        driver.remove_parent()


async def test_no_nested_namespaces_mounts_or_ptrace(settings, workspace):
    call = "python3 -c 'import ctypes, sys; l = ctypes.CDLL(None); sys.exit(0 if {} == 0 else 1)'"
    script = f"""
unshare -U true 2>/dev/null && echo "ESCAPE unshare-U"
unshare -n true 2>/dev/null && echo "ESCAPE unshare-n"
unshare -m true 2>/dev/null && echo "ESCAPE unshare-m"
{call.format("l.ptrace(0, 0, 0, 0)")} && echo "ESCAPE ptrace"
{call.format('l.mount(b"none", b"/tmp", b"tmpfs", 0, None)')} && echo "ESCAPE mount"
setarch -R true 2>/dev/null && echo "ESCAPE aslr"
echo done
"""
    r = await sh(settings, workspace, script)
    assert "ESCAPE" not in r.stdout, r.stdout
    assert r.stdout.strip().endswith("done")
