"""Starting one bubblewrap sandbox process: own mount namespace → cgroup join → workspace mount →
uid switch → bwrap → interpreter.

    /usr/bin/unshare --mount --propagation private -- \
      /bin/sh -c '<join cgroups; ulimit>' … /bin/sh -c '<mount /dev/loopN at the mount point>' … \
      /usr/bin/setpriv --reuid U --regid U … /usr/bin/bwrap … python3 executor.py

The workspace is mounted in a mount namespace made for this one sandbox (see ``disk``), so it never
enters the host's mount table and bwrap's own namespace copies a table of constant size.

Each stage ``exec``\\ s the next, so the gateway's direct child *is* bubblewrap in the end, and
``--die-with-parent`` ties the sandbox's life to the gateway's. The gateway process never forks a
copy of itself (no ``preexec_fn``): ``asyncio`` spawns with ``vfork``/``posix_spawn``.

This module must not pass the gateway's environment or file descriptors on: the child gets
``SPAWN_ENV`` and only the payload fds. Spawn from the event loop thread (a parent-death signal is
tied to the spawning *thread*).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from execbridge.config import SandboxSettings
from execbridge.sandbox.base import DEFAULT_WORKSPACE
from execbridge.sandbox.bwrap import (
    BWRAP,
    EXECUTOR_PATH,
    SPAWN_ENV,
    PayloadFds,
    Payloads,
    SandboxSpec,
    bwrap_options,
    options_fd,
    payload_fds,
    sandbox_env,
    setpriv_argv,
)
from execbridge.sandbox.cgroups import ContainerCgroup
from execbridge.sandbox.disk import MOUNT_OPTIONS
from execbridge.sandbox.executor_image import executor_argv

UNSHARE = "/usr/bin/unshare"
# $1 device, $2 mount point, $3 uid:gid for the workspace's root (a fresh image's is root's), then
# the command. Exit 125 (like the cgroup join) if either fails.
MOUNT_SCRIPT = f'mount -t ext4 -o {MOUNT_OPTIONS} "$1" "$2" && chown "$3" "$2" || exit 125; shift 3; exec "$@"'

OUTPUT_ROOT = "/tmp/outputs"  # parents of each command's $OUTPUT_DIR, on the private /tmp

# The executor's frames can be large (file contents); asyncio's default 64 KiB limit is for lines.
STREAM_LIMIT = 1 << 20


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """How strongly to wrap: every field is on unless the doctor found the protection missing."""

    switch_uid: bool = True  # run bwrap under the container's own unprivileged host uid
    seccomp: bool = True


def sandbox_spec(
    settings: SandboxSettings,
    host_uid: int,
    workspace: Path,
    workspace_path: str = DEFAULT_WORKSPACE,
    *,
    repl: bool = False,
    memory_mb: int | None = None,
) -> SandboxSpec:
    """The spec of a container's sandbox: its uid and workspace, and the executor as its command.

    ``workspace`` (a host directory) appears at ``workspace_path`` inside, the container's workspace
    path; the executor is told it too.

    ``kill_all``: the executor is alone in its PID namespace, so after each command it kills every
    other process there (background jobs, daemons that ``setsid`` away).

    ``repl``: the spec of the container's persistent Python REPL instead: the same workspace and uid,
    namespaces of its own (so no command can see or signal it), the executor as its supervisor.
    """
    command = executor_argv(
        settings.python,
        EXECUTOR_PATH,
        workspace=workspace_path,
        output_root=OUTPUT_ROOT,
        kill_all=True,
        env=sandbox_env(settings.runtime_dir, workspace_path),
        repl=repl,
    )
    return SandboxSpec(
        host_uid=host_uid,
        host_gid=host_uid,
        workspace=workspace,
        workspace_path=workspace_path,
        command=tuple(command),
        runtime_dir=settings.runtime_dir,
        # tmpfs counts against memory: at most half the container's (``memory_mb``, else the sandbox's)
        tmp_bytes=min(settings.tmp_mb, max(1, (memory_mb or settings.memory_mb) // 2)) << 20,
    )


def wrap_argv(
    bwrap_cmd: list[str],
    spec: SandboxSpec,
    *,
    cgroup: ContainerCgroup | None,
    nproc: int,
    options: LaunchOptions,
    device: str | None = None,
) -> list[str]:
    """Put the uid switch, the workspace mount (``device`` at ``spec.workspace``, in a mount namespace
    of the sandbox's own) and the cgroup join around a bwrap command line."""
    argv = bwrap_cmd
    if options.switch_uid:
        argv = setpriv_argv(spec.host_uid, spec.host_gid, argv)
    if device is not None:
        owner = f"{spec.host_uid}:{spec.host_gid}" if options.switch_uid else "0:0"
        argv = ["/bin/sh", "-c", MOUNT_SCRIPT, "execbridge-mount", device, str(spec.workspace), owner, *argv]
    if cgroup is not None:
        argv = cgroup.join_argv(argv, nproc=nproc if options.switch_uid else 0)
    if device is not None:
        argv = [UNSHARE, "--mount", "--propagation", "private", "--", *argv]
    return argv


async def spawn(
    spec: SandboxSpec,
    payloads: Payloads,
    *,
    cgroup: ContainerCgroup | None,
    nproc: int,
    options: LaunchOptions,
    device: str | None = None,
    stderr: int = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """Start the sandbox with pipes on stdin/stdout (the executor's channel) and ``stderr``.

    bwrap gets its options through ``--args FD`` (``bwrap.options_fd``): they name host paths, and
    bwrap's command line is ``/proc/1/cmdline`` inside the sandbox.
    """
    with _command_line(spec, payloads, cgroup=cgroup, nproc=nproc, options=options, device=device) as (argv, fds):
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            pass_fds=fds,
            env=dict(SPAWN_ENV),
            cwd="/",
            limit=STREAM_LIMIT,
        )


class SandboxProcess:
    """The sandbox's process, started with ``subprocess.Popen`` (``vfork``) and reaped by polling.

    Not ``asyncio.create_subprocess_exec``: under uvloop (the sandbox host's loop) that *forks* the
    whole process, which cost 12 ms with a small host and 128 ms with 500 MiB of it here, so every new
    sandbox got slower as live containers made the host bigger; ``vfork`` costs ≈ 1 ms whatever the
    size. And no child watcher, pidfd or thread per child: ``returncode`` asks the kernel
    (``waitpid(WNOHANG)``, ≈ 1 µs) whenever it is read, so a live sandbox costs this process only the
    descriptors of its channel and its stderr.
    """

    def __init__(
        self, popen: subprocess.Popen[bytes], stderr: asyncio.StreamReader, stderr_pipe: asyncio.BaseTransport
    ) -> None:
        self._popen = popen
        self._stderr_pipe = stderr_pipe
        self.pid = popen.pid
        self.stderr = stderr
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (never by us twice): it is gone
                pid, status = self.pid, 0
            if pid == self.pid:
                self._returncode = os.waitstatus_to_exitcode(status)
                self._popen.returncode = self._returncode  # Popen must not reap or warn later
        return self._returncode

    def close_stderr(self) -> None:
        """Close this end of the stderr pipe (at EOF it closes itself; a sandbox stopped before its
        last process let go of the pipe would otherwise keep the descriptor open)."""
        self._stderr_pipe.close()

    def kill(self) -> None:
        """SIGKILL, while the pid is still ours (not yet reaped)."""
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        delay = 0.001
        while (code := self.returncode) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code


@dataclass(frozen=True, slots=True)
class Spawned:
    """A started sandbox and the two ends of its executor's channel (one socket)."""

    proc: SandboxProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def spawn_with_channel(
    spec: SandboxSpec,
    payloads: Payloads,
    *,
    cgroup: ContainerCgroup | None,
    nproc: int,
    options: LaunchOptions,
    device: str | None = None,
) -> Spawned:
    """As ``spawn``, but started with ``vfork`` (``SandboxProcess``), and the executor's stdin and
    stdout are one end of a socket pair: a live sandbox holds two descriptors of this process (the
    channel and stderr), not three."""
    loop = asyncio.get_running_loop()
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        launch = _command_line(spec, payloads, cgroup=cgroup, nproc=nproc, options=options, device=device)
        with launch as (argv, fds), child:
            popen = _vfork_exec(argv, channel=child.fileno(), pass_fds=fds)
        assert popen.stderr is not None
        stderr = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stderr, loop=loop), popen.stderr
        )
        reader, writer = await asyncio.open_connection(sock=parent, limit=STREAM_LIMIT)
    except BaseException:
        parent.close()
        raise
    return Spawned(SandboxProcess(popen, stderr, transport), reader, writer)


