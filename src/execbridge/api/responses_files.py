"""What OpenAI's hosted tools left in the container, as the Responses API shows it.

docs/protocol.md §5.2, "The Responses API", generated files.

Job: the ``Artifacts`` of a response whose tools run in an OpenAI container (``cntr_…``): a code
interpreter call's ``image`` outputs are the small images it wrote (``CommandOutcome.written``, read
inside the sandbox right after the call), or else the matplotlib figures it left open
(``CommandOutcome.figures``), as ``data:`` URIs; an answer's ``sandbox:/mnt/data/<path>``
links become ``container_file_citation`` annotations over the link, naming the file's ``cfile_…`` id,
when the file is one a call of this response wrote or one that already has an id. Indexes count code
points (Python's string indexes), end exclusive, as OpenAI's do.

Must not: lease the container (the engine holds it while it renders results) or read file bytes.
"""

from __future__ import annotations

import posixpath
import re
from typing import Final
from urllib.parse import unquote

from execbridge.api.responses_items import JSON
from execbridge.engine.container_files import ContainerFiles
from execbridge.tools.versions import OPENAI_WORKSPACE
from execbridge.types import CommandOutcome, ServerToolResult

__all__ = ["ContainerArtifacts", "sandbox_links"]

_LINK: Final = re.compile(re.escape(f"sandbox:{OPENAI_WORKSPACE}/") + r"[^\s()\[\]<>\"'`]+")
_TRAILING: Final = ".,;:!?"


def sandbox_links(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, path relative to the workspace)`` of each ``sandbox:/mnt/data/…`` link in ``text``."""
    found = []
    prefix = len(f"sandbox:{OPENAI_WORKSPACE}/")
    for match in _LINK.finditer(text):
        link = match.group().rstrip(_TRAILING)
        path = posixpath.normpath(unquote(link[prefix:]))
        if path.startswith("..") or path == ".":
            continue
        found.append((match.start(), match.start() + len(link), path))
    return found


class ContainerArtifacts:
    """Artifacts of one response; remembers what its calls wrote, for the citations."""

    __slots__ = ("_files", "_written")

    def __init__(self, files: ContainerFiles) -> None:
        self._files = files
        self._written: list[str] = []

    async def outputs(self, container_id: str, result: ServerToolResult) -> list[JSON]:
        outcome = result.outcome
        if not isinstance(outcome, CommandOutcome):
            return []
        self._written += [w.path for w in outcome.written]
        # The images the call saved; else the figures it left open (a chart saved and left open is
        # shown once).
        saved = [w.image for w in outcome.written if w.image is not None]
        return [
            {"type": "image", "url": f"data:{image.media_type};base64,{image.data}"}
            for image in saved or outcome.figures
            if image.data is not None
        ]

    async def citations(self, container_id: str, text: str) -> list[JSON]:
        links = sandbox_links(text)
        if not links:
            return []
        records = await self._files.ids_for(container_id, [p for _, _, p in links], written=self._written)
        return [
            {
                "type": "container_file_citation",
                "container_id": container_id,
                "file_id": records[path].id,
                "filename": posixpath.basename(path),
                "start_index": start,
                "end_index": end,
            }
            for start, end, path in links
            if path in records
        ]
