"""What a command left behind, for OpenAI's hosted tools: the files it wrote (images inline, files cited)
and the figures a Python cell drew.

Job: after a command, one small Python program inside the same leased sandbox lists the workspace's
regular files modified since the command started, and returns the bytes of small images among them
(base64, within a budget that keeps the answer far under the executor's 1 MiB stdout cap). Nothing
is read from the gateway's side: links are neither followed nor listed, hidden directories (caches
such as matplotlib's) are skipped. After a REPL cell, a second cell saves the matplotlib figures left
open into its ``$OUTPUT_DIR`` and closes them, as a notebook shows a cell's figures and closes them
(``figures``).

Must not: know any wire format; fail the call it follows (a scan that fails reports nothing).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Final

from execbridge.sandbox.base import ContainerSession
from execbridge.types import Image, WrittenFile

__all__ = ["IMAGE_BUDGET_BYTES", "MAX_FIGURES", "MAX_WRITTEN", "figures", "started", "written_since"]

log = logging.getLogger(__name__)

IMAGE_BUDGET_BYTES: Final = 512 << 10
"""Image bytes returned per command, in all (base64 adds a third: the answer stays under 1 MiB)."""
MAX_WRITTEN: Final = 200
_IMAGE_TYPES: Final = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}

_SCAN: Final = """
import base64, json, os, stat
root, since, budget, limit, kinds = {root!r}, {since!r}, {budget!r}, {limit!r}, {kinds!r}
found = []
for top, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
    for name in sorted(names):
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            rel.encode("utf-8")
        except (OSError, UnicodeEncodeError):
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_mtime < since or len(found) >= limit:
            continue
        data = None
        if os.path.splitext(name)[1].lower() in kinds and st.st_size <= budget:
            try:
                with open(path, "rb") as f:
                    raw = f.read(budget + 1)
            except OSError:
                raw = b"x" * (budget + 1)
            if len(raw) <= budget:
                budget -= len(raw)
                data = base64.b64encode(raw).decode()
        found.append([rel, st.st_size, data])
print(json.dumps(found))
"""


# File times come from the kernel's coarse clock, up to a tick (4 to 10 ms) behind ``time.time()``: a file
# written right at the start of a command could otherwise look older than the command.
_CLOCK_SLACK_S: Final = 0.05


# A cell of the REPL the code ran in (so it sees the code's figures); it leaves no name behind.
_FIGURES: Final = """
def _execbridge_figures():
    import os, sys
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for number in plt.get_fignums()[:{limit}]:
        plt.figure(number).savefig(os.path.join(os.environ["OUTPUT_DIR"], f"figure-{{number}}.png"), format="png")
    plt.close("all")
_execbridge_figures()
del _execbridge_figures
"""
MAX_FIGURES: Final = 8


async def figures(session: ContainerSession, timeout: float) -> tuple[Image, ...]:
    """The figures the container's REPL has open, as PNG (then closed); none when matplotlib was not
    imported or the capture failed (it never fails the call it follows)."""
    result = await session.run_cell(_FIGURES.format(limit=MAX_FIGURES), timeout=timeout)
    if result.return_code != 0 or result.error_code is not None:
        log.warning("could not capture the figures of a cell (rc %s, %s)", result.return_code, result.error_code)
    budget = IMAGE_BUDGET_BYTES
    images = []
    for captured in sorted(result.files, key=lambda f: f.name):
        if captured.data and len(captured.data) <= budget:
            budget -= len(captured.data)
            images.append(Image(media_type="image/png", data=base64.b64encode(captured.data).decode()))
    return tuple(images)


def started() -> float:
    """The time to pass as ``since``, taken before the command runs (the sandbox shares the host's
    clock), less the slack of file times; a file written by the previous call in those few
    milliseconds counts as this one's too, which only makes it citable."""
    return time.time() - _CLOCK_SLACK_S


async def written_since(session: ContainerSession, since: float, *, images: bool = True) -> tuple[WrittenFile, ...]:
    """The workspace files modified at or after ``since``, oldest path first; with ``images``, small
    images carry their bytes."""
    code = _SCAN.format(
        root=session.info.workspace,
        since=since,
        budget=IMAGE_BUDGET_BYTES if images else 0,
        limit=MAX_WRITTEN,
        kinds=sorted(_IMAGE_TYPES),
    )
    result = await session.run_python(code)
    try:
        rows = json.loads(result.stdout) if result.return_code == 0 and result.error_code is None else None
    except ValueError:
        rows = None
    if not isinstance(rows, list):
        log.warning("could not list the files a command wrote (rc %s, %s)", result.return_code, result.error_code)
        return ()
    written = []
    for path, size, data in rows:
        media_type = _IMAGE_TYPES.get("." + str(path).rsplit(".", 1)[-1].lower())
        image = Image(media_type=media_type, data=data) if data is not None and media_type else None
        written.append(WrittenFile(str(path), int(size), image))
    return tuple(written)
