"""The text-editor commands, done inside the sandbox: ``view``, ``create``, ``str_replace``, ``put_file``.

Job: read and write files for the gateway, with the sandbox's own view of the file system. Paths are
relative to the workspace; an absolute path is taken as is — the sandbox, not a lexical check here,
decides what exists, so a link planted by user code can only ever resolve inside the sandbox.

Choices (Anthropic's semantics, docs/protocol.md §2.4): ``view`` returns text as is, without
line-number prefixes, with ``start_line``/``num_lines``/``total_lines`` beside it. A text file over
the size cap is shown up to the last whole line under the cap (``num_lines`` < ``total_lines`` says
so); an image or PDF (recognised by magic bytes, not by name) over the cap is an
``invalid_tool_input`` error. ``str_replace`` wants exactly one occurrence and answers with the whole
affected lines before and after.

Must not: block on a FIFO or device (every open is ``O_NONBLOCK``); read more than the caps allow;
change bytes the edit does not touch (``surrogateescape`` keeps non-UTF-8 bytes as they were).

Invariants: a command that cannot be done raises ``ToolError`` (a ``tool_error`` answer); a request
that is malformed raises ``ValueError`` (an ``internal_error`` answer).
"""

import os

from .common import ToolError, field_int, field_str, read_upto

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MAX_LINE_COUNT_BYTES = 1 << 30  # a truncated view counts the lines of files up to this size
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")  # png, jpeg, gif; webp below


class Editor:
    """Editor commands on files under ``workspace``; each method takes a request and returns its answer."""

    def __init__(self, workspace: str) -> None:
        self.workspace = workspace

    def view(self, request: "dict[str, Any]") -> "dict[str, Any]":
        path = field_str(request, "path")
        max_bytes = field_int(request, "max_bytes")
        fd = self._open_existing(path)
        try:
            head = read_upto(fd, max_bytes + 1)
            file_type = _binary_kind(head)
            if file_type is not None:
                if len(head) > max_bytes:
                    raise ToolError(
                        "invalid_tool_input",
                        f"{path} is too large to view ({os.fstat(fd).st_size} bytes; the limit is {max_bytes} bytes)",
                    )
                return {"file_type": file_type, "data": head}
            if b"\x00" in head:
                raise ToolError(
                    "invalid_tool_input",
                    f"{path} is a binary file; the editor views text, images and PDFs only "
                    "(inspect it with bash, e.g. xxd or file)",
                )
            if len(head) <= max_bytes:
                lines = _count_lines(head)
                return {"file_type": "text", "data": head, "num_lines": lines, "start_line": 1,
                        "total_lines": lines, "truncated": False}  # fmt: skip
            # Too long: show whole lines up to the cap, and still say how long the file is.
            shown = head[:max_bytes]
            cut = shown.rfind(b"\n")
            shown = shown[: cut + 1] if cut >= 0 else _trim_partial_utf8(shown)
            newlines = head.count(b"\n")
            last = head[-1:]
            scanned = len(head)
            counted = True
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                if scanned > _MAX_LINE_COUNT_BYTES:  # not worth seconds of reading: say "unknown"
                    counted = False
                    break
                scanned += len(chunk)
                newlines += chunk.count(b"\n")
                last = chunk[-1:]
            total = (newlines + (last != b"\n")) if counted else None
            return {"file_type": "text", "data": shown, "num_lines": _count_lines(shown), "start_line": 1,
                    "total_lines": total, "truncated": True}  # fmt: skip
        finally:
            os.close(fd)

    def create(self, request: "dict[str, Any]") -> "dict[str, Any]":
        path = field_str(request, "path")
        data = request.get("data")
        if not isinstance(data, memoryview):
            raise ValueError("create needs binary 'data'")
        full = self._resolve(path)
        if os.path.isdir(full):
            raise ToolError("invalid_tool_input", f"{path} is a directory; give the path of a file")
        existed = os.path.exists(full)
        self._write_file(path, full, data)
        return {"is_file_update": existed}

    def str_replace(self, request: "dict[str, Any]") -> "dict[str, Any]":
        path = field_str(request, "path")
        old = field_str(request, "old_str")
        new = field_str(request, "new_str")
        max_bytes = field_int(request, "max_bytes")
        if not old:
            raise ToolError("invalid_tool_input", "old_str must not be empty")
        fd = self._open_existing(path)
        try:
            raw = read_upto(fd, max_bytes + 1)
        finally:
            os.close(fd)
        if len(raw) > max_bytes:
            raise ToolError("invalid_tool_input", f"{path} is too large to edit (over {max_bytes} bytes)")
        if _binary_kind(raw) is not None or b"\x00" in raw:
            raise ToolError("invalid_tool_input", f"{path} is a binary file; the editor edits text files only")
        # surrogateescape: bytes that are not UTF-8 survive the edit unchanged.
        text = raw.decode("utf-8", "surrogateescape")
        count = text.count(old)
        if count == 0:
            raise ToolError(
                "invalid_tool_input",
                f"old_str was not found in {path}; it must match the file exactly, including "
                "whitespace and indentation",
            )
        if count > 1:
            lines = _occurrence_lines(text, old)
            shown = ", ".join(map(str, lines[:20])) + (", …" if len(lines) > 20 else "")
            raise ToolError(
                "invalid_tool_input",
                f"old_str occurs {count} times in {path} (lines {shown}); it must occur exactly once, "
                "so include more surrounding context to make it unique",
            )
        start = text.index(old)
        new_text = text[:start] + new + text[start + len(old) :]
        try:
            encoded = new_text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ToolError("invalid_tool_input", "new_str contains characters that cannot be encoded") from None
        self._write_file(path, self._resolve(path), encoded)
        return _replacement_diff(text, start, old, new)

    def put_file(self, request: "dict[str, Any]") -> "dict[str, Any]":
        path = field_str(request, "path")
        data = request.get("data")
        if not isinstance(data, memoryview):
            raise ValueError("put_file needs binary 'data'")
        self._write_file(path, self._resolve(path), data)
        return {"size": data.nbytes}

    # ------------------------------------------------------------ files

    def _resolve(self, path: str) -> str:
        if not path:
            raise ToolError("invalid_tool_input", "path must not be empty")
        if "\x00" in path:
            raise ToolError("invalid_tool_input", "path must not contain NUL characters")
        # Relative to the workspace; an absolute path is taken as is: the sandbox, not a lexical
        # check here, decides what exists.
        return os.path.join(self.workspace, path)

    def _open_existing(self, path: str) -> int:
        full = self._resolve(path)
        try:
            # O_NONBLOCK: opening a FIFO must not hang the executor.
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            raise ToolError("file_not_found", f"File not found: {path}") from None
        except OSError as exc:
            raise ToolError("invalid_tool_input", f"Cannot open {path}: {exc.strerror}") from None
        mode = os.fstat(fd).st_mode
        if (mode & 0o170000) == 0o040000:
            os.close(fd)
            raise ToolError("invalid_tool_input", f"{path} is a directory, not a file; list it with bash (e.g. ls)")
        if (mode & 0o170000) != 0o100000:
            os.close(fd)
            raise ToolError("invalid_tool_input", f"{path} is not a regular file")
        return fd

    def _write_file(self, path: str, full: str, data: bytes | memoryview) -> None:
        try:
            parent = os.path.dirname(full)
            if parent:
                os.makedirs(parent, exist_ok=True)
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except IsADirectoryError:
            raise ToolError("invalid_tool_input", f"{path} is a directory; give the path of a file") from None
        except OSError as exc:
            raise ToolError("invalid_tool_input", f"Cannot write {path}: {exc.strerror}") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise ToolError("invalid_tool_input", f"Cannot write {path}: {exc.strerror}") from None
        finally:
            os.close(fd)


