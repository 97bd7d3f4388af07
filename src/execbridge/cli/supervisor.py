"""The privilege split of ``serve`` started as root: a root sandbox host and an unprivileged gateway.

Job: prepare the data directory so the gateway user owns the store and files and only root reaches
the sandbox part; start ``execbridge sandbox-host`` (root) and wait until it answers; start the gateway
(``execbridge serve --sandbox-host unix:PATH``) as the gateway user; restart the sandbox host if it
dies (and say so); stop both when the gateway stops or on SIGTERM/SIGINT. This process parses no
request and holds no container: it only forks, waits and forwards signals (as OpenSSH's monitor).

Layout of the data directory afterwards (docs/sandbox.md, "Privilege split"):

    DATA_DIR              root:GATEWAY_GROUP 1770  (sticky: the gateway creates its files here but can
                                                   neither rename nor remove what root made)
    DATA_DIR/sandbox      root:root 0700           images, container records, the lock
    DATA_DIR/execbridge.sqlite3*, DATA_DIR/files   the gateway user's

Secrets the gateway needs from files only root may read (the ``--config`` file, a Databricks config
file) reach it as sealed in-memory copies on inherited descriptors, never as new files on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from execbridge.config import Settings
from execbridge.sandbox.gateway_user import GatewayUser, SplitError, check_gateway_can_run, check_reachable

log = logging.getLogger(__name__)

_HOST_START_TIMEOUT_S = 120.0  # the host's doctor and start-up reconciliation run before it listens
_HOST_STOP_TIMEOUT_S = 120.0  # stopping live containers (unmounts) before the host exits
_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls into it


def _stop_with_parent(parent: int) -> None:
    """In the child, after fork (and after the gateway's setuid, which clears the setting): SIGTERM it
    when this supervisor dies, however it dies, so a ``kill -9`` of the supervisor does not leave a
    gateway holding the port or a host holding containers. The supervisor has no threads, so running
    this between fork and exec is safe; a parent that died before the call is caught by the check."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def prepare_data_dir(settings: Settings, user: GatewayUser) -> None:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_reachable(data_dir, user)
    except SplitError as exc:
        raise SplitError(
            f"{exc}: move it to a directory it can reach (such as /var/lib/execbridge) and pass --data-dir"
        ) from None
    os.chown(data_dir, 0, user.gid)
    os.chmod(data_dir, 0o1770)
    sandbox = settings.sandbox_dir
    if sandbox.is_symlink() or (sandbox.exists() and (not sandbox.is_dir() or sandbox.stat().st_uid != 0)):
        raise SplitError(f"{sandbox} must be a directory owned by root (is it the gateway's? remove it)")
    sandbox.mkdir(mode=0o700, exist_ok=True)
    os.chown(sandbox, 0, 0)
    os.chmod(sandbox, 0o700)
    for name in ("execbridge.sqlite3", "execbridge.sqlite3-wal", "execbridge.sqlite3-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chown(data_dir / name, user.uid, user.gid, follow_symlinks=False)
    files = settings.files_dir
    files.mkdir(mode=0o700, exist_ok=True)
    if files.lstat().st_uid != user.uid:  # made by a root gateway before the split: hand it over once
        for root, dirs, names in os.walk(files):
            for name in (*dirs, *names):
                os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)
        os.chown(files, user.uid, user.gid, follow_symlinks=False)


def _sealed_copy(path: Path, user: GatewayUser) -> int:
    """An inheritable, read-only in-memory copy of ``path`` for the gateway (root may read it; it may not)."""
    fd = os.memfd_create(f"execbridge-{path.name}", os.MFD_ALLOW_SEALING)
    os.write(fd, path.read_bytes())
    os.fchown(fd, user.uid, user.gid)
    os.fchmod(fd, 0o400)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class Supervisor:
    """Runs the sandbox host and the gateway until the gateway ends; ``run()`` returns its exit status."""

    def __init__(
        self,
        settings: Settings,
        user: GatewayUser,
        *,
        config_file: Path | None,
        log_level: str,
        log_format: str = "text",
        serve_args: Sequence[str],
        env: dict[str, str],
    ) -> None:
        self._settings = settings
        self._user = user
        self._config_file = config_file
        self._log_level = log_level
        self._log_format = log_format
        self._serve_args = list(serve_args)
        self._env = env
        self.socket_path = settings.sandbox_socket_path
        self._host: subprocess.Popen[bytes] | None = None
        self._gateway: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def _base(self) -> list[str]:
        data_dir = str(self._settings.data_dir.resolve())
        return [
            *(sys.executable, "-m", "execbridge", "--data-dir", data_dir),
            *("--log-level", self._log_level, "--log-format", self._log_format),
        ]

    def _start_host(self) -> subprocess.Popen[bytes]:
        command = [*self._base()]
        if self._config_file is not None:
            command += ["--config", str(self._config_file)]
        command += ["sandbox-host", "--socket", str(self.socket_path), "--group", str(self._user.gid)]
        if self._settings.sandbox.allow_weak_isolation:
            command.append("--allow-weak-isolation")
        parent = os.getpid()
        host = subprocess.Popen(command, env=self._env, preexec_fn=lambda: _stop_with_parent(parent))
        deadline = time.monotonic() + _HOST_START_TIMEOUT_S
        while not _answers(self.socket_path):
            if host.poll() is not None:
                raise SplitError(f"the sandbox host exited with status {host.returncode} while starting")
            if time.monotonic() > deadline:
                host.kill()
                raise SplitError(f"the sandbox host did not listen within {_HOST_START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        return host

    def _start_gateway(self) -> subprocess.Popen[bytes]:
        env = {**self._env, "HOME": self._user.home, "USER": self._user.name, "LOGNAME": self._user.name}
        fds: list[int] = []
        command = self._base()
        if self._config_file is not None:
            fds.append(_sealed_copy(self._config_file, self._user))
            command += ["--config", f"/proc/self/fd/{fds[-1]}"]
        databricks_cfg = Path(self._env.get("DATABRICKS_CONFIG_FILE") or Path.home() / ".databrickscfg")
        if self._settings.provider == "databricks" and databricks_cfg.is_file():
            fds.append(_sealed_copy(databricks_cfg, self._user))
            env["DATABRICKS_CONFIG_FILE"] = f"/proc/self/fd/{fds[-1]}"
        command += ["serve", *self._serve_args, "--sandbox-host", f"unix:{self.socket_path}"]
        parent = os.getpid()
        try:
            return subprocess.Popen(
                command,
                env=env,
                user=self._user.uid,
                group=self._user.gid,
                extra_groups=[],
                pass_fds=fds,
                cwd="/",
                preexec_fn=lambda: _stop_with_parent(parent),
            )
        finally:
            for fd in fds:
                os.close(fd)

    def _forward(self, signum: int, _frame: object) -> None:
        self._stopping = True
        if self._gateway is not None and self._gateway.poll() is None:
            self._gateway.send_signal(signum)

    def run(self) -> int:
        check_gateway_can_run(self._user)
        prepare_data_dir(self._settings, self._user)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._forward)
        self._host = self._start_host()
        restarts = 0
        try:
            self._gateway = self._start_gateway()
            while True:
                pid, status = os.wait()
                if self._gateway.pid == pid:
                    self._gateway.returncode = code = os.waitstatus_to_exitcode(status)
                    # uvicorn ends by re-raising the signal it stopped on: asked to stop, that is success.
                    if self._stopping and code in (-signal.SIGTERM, -signal.SIGINT):
                        return 0
                    return code if code >= 0 else 1
                if self._host.pid == pid and not self._stopping:
                    self._host.returncode = os.waitstatus_to_exitcode(status)
                    backoff = _RESTART_BACKOFF_S[min(restarts, len(_RESTART_BACKOFF_S) - 1)]
                    log.error(
                        "the sandbox host exited (status %s); restarting it in %.0f s",
                        self._host.returncode,
                        backoff,
                    )
                    print(
                        f"execbridge: sandbox host died (status {self._host.returncode}); restarting", file=sys.stderr
                    )
                    time.sleep(backoff)
                    restarts += 1
                    self._host = self._start_host()
                    log.error("the sandbox host is back (restart %d)", restarts)
        finally:
            self._stop()

    def _stop(self) -> None:
        for process, timeout in ((self._gateway, 30.0), (self._host, _HOST_STOP_TIMEOUT_S)):
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True
