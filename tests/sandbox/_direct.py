"""Run a shell command in a real sandbox *without* the executor: the bwrap argv, uid switch, seccomp
and (optionally) cgroup of production, with a tiny payload that just ``exec``\\ s bash.

Used by the isolation tests to check what the sandbox itself allows, independent of the executor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path

from execbridge.config import Settings
from execbridge.sandbox.bwrap import EXECUTOR_PATH, Payloads
from execbridge.sandbox.cgroups import ContainerCgroup
from execbridge.sandbox.launch import LaunchOptions, sandbox_spec, spawn
from execbridge.sandbox.seccomp import build_program

EXEC_BASH = b"import os, sys\nos.execv('/bin/bash', ['bash', '-c', sys.argv[1]])\n"


@dataclass(frozen=True)
class Ran:
    return_code: int
    stdout: str
    stderr: str


async def run_direct(
    settings: Settings,
    command: str,
    *,
    slot: int,
    workspace: Path,
    cgroup: ContainerCgroup | None = None,
    timeout: float = 30.0,
) -> Ran:
    sb = settings.sandbox
    spec = sandbox_spec(sb, sb.uid_base + slot, workspace)
    spec = replace(spec, command=(spec.command[0], "-I", "-S", EXECUTOR_PATH, command))
    payloads = Payloads(executor=EXEC_BASH, seccomp=build_program().bpf)
    proc = await spawn(spec, payloads, cgroup=cgroup, nproc=sb.pids, options=LaunchOptions())
    assert proc.stdin is not None
    proc.stdin.close()
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return Ran(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