# ---------------------------------------------------------------- pure helpers


def _binary_kind(head: bytes) -> str | None:
    """``image``/``pdf`` by magic bytes (not by name: models rename files freely)."""
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head.startswith(b"%PDF-"):
        return "pdf"
    return None


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _trim_partial_utf8(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence at the end of a cut."""
    i = len(data)
    while i > 0 and len(data) - i < 4 and (data[i - 1] & 0xC0) == 0x80:
        i -= 1
    if i > 0 and data[i - 1] >= 0xC0:
        lead = data[i - 1]
        need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
        if len(data) - (i - 1) < need:
            return data[: i - 1]
    return data


def _occurrence_lines(text: str, needle: str) -> list[int]:
    lines, pos, line, counted_to = [], text.find(needle), 1, 0
    while pos >= 0:
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        lines.append(line)
        pos = text.find(needle, pos + len(needle))
    return lines


def _split_lines(region: str) -> list[str]:
    if not region:
        return []
    if region.endswith("\n"):
        region = region[:-1]
    return region.split("\n")


def _replacement_diff(text: str, start: int, old: str, new: str) -> "dict[str, Any]":
    """Whole affected lines before (``-``) and after (``+``) the edit, with their 1-based starts.

    The block runs from the start of the line where ``old`` begins to the end of the line where it
    ends; when the replacement leaves a line without its newline, the next line joins the block, so
    ``lines`` always shows complete lines of the old and the new file.
    """
    end = start + len(old)
    line_start = text.rfind("\n", 0, start) + 1
    block_end = text.find("\n", end - 1)
    block_end = len(text) if block_end < 0 else block_end + 1
    new_block = text[line_start:start] + new + text[end:block_end]
    if new_block and not new_block.endswith("\n") and block_end < len(text):
        more = text.find("\n", block_end)
        more = len(text) if more < 0 else more + 1
        new_block += text[block_end:more]
        block_end = more
    old_lines = _split_lines(text[line_start:block_end])
    new_lines = _split_lines(new_block)
    first = text.count("\n", 0, line_start) + 1
    return {
        "old_start": first,
        "old_lines": len(old_lines),
        "new_start": first,
        "new_lines": len(new_lines),
        "lines": [f"-{line}" for line in old_lines] + [f"+{line}" for line in new_lines],
    }
