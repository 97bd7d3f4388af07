"""Turning a slot into a live sandbox and back: workspace, cgroup, launch, teardown.

The ``Provisioner`` holds everything that is the same for every sandbox of one manager (settings,
the seccomp program and executor script as payloads, the cgroup driver, the workspace store, which
protections are on) and performs the per-slot steps in the right order:

    start:  cgroup create (limits) → spawn (joins the cgroup before exec) → executor ready
    stop:   kill the sandbox → kill whatever is left in the cgroup → remove the cgroup

Workspaces are separate steps (``create_workspace`` / ``open_workspace`` / ``close_workspace`` /
``destroy_workspace``) because eviction keeps them and deletion does not.

``Provisioner.from_report`` builds one from the settings and the doctor's report: each protection
the report found missing is left out (cgroups, disk caps, seccomp, the uid switch).

This module must not know about owners, ids or the store: that is the manager's business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from execbridge.config import SandboxSettings, Settings
from execbridge.errors import SandboxError, SandboxUnavailable
from execbridge.sandbox import doctor
from execbridge.sandbox.bwrap import Payloads, SandboxSpec
from execbridge.sandbox.cgroups import CgroupLimits, Cgroups, ContainerCgroup, detect, host_totals
from execbridge.sandbox.client import ExecutorLimits
from execbridge.sandbox.disk import WorkspaceDisks
from execbridge.sandbox.executor_image import executor_bytecode
from execbridge.sandbox.launch import LaunchOptions, sandbox_spec
from execbridge.sandbox.live import CommandLimits, LiveSandbox
from execbridge.sandbox.runtime_check import runtime_problems
from execbridge.sandbox.seccomp import build_program
from execbridge.sandbox.workspaces import PlainWorkspaces, Workspaces

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Provisioner:
    settings: SandboxSettings
    payloads: Payloads
    workspaces: Workspaces
    cgroups: Cgroups | None
    options: LaunchOptions

    @classmethod
    def from_report(
        cls, settings: Settings, report: doctor.DoctorReport, *, instance: str, root: Path, run_dir: Path
    ) -> Provisioner:
        """The provisioner of one manager: cgroups under ``execbridge/<instance>``, disk images under
        ``root/disks`` mounted under ``run_dir/mnt``, each protection only if ``report`` has it."""
        sb = settings.sandbox
        use_cgroups = all(report.has(n) for n in (doctor.CG_MEMORY, doctor.CG_PIDS, doctor.CG_CPU))
        cgroups = detect(f"execbridge/{instance}") if use_cgroups else None
        if cgroups is not None:
            cgroups.prepare(host_totals(sb.total_memory_mb, sb.total_pids))
        workspaces: Workspaces = (
            WorkspaceDisks(root / "disks", run_dir / "mnt", sb.disk_mb << 20)
            if report.has(doctor.DISK)
            else PlainWorkspaces(settings.data_dir / "workspaces")
        )
        workspaces.prepare()
        use_seccomp = report.has(doctor.SECCOMP)
        payloads = Payloads(
            executor=executor_bytecode(),
            seccomp=build_program().bpf if use_seccomp else b"",
        )
        options = LaunchOptions(switch_uid=report.has(doctor.UID), seccomp=use_seccomp)
        return cls(sb, payloads, workspaces, cgroups, options)

    def uid(self, slot: int) -> int:
        return self.settings.uid_base + slot

    def limits(self, memory_mb: int | None = None) -> CommandLimits:
        """A sandbox's command limits; ``memory_mb``: the container's own memory limit (else the sandbox's)."""
        s = self.settings
        executor = replace(ExecutorLimits.from_settings(s), reply_margin_s=s.kill_grace_s)
        return CommandLimits(executor=executor, kill_grace_s=s.kill_grace_s, memory_mb=memory_mb or s.memory_mb)

    # ------------------------------------------------------------ workspaces

    async def create_workspace(self, slot: int) -> None:
        uid = self.uid(slot) if self.options.switch_uid else 0
        await self.workspaces.create(str(slot), uid, uid)

    async def open_workspace(self, slot: int) -> Path:
        key = str(slot)
        if not self.workspaces.exists(key):
            # The image vanished (removed by hand, or a crash mid-create): the files are gone either
            # way; give the container a fresh, empty workspace rather than a dead id.
            log.warning("workspace of slot %d is missing; creating an empty one", slot)
            await self.create_workspace(slot)
        return await self.workspaces.mount(key)

    async def close_workspace(self, slot: int) -> None:
        await self.workspaces.unmount(str(slot))

    async def destroy_workspace(self, slot: int) -> None:
        await self.workspaces.delete(str(slot))

    # ------------------------------------------------------------ sandboxes

    def spec(self, slot: int, mountpoint: Path, workspace: str, memory_mb: int | None = None) -> SandboxSpec:
        return sandbox_spec(self.settings, self.uid(slot), mountpoint, workspace, memory_mb=memory_mb)

    async def start(self, slot: int, workspace: str, memory_mb: int | None = None) -> LiveSandbox:
        """Start the sandbox of ``slot`` with its workspace at ``workspace`` inside and ``memory_mb`` as
        its memory limit (None: the sandbox's); the workspace must be open. Raises ``SandboxError``."""
        spec = self.spec(slot, self.workspaces.mountpoint(str(slot)), workspace, memory_mb)
        return await self._launch(slot, spec, self._cgroup(slot, memory_mb), memory_mb)

    async def start_repl(self, slot: int, workspace: str, memory_mb: int | None = None) -> LiveSandbox:
        """Start the persistent Python REPL of ``slot``: a sandbox of its own on the same workspace
        (own namespaces, the same uid), in a child of the container's cgroup with its own freezer.
        Raises ``SandboxError``."""
        mountpoint = self.workspaces.mountpoint(str(slot))
        spec = sandbox_spec(self.settings, self.uid(slot), mountpoint, workspace, repl=True, memory_mb=memory_mb)
        return await self._launch(slot, spec, self._repl_cgroup(slot, memory_mb), memory_mb)

    async def _launch(
        self, slot: int, spec: SandboxSpec, cgroup: ContainerCgroup | None, memory_mb: int | None
    ) -> LiveSandbox:
        """One sandbox in ``cgroup``; the cgroup goes again if the sandbox does not start."""
        try:
            # Pinned until the executor is ready: by then the sandbox's own mount holds the device.
            with self.workspaces.pinned(str(slot)) as device:
                return await LiveSandbox.start(
                    slot=slot,
                    spec=spec,
                    payloads=self.payloads,
                    cgroup=cgroup,
                    nproc=self.settings.pids,
                    options=self.options,
                    limits=self.limits(memory_mb),
                    start_timeout=self.settings.start_timeout_s,
                    device=device,
                )
        except BaseException as exc:
            if cgroup is not None:
                await _remove_cgroup(cgroup)
            if isinstance(exc, SandboxError) and (missing := runtime_problems(self.settings)):
                # bwrap's own words name a path and an errno; say what is gone and who can fix it.
                raise SandboxUnavailable(
                    f"the sandbox runtime is missing on this server: {'; '.join(missing)} (see execbridge doctor)",
                    code="sandbox_runtime_missing",
                ) from exc
            raise

    async def stop(self, live: LiveSandbox) -> None:
        """Kill the sandbox and everything it started; remove its cgroup."""
        await live.stop()
        if live.cgroup is not None:
            await _remove_cgroup(live.cgroup)

    def _repl_cgroup(self, slot: int, memory_mb: int | None) -> ContainerCgroup | None:
        if self.cgroups is None:
            return None
        try:
            self._cgroup(slot, memory_mb)  # the container's own (idempotent): the REPL's lives inside it
            return self.cgroups.create_repl(str(slot))
        except OSError as exc:
            log.error("cannot create the REPL cgroup of slot %d: %s", slot, exc)
            raise SandboxUnavailable(
                f"cannot create the REPL's cgroup: {exc.strerror or exc}", code="cgroups_unavailable"
            ) from exc

    def _cgroup(self, slot: int, memory_mb: int | None = None) -> ContainerCgroup | None:
        if self.cgroups is None:
            return None
        try:
            return _create_cgroup(self.cgroups, self.settings, str(slot), memory_mb)
        except OSError as exc:
            # The client learns what failed; the operator's log (and execbridge doctor) where.
            log.error("cannot create the cgroup of slot %d: %s", slot, exc)
            raise SandboxUnavailable(
                f"cannot create the container's cgroup: {exc.strerror or exc}", code="cgroups_unavailable"
            ) from exc


def _create_cgroup(cgroups: Cgroups, s: SandboxSettings, name: str, memory_mb: int | None = None) -> ContainerCgroup:
    """Container ``name``'s cgroup. Our parent cgroup may have been removed since start-up (an operator's
    ``cgdelete``, a cleaner that takes empty cgroups): it is made again, with the limits for all
    containers together, rather than refusing every new container until a restart."""
    limits = CgroupLimits((memory_mb or s.memory_mb) << 20, s.pids, s.cpus)
    try:
        return cgroups.create(name, limits)
    except FileNotFoundError:
        log.warning("the containers' parent cgroup %s was gone; making it again", cgroups.parent)
        cgroups.prepare(host_totals(s.total_memory_mb, s.total_pids))
        return cgroups.create(name, limits)


async def _remove_cgroup(cgroup: ContainerCgroup) -> None:
    try:
        await cgroup.kill_all()
        cgroup.remove()
    except (OSError, TimeoutError) as exc:
        # Left for the next start's stale-cgroup sweep; nothing runs in it any more that we know of.
        log.error("could not remove cgroup %s: %s", cgroup.dirs[0], exc)
