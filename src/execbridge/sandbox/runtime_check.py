"""Whether the sandbox runtime is on this machine *now*: bubblewrap and the runtime's interpreter.

The doctor checks them once, when the container service starts; they can go later (an upgrade that
removed bubblewrap, a runtime directory deleted or unmounted). ``runtime_problems`` is the cheap
re-check (a few ``stat`` calls) that ``GET /readyz`` makes on every probe and that a sandbox that did
not start makes to say why in words an operator can act on.

Must not: start anything or change the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from execbridge.config import SandboxSettings
from execbridge.sandbox.bwrap import BWRAP


def runtime_problems(settings: SandboxSettings, *, bwrap: str = BWRAP) -> list[str]:
    """What of the runtime is missing, one short phrase each; empty when everything is there."""
    problems = []
    if not _executable(Path(bwrap)):
        problems.append(f"bubblewrap ({bwrap}) is missing or not executable")
    if settings.runtime_dir is not None and not settings.runtime_dir.is_dir():
        problems.append(f"the runtime directory {settings.runtime_dir} is missing")
    elif not _executable(settings.python):
        problems.append(f"the runtime interpreter {settings.python} is missing or not executable")
    return problems


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
