"""The published versions of Anthropic's code execution tool: the one table every layer reads.

Job: say, for each ``code_execution_YYYYMMDD`` tool type, which sub-tools it puts in front of the
model (their function schemas, which mirror Anthropic's sub-tool inputs one to one), which names it
reserves, and which error codes each sub-tool's result block can carry (docs/protocol.md §2). The
request parser (``api/wire.py``), the block renderer and parser (``api/blocks.py``) and the engine all
read this table; none of them lists versions, sub-tools or codes of its own.

Adding a version is one row of ``_VERSIONS``.

Must not: know any wire format beyond these names, or run anything.
Invariant: sub-tool names are unique across the table, and every version's sub-tools come from
``SUB_TOOLS``, so a result block type (``{name}_tool_result``) always names exactly one sub-tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from execbridge.types import CodeExecutionTool, FunctionDef, ToolErrorCode

__all__ = [
    "BASH",
    "EDITOR",
    "OPENAI_WORKSPACE",
    "PYTHON",
    "SERVER_TOOL_NAMES",
    "SUB_TOOLS",
    "TOOL_NAME",
    "VERSIONS",
    "SubTool",
    "ToolVersion",
    "openai_tool",
    "version_of",
]

# The name a client gives the tool in ``tools`` (every version), and the name of the Python sub-tool.
TOOL_NAME: Final = "code_execution"
BASH: Final = "bash_code_execution"
EDITOR: Final = "text_editor_code_execution"
PYTHON: Final = "code_execution"

# Every result block can say these; each sub-tool may add its own (docs/protocol.md §2.6).
_BASE_CODES: Final[frozenset[ToolErrorCode]] = frozenset(
    {"invalid_tool_input", "unavailable", "too_many_requests", "execution_time_exceeded"}
)


@dataclass(frozen=True, slots=True)
class SubTool:
    """One function the code execution tool offers the model, and what its result block can say.

    ``kind`` is what it does: ``command`` runs a program (stdout, stderr, a return code, files),
    ``editor`` views and edits files.
    """

    function: FunctionDef
    kind: Literal["command", "editor"]
    error_codes: frozenset[ToolErrorCode]

    @property
    def name(self) -> str:
        return self.function.name


@dataclass(frozen=True, slots=True)
class ToolVersion:
    """One published ``code_execution_YYYYMMDD`` tool type."""

    version: str
    sub_tools: tuple[SubTool, ...]
    # The Python sub-tool runs cells in the container's persistent REPL (20260120 and later): its
    # globals survive between calls; otherwise each call is a fresh ``python -c``.
    repl: bool = False
    # Whose tool this is: Anthropic's published versions, or OpenAI's hosted ``code_interpreter`` and
    # ``shell`` tools (the Responses API; never accepted as an Anthropic tool type).
    surface: Literal["anthropic", "openai"] = "anthropic"

    @property
    def type(self) -> str:
        return f"{TOOL_NAME}_{self.version}"

    @property
    def functions(self) -> tuple[FunctionDef, ...]:
        if not self.repl:
            return tuple(s.function for s in self.sub_tools)
        return tuple(_REPL_PYTHON if s is _PYTHON else s.function for s in self.sub_tools)

    @property
    def names(self) -> frozenset[str]:
        """The function names this version reserves upstream: no client tool may use one."""
        return frozenset(s.name for s in self.sub_tools)


_PYTHON = SubTool(
    FunctionDef(
        name=PYTHON,
        description=(
            "Run Python 3.11 code in a persistent sandboxed Linux container and return its stdout, stderr "
            "and exit code. Use print() to show results. Each call is a fresh process; files written to the "
            "working directory persist between calls. No internet access."
        ),
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python program to run."}},
            "required": ["code"],
        },
    ),
    kind="command",
    error_codes=_BASE_CODES,
)

# The same function, as the REPL versions describe it to the model.
_REPL_PYTHON = FunctionDef(
    name=PYTHON,
    description=(
        "Run a cell of Python 3.11 code in a persistent interpreter in the sandboxed Linux container and "
        "return its stdout, stderr and exit code. Variables, imports and definitions persist between calls "
        "(and across requests that reuse the container); top-level `await` works. Use print() to show "
        "results: the value of a last expression is not shown. A cell that runs past its wall-clock limit "
        "is interrupted (its result says detection_timeout) and the variables set so far are kept. Files written "
        "to the working directory persist; bash and the file editor work on the same files, in separate "
        "processes (a bash `python` does not see the cell's variables). No internet access."
    ),
    parameters=_PYTHON.function.parameters,
)

_BASH = SubTool(
    FunctionDef(
        name=BASH,
        description=(
            "Run a bash command in a persistent sandboxed Linux container and return its stdout, stderr and "
            "exit code. Python 3.11 with common data libraries is installed (run scripts with `python`). "
            "Files persist between calls. No internet access; packages cannot be installed. To hand a file "
            'back to the user, write or copy it into "$OUTPUT_DIR" (a fresh, empty directory for each '
            "call) and list it in the same command."
        ),
        parameters={
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The bash command to run."}},
            "required": ["command"],
        },
    ),
    kind="command",
    error_codes=_BASE_CODES | {"output_file_too_large"},
)

_EDITOR = SubTool(
    FunctionDef(
        name=EDITOR,
        description=(
            "View, create or edit text files in the sandboxed container. Commands: `view` (show a file), "
            "`create` (write `file_text` to `path`, replacing any file there), `str_replace` (replace the "
            "single exact occurrence of `old_str` in the file with `new_str`). Paths are relative to the "
            "working directory unless absolute."
        ),
        parameters={
            "type": "object",
            "properties": {
                "command": {"type": "string", "enum": ["view", "create", "str_replace"]},
                "path": {"type": "string", "description": "File path."},
                "file_text": {"type": "string", "description": "Full file content, for `create`."},
                "old_str": {"type": "string", "description": "Exact text to replace, for `str_replace`."},
                "new_str": {"type": "string", "description": "Replacement text, for `str_replace`."},
            },
            "required": ["command", "path"],
        },
    ),
    kind="editor",
    error_codes=_BASE_CODES | {"file_not_found"},
)

# OpenAI's hosted tools (the Responses API), on the same sub-tools under the same names, described the
# way that API's models know them: ``code_interpreter`` is a stateful Python (a cell of the persistent
# REPL), ``shell`` runs commands; both work in ``/mnt/data``, where the code's files are the user's.
OPENAI_WORKSPACE: Final = "/mnt/data"

_OPENAI_PYTHON = SubTool(
    FunctionDef(
        name=PYTHON,
        description=(
            "Run Python 3.11 code in a stateful interpreter (like a Jupyter notebook) in a sandboxed Linux "
            "container and return its stdout, stderr and exit code. Variables, imports and definitions persist "
            "between calls. Use print() to show results. The working directory is /mnt/data; save files for "
            "the user there (for charts, plt.savefig('/mnt/data/<name>.png')). No internet access."
        ),
        parameters=_PYTHON.function.parameters,
    ),
    kind="command",
    error_codes=_BASE_CODES,
)

_OPENAI_SHELL = SubTool(
    FunctionDef(
        name=BASH,
        description=(
            "Run a shell command (bash) in a sandboxed Linux container and return its stdout, stderr and exit "
            "code. Python 3.11 with common data libraries is installed. The working directory is /mnt/data, "
            "where the user's files are and where files for the user go. No internet access."
        ),
        parameters=_BASH.function.parameters,
    ),
    kind="command",
    error_codes=_BASE_CODES,
)

SUB_TOOLS: Final[Mapping[str, SubTool]] = MappingProxyType({s.name: s for s in (_BASH, _EDITOR, _PYTHON)})
SERVER_TOOL_NAMES: Final[frozenset[str]] = frozenset(SUB_TOOLS)

# The table (docs/protocol.md §2.1): tool type → the sub-tools it offers, in the order the model sees them.
_VERSIONS: Final = (
    ToolVersion("20250522", (_PYTHON,)),
    ToolVersion("20250825", (_BASH, _EDITOR)),
    ToolVersion("20260120", (_BASH, _EDITOR, _PYTHON), repl=True),
    ToolVersion("20260521", (_BASH, _EDITOR, _PYTHON), repl=True),
)
VERSIONS: Final[Mapping[str, ToolVersion]] = MappingProxyType({v.type: v for v in _VERSIONS})

# OpenAI's tools, by which of them a request has (code_interpreter, shell). Not in ``VERSIONS``: no
# Anthropic client can name them.
_OPENAI: Final[Mapping[tuple[bool, bool], ToolVersion]] = MappingProxyType(
    {
        (True, False): ToolVersion("openai_python", (_OPENAI_PYTHON,), repl=True, surface="openai"),
        (False, True): ToolVersion("openai_shell", (_OPENAI_SHELL,), surface="openai"),
        (True, True): ToolVersion("openai_python_shell", (_OPENAI_SHELL, _OPENAI_PYTHON), repl=True, surface="openai"),
    }
)
_BY_VERSION: Final[Mapping[str, ToolVersion]] = MappingProxyType(
    {v.version: v for v in (*_VERSIONS, *_OPENAI.values())}
)


def openai_tool(*, code_interpreter: bool, shell: bool) -> CodeExecutionTool:
    """The neutral tool for a Responses request with OpenAI's ``code_interpreter`` and/or ``shell``."""
    return CodeExecutionTool(_OPENAI[(code_interpreter, shell)].version)


def version_of(tool: CodeExecutionTool) -> ToolVersion:
    """The table row of a tool; a version no row names is a programming error (the parser checks types)."""
    row = _BY_VERSION.get(tool.version)
    if row is None:
        raise ValueError(f"unknown code execution tool version {tool.version!r}; known: {', '.join(VERSIONS)}")
    return row
