"""The seccomp program builds, and lists what it denies."""

from __future__ import annotations

from execbridge.sandbox.seccomp import build_program


def test_program_is_bpf_and_denies_the_dangerous_calls():
    p = build_program()
    assert p.bpf and len(p.bpf) % 8 == 0  # an array of struct sock_filter
    for name in (
        "ptrace",
        "mount",
        "keyctl",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "setns",
        "kexec_load",
        "init_module",
        "unshare(CLONE_NEW*)",
        "clone3",
    ):
        assert name in p.denied
