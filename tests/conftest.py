"""Suite-wide settings.

pytest puts temporary directories under ``/tmp/pytest-of-<user>`` and makes that directory 0700 again
at the start of every session. Gateways started as root run as the unprivileged ``execbridge`` user and
need search permission on every parent of their data directory, so another pytest session starting
on the same machine (a second checkout, a developer's run) would cut running gateways off from their
data. As root, each session therefore gets a base directory of its own, outside that shared one, and
removes it when it ends (``--basetemp`` on the command line still wins).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_OWN_BASETEMP = "_execbridge_own_basetemp"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0 or config.option.basetemp:
        return
    base = Path(tempfile.mkdtemp(prefix="execbridge-pytest-", dir="/var/tmp"))
    base.chmod(0o711)  # searchable, not listable
    config.option.basetemp = str(base / "t")
    setattr(config, _OWN_BASETEMP, base)


def pytest_unconfigure(config: pytest.Config) -> None:
    base = getattr(config, _OWN_BASETEMP, None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)
