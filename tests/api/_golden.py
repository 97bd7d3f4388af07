"""Golden transcripts: rendered output is compared byte for byte with files under ``golden/``.

Regenerate after a deliberate wire change with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/api`` and
review the diff: a golden file changing is a wire-format change.
"""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_bytes(data)
        return
    assert path.exists(), f"missing golden file {name}; run with UPDATE_GOLDEN=1 and review it"
    assert data.decode() == path.read_text(), f"{name} differs from its golden transcript"
