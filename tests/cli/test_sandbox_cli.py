"""The command line as a script would use it: one JSON object per exec, containers that persist
between invocations, ls and rm, and doctor's report and exit status."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from execbridge.cli import main

UID_BASE = 460_000 + (os.getpid() % 20) * 1000


@pytest.fixture
def run(tmp_path: Path):
    # A private data dir (0700 under pytest's tmp): live mounts go to /run/execbridge/<instance>.
    env = {
        "EXECBRIDGE_SANDBOX__UID_BASE": str(UID_BASE),
        "EXECBRIDGE_SANDBOX__MEMORY_MB": "256",
        "EXECBRIDGE_SANDBOX__DISK_MB": "64",
        "EXECBRIDGE_SANDBOX__PIDS": "64",
    }
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["--data-dir", str(tmp_path / "data"), *args], env=env, catch_exceptions=False)

    return invoke


def test_exec_creates_a_container_and_reuses_it(run):
    first = run("sandbox", "exec", "--bash", "echo hello > f; cat f; pwd")
    assert first.exit_code == 0, first.output
    out = json.loads(first.stdout)
    assert set(out) == {"container_id", "stdout", "stderr", "return_code", "duration_ms"}
    assert (out["stdout"], out["return_code"]) == ("hello\n/workspace\n", 0)
    cid = out["container_id"]

    again = run("sandbox", "exec", "--container", cid, "--python", "print(open('f').read().strip()); exit(3)")
    out2 = json.loads(again.stdout)
    assert (out2["container_id"], out2["stdout"], out2["return_code"]) == (cid, "hello\n", 3)

    slow = run("sandbox", "exec", "--container", cid, "--bash", "sleep 30", "--timeout", "0.5")
    out3 = json.loads(slow.stdout)
    assert out3["error_code"] == "execution_time_exceeded"

    listed = run("sandbox", "ls", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["owner"]) for r in rows] == [(cid, "cli")]

    assert run("sandbox", "rm", cid).exit_code == 0
    assert run("sandbox", "ls").stdout == ""
    gone = run("sandbox", "exec", "--container", cid, "--bash", "true")
    assert gone.exit_code == 1 and "not found" in gone.stderr


def test_owners_are_separate(run):
    out = json.loads(run("sandbox", "exec", "--owner", "alice", "--bash", "true").stdout)
    other = run("sandbox", "exec", "--owner", "bob", "--container", out["container_id"], "--bash", "true")
    assert other.exit_code == 1 and "not found" in other.stderr
    assert run("sandbox", "ls", "--owner", "bob").stdout == ""
    assert out["container_id"] in run("sandbox", "ls", "--owner", "alice").stdout


def test_exec_needs_exactly_one_program(run):
    assert run("sandbox", "exec").exit_code == 2
    assert run("sandbox", "exec", "--bash", "true", "--python", "pass").exit_code == 2


def test_doctor_reports_every_protection(run):
    r = run("doctor")
    lines = r.stdout.splitlines()
    assert r.exit_code == 0, r.output
    assert len(lines) == 20 and all(line.startswith("ok") for line in lines)
    for name in (
        "bubblewrap",
        "user namespaces",
        "network namespace",
        "seccomp filter",
        "cgroup memory",
        "cgroup pids",
        "cgroup cpu",
        "workspace disk cap",
        "unprivileged host uid",
        "runtime python version",
        "socket families",
        "masked /proc",
        "user namespace policy",
        "privilege split",
        "quotas",
        "live budget",
        "leftovers",
    ):
        assert any(name in line for line in lines), name
    split = next(line for line in lines if "privilege split" in line)
    assert "serve runs the gateway as 'execbridge'" in split
    quotas = next(line for line in lines if "quotas" in line)
    assert "live containers ≤ 2000 (≤ 500 per key)" in quotas and "disk floor 256 MiB" in quotas
    budget = next(line for line in lines if "live budget" in line)
    assert "2000 live containers" in budget and "file descriptors" in budget and "from 90%" in budget


def test_doctor_says_when_the_privilege_split_is_off_or_cannot_run(run, monkeypatch):
    monkeypatch.setenv("EXECBRIDGE_PRIVILEGE_SPLIT", "false")
    off = run("doctor")
    assert off.exit_code == 1
    assert "MISSING  privilege split        off (privilege_split = false)" in off.stdout
    assert "the process that parses requests from the network runs as root" in off.stdout
    monkeypatch.setenv("EXECBRIDGE_PRIVILEGE_SPLIT", "true")
    monkeypatch.setenv("EXECBRIDGE_GATEWAY_USER", "no-such-user-here")
    missing = run("doctor")
    assert missing.exit_code == 1
    assert "the gateway user 'no-such-user-here' does not exist" in missing.stdout


def test_doctor_exits_non_zero_and_says_what_is_missing(run, monkeypatch):
    from execbridge.cli import doctor as doctor_cli
    from execbridge.sandbox.doctor import Check, DoctorReport

    async def fake_diagnose(settings):
        return DoctorReport(
            (
                Check("bubblewrap", True, "/usr/bin/bwrap", ""),
                Check("cgroup pids", False, "controller pids not available", "a fork bomb can exhaust the host"),
            )
        )

    monkeypatch.setattr(doctor_cli, "diagnose", fake_diagnose)
    r = run("doctor")
    assert r.exit_code == 1
    assert "MISSING  cgroup pids" in r.stdout and "a fork bomb can exhaust the host" in r.stdout
    assert "allow_weak_isolation" in r.stderr


def test_doctor_sees_open_socket_families_and_unmasked_proc(run, monkeypatch):
    # The same checks, run against a sandbox without the family rules and without the /proc masks.
    from execbridge.sandbox import bwrap, seccomp

    monkeypatch.setattr(seccomp, "_family_rules", lambda sc, f: [])
    monkeypatch.setattr(bwrap, "_proc_args", lambda: ["--proc", "/proc"])
    r = run("doctor")
    assert r.exit_code == 1
    missing = {line.split("  ")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("MISSING")}
    assert set(missing) == {"socket families", "masked /proc"}, r.stdout
    assert "AF_VSOCK: opened" in missing["socket families"]
    assert "/proc/cmdline" in missing["masked /proc"] and "/proc/fs" in missing["masked /proc"]
