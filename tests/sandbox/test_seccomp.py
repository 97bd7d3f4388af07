"""The seccomp program builds, and lists what it denies."""

from __future__ import annotations

from execbridge.sandbox.seccomp import ALLOWED_FAMILIES, build_program


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
        "modify_ldt",
        "memfd_secret",
        "move_pages",
        "migrate_pages",
        "process_madvise",
        "socket(family not unix/inet/inet6/netlink)",
        "socketpair(family not unix/inet/inet6/netlink)",
        "socket(AF_INET, SOCK_PACKET)",
        "socket(AF_NETLINK, not NETLINK_ROUTE)",
    ):
        assert name in p.denied, name


def test_only_unix_inet_inet6_and_netlink_sockets():
    assert ALLOWED_FAMILIES == (1, 2, 10, 16)  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK; vsock is 40
