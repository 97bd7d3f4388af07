"""The systemd unit that ``scripts/install.sh --systemd`` installs: systemd's own checker accepts it, and
it starts ``serve`` the way the README says (as root, so the privilege split runs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[1] / "deploy" / "execbridge.service"


def test_the_unit_runs_serve_from_the_checkout_with_the_limits_the_docs_give(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("@PREFIX@", "/opt/checkout")
    lines = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    start = lines["ExecStart"]
    assert start.startswith("/opt/checkout/.venv/bin/execbridge ") and start.endswith(" serve")
    assert "User" not in lines  # root: serve itself drops the gateway to the user execbridge
    assert (lines["KillMode"], lines["LimitNOFILE"], lines["TimeoutStopSec"]) == ("mixed", "65536", "120")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "execbridge.service"
    unit.write_text(UNIT.read_text().replace("@PREFIX@", str(Path(__file__).parents[1])))
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "execbridge.service" not in checked.stderr, checked.stderr  # no warning about the unit itself
