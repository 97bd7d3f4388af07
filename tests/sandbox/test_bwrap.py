"""The bubblewrap command line: the flags every sandbox must get, and nothing of the gateway's."""

from __future__ import annotations

import os
from pathlib import Path

from execbridge.config import load_settings
from execbridge.sandbox.bwrap import (
    ETC_ALLOWLIST,
    SPAWN_ENV,
    Payloads,
    bwrap_argv,
    bwrap_options,
    options_fd,
    payload_fds,
    proc_masks,
)
from execbridge.sandbox.cgroups import ContainerCgroup
from execbridge.sandbox.launch import LaunchOptions, sandbox_spec, wrap_argv

REQUIRED = (
    "--unshare-all",
    "--unshare-user",
    "--disable-userns",
    "--die-with-parent",
    "--new-session",
    "--cap-drop ALL",
    "--clearenv",
    "--seccomp",
    "--remount-ro /",
    "--uid 1000",
    "--gid 1000",
    "--proc /proc",
    "--dev /dev",
    "--bind /data/sandbox/mnt/7 /workspace",
    "--chdir /workspace",
)


def build(monkeypatch) -> list[str]:
    monkeypatch.setenv("EXECBRIDGE_UPSTREAM_API_KEY", "sk-gateway-secret")
    settings = load_settings(None, data_dir=Path("/tmp/x"))
    spec = sandbox_spec(settings.sandbox, 200_007, Path("/data/sandbox/mnt/7"))
    with payload_fds(Payloads(executor=b"print(1)", seccomp=b"\0" * 8)) as fds:
        argv = bwrap_argv(spec, fds)
        cg = ContainerCgroup(1, (Path("/sys/fs/cgroup/memory/x/7"),))
        return wrap_argv(argv, spec, cgroup=cg, nproc=64, options=LaunchOptions())


def test_every_protection_flag_is_there(monkeypatch):
    argv = build(monkeypatch)
    joined = " ".join(argv)
    for flag in REQUIRED:
        assert flag in joined, flag
    assert "--share-net" not in argv
    # Order of the host-side stages: join the cgroup (as root), drop to the container's uid, bwrap.
    assert argv[0] == "/bin/sh" and "/sys/fs/cgroup/memory/x/7/cgroup.procs" in argv
    i = argv.index("/usr/bin/setpriv")
    assert argv[i : i + 7] == [
        "/usr/bin/setpriv",
        "--reuid",
        "200007",
        "--regid",
        "200007",
        "--clear-groups",
        "--no-new-privs",
    ]
    assert argv.index("/usr/bin/bwrap") > i


def test_nothing_of_the_gateway_leaks(monkeypatch):
    argv = build(monkeypatch)
    assert not any("sk-gateway-secret" in a or "EXECBRIDGE" in a for a in argv)
    assert set(SPAWN_ENV) == {"PATH", "LANG"}
    assert not any(
        name in ETC_ALLOWLIST
        for name in ("shadow", "gshadow", "pip.conf", "gitconfig", "ssh", "resolv.conf", "machine-id", "environment")
    )
    # Every /etc bind comes from the allowlist or is generated.
    etc = [
        argv[i + 2]
        for i, a in enumerate(argv)
        if a in ("--ro-bind-try", "--ro-bind-data") and argv[i + 2].startswith("/etc/")
    ]
    assert all(
        p[5:] in ETC_ALLOWLIST or p[5:] in ("passwd", "group", "hosts", "hostname", "nsswitch.conf") for p in etc
    )


def test_host_proc_entries_are_masked_after_proc_is_mounted(monkeypatch):
    argv = build(monkeypatch)
    files, dirs = proc_masks()
    assert "/proc/cmdline" in files and "/proc/fs" in dirs  # this kernel has both
    proc = argv.index("--proc")
    for path in files:
        i = argv.index(path)
        assert argv[i - 2 : i] == ["--dev-bind", "/dev/null"] and i > proc, path
    for path in dirs:
        i = argv.index(path)
        assert argv[i - 1] == "--tmpfs" and argv[i + 1 : i + 3] == ["--remount-ro", path] and i > proc, path


def test_options_travel_through_a_memfd_not_the_command_line(monkeypatch):
    monkeypatch.setenv("EXECBRIDGE_UPSTREAM_API_KEY", "sk-gateway-secret")
    settings = load_settings(None, data_dir=Path("/tmp/x"))
    spec = sandbox_spec(settings.sandbox, 200_007, Path("/run/execbridge/abc/mnt/7"))
    with payload_fds(Payloads(executor=b"print(1)", seccomp=b"\0" * 8)) as fds:
        options = bwrap_options(spec, fds)
        assert bwrap_argv(spec, fds) == ["/usr/bin/bwrap", *options, "--", *spec.command]
        with options_fd(options) as fd:
            data = os.pread(fd, 1 << 20, 0)
    assert data.split(b"\0")[:-1] == [o.encode() for o in options]
    assert "/run/execbridge/abc/mnt/7" in options and "--" not in options