def _vfork_exec(argv: list[str], *, channel: int, pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with ``channel`` as stdin and stdout and a pipe as stderr. Synchronous on purpose:
    ``vfork`` + ``exec`` return in about a millisecond, without copying this process."""
    return subprocess.Popen(
        argv, stdin=channel, stdout=channel, stderr=subprocess.PIPE, pass_fds=pass_fds, env=dict(SPAWN_ENV), cwd="/"
    )


def _bwrap_options(spec: SandboxSpec, fds: PayloadFds, options: LaunchOptions) -> list[str]:
    bw_options = bwrap_options(spec, fds)
    if not options.seccomp:
        i = bw_options.index("--seccomp")
        del bw_options[i : i + 2]
    return bw_options


@contextlib.contextmanager
def _command_line(
    spec: SandboxSpec,
    payloads: Payloads,
    *,
    cgroup: ContainerCgroup | None,
    nproc: int,
    options: LaunchOptions,
    device: str | None,
) -> Iterator[tuple[list[str], tuple[int, ...]]]:
    """The sandbox's command line and the descriptors it needs (the payloads and bwrap's ``--args``
    file), open until the process is started."""
    with payload_fds(payloads, home=spec.workspace_path) as fds:
        bw_options = _bwrap_options(spec, fds, options)
        with options_fd(bw_options) as args_fd:
            bw = [BWRAP, "--args", str(args_fd), "--", *spec.command]
            argv = wrap_argv(bw, spec, cgroup=cgroup, nproc=nproc, options=options, device=device)
            yield argv, (*fds.all(), args_fd)
