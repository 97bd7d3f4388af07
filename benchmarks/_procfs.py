"""What the benchmarks read from /proc about execbridge's processes (shared by bench_sandbox, bench_scale
and soak, which run as scripts from this directory)."""

from __future__ import annotations

from pathlib import Path


def pss_kib(pid: int) -> int:
    """The process's proportional set size (shared pages split among their users), 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)


def processes(data_dir: Path) -> dict[str, int]:
    """The pids of the execbridge processes serving ``data_dir``, by role (serve, gateway, sandbox-host)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "execbridge" in args and str(data_dir) in " ".join(args):
            role = "sandbox-host" if "sandbox-host" in args else "gateway" if "--sandbox-host" in args else "serve"
            found[role] = int(entry.name)
    return found
