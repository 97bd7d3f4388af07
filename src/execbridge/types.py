"""The neutral conversation model: what every surface parses into and every upstream translates from.

Frozen dataclasses, closed unions. No wire format lives here: Anthropic shapes stay in ``api/``,
OpenAI shapes in ``upstream/``, the sandbox protocol in ``sandbox/``. Renderers ``match`` on these
unions and end in ``assert_never`` so a new variant cannot be forgotten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

# ---------------------------------------------------------------- content parts


@dataclass(frozen=True, slots=True)
class CacheControl:
    """A prompt-cache breakpoint (Anthropic's ``cache_control``): the prompt up to and including the part
    that carries it may be cached. Upstreams without prompt caching ignore it."""

    type: str = "ephemeral"
    ttl: str | None = None  # "5m" or "1h" where the upstream offers them


@dataclass(frozen=True, slots=True)
class Text:
    """Text. ``citations`` are the upstream's citation objects, carried as they came (their shape depends
    on the cited document: character, page or content-block locations)."""

    text: str
    cache_control: CacheControl | None = None
    citations: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Image:
    """An image by value (base64 ``data``) or by reference (``url``)."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    cache_control: CacheControl | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A document block: plain text, a base64 PDF, or a URL. ``title``/``context`` are optional labels."""

    media_type: str | None = None
    text: str | None = None
    data: str | None = None
    url: str | None = None
    title: str | None = None
    context: str | None = None
    citations: bool | None = None  # the client's ``citations: {"enabled": …}``; None: not said
    cache_control: CacheControl | None = None


@dataclass(frozen=True, slots=True)
class Thinking:
    """Model reasoning shown to the client; upstreams that cannot take it back drop it.

    A redacted block (Anthropic's ``redacted_thinking``) has ``data``, the encrypted reasoning, and no
    text. Either kind goes back to an upstream that signed it exactly as it came.
    """

    text: str
    signature: str = ""
    data: str | None = None

    @property
    def redacted(self) -> bool:
        return self.data is not None


MAX_NESTING: Final = 100
"""How deeply a tool call's ``input`` and a client tool's ``input_schema`` may nest objects and arrays.
Client input nested deeper is refused (``api/wire.py``) and so are model arguments
(``engine/turn.py``, as invalid JSON), so every encoder downstream has room for its own wrappers
(orjson writes at most 255 levels)."""


def nests_deeper_than(value: object, levels: int) -> bool:
    """Whether the JSON ``value`` nests objects and arrays more than ``levels`` deep (``{}`` is one level).

    Stops at the first container past the bound, so it recurses at most ``levels + 1`` frames.
    """
    if type(value) is dict:
        children: Any = value.values()
    elif type(value) is list:
        children = value
    else:
        return False
    if levels <= 0:
        return True
    for child in children:
        if (type(child) is dict or type(child) is list) and nests_deeper_than(child, levels - 1):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call by the model. ``server`` calls run here (``server_tool_use``); others go to the client.
    ``input`` nests at most ``MAX_NESTING`` levels.

    ``caller`` is the id of the REPL cell (a ``code_execution`` server call) whose code made a client
    call (programmatic tool calling); ``None`` for calls the model made itself. Programmatic calls and
    their results are the client's and the cell's business: the model never sees them.
    """

    id: str
    name: str
    input: Mapping[str, Any]
    server: bool = False
    cache_control: CacheControl | None = None
    caller: str | None = None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The result of a client tool, or a server result already rendered as text for the model."""

    tool_use_id: str
    content: tuple[Text | Image, ...]
    is_error: bool = False
    cache_control: CacheControl | None = None


@dataclass(frozen=True, slots=True)
class ContainerUpload:
    """A Files-API file the client wants inside the container before the model runs."""

    file_id: str


# ---------------------------------------------------------------- server tool outcomes


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file the sandbox produced and the gateway published through the Files API."""

    file_id: str
    filename: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file a command created or changed in the container's workspace (``path`` relative to it), for
    surfaces that show them (OpenAI's hosted tools cite them); ``image`` holds a small image's bytes."""

    path: str
    size_bytes: int
    image: Image | None = None


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """A finished bash command or Python program. A failing program is data, not an exception.

    ``written`` and ``figures`` (the matplotlib figures a REPL cell left open, as PNG) are filled only
    when the caller asked for them (``tools.code_execution.run_call``)."""

    stdout: str
    stderr: str
    return_code: int
    files: tuple[OutputFile, ...] = ()
    written: tuple[WrittenFile, ...] = ()
    figures: tuple[Image, ...] = ()


@dataclass(frozen=True, slots=True)
class ViewOutcome:
    file_type: Literal["text", "image", "pdf"]
    content: str
    num_lines: int | None = None
    start_line: int | None = None
    total_lines: int | None = None


@dataclass(frozen=True, slots=True)
class CreateOutcome:
    is_file_update: bool


@dataclass(frozen=True, slots=True)
class StrReplaceOutcome:
    old_start: int | None
    old_lines: int | None
    new_start: int | None
    new_lines: int | None
    lines: tuple[str, ...]


ToolErrorCode = Literal[
    "invalid_tool_input",
    "unavailable",
    "too_many_requests",
    "execution_time_exceeded",
    "output_file_too_large",
    "file_not_found",
]


@dataclass(frozen=True, slots=True)
class ToolFailure:
    """The tool could not do what was asked (as opposed to a program that ran and failed)."""

    error_code: ToolErrorCode
    message: str | None = None


ToolOutcome = CommandOutcome | ViewOutcome | CreateOutcome | StrReplaceOutcome | ToolFailure


@dataclass(frozen=True, slots=True)
class AwaitingTools:
    """Not an outcome yet: a REPL cell suspended while its code awaits client tools (programmatic tool
    calling). ``calls`` go to the client as ``tool_use`` blocks whose ``caller`` is the cell."""

    calls: tuple[ToolCall, ...]


@dataclass(frozen=True, slots=True)
class ServerToolResult:
    """The result of a server tool call, as the client sees it (``*_tool_result`` blocks).

    ``tool_name`` is the sub-tool that ran: ``bash_code_execution``, ``text_editor_code_execution`` or
    ``code_execution``; it decides which result block type the client gets.
    """

    tool_use_id: str
    tool_name: str
    outcome: ToolOutcome


Part = Text | Image | Document | Thinking | ToolCall | ToolResult | ServerToolResult | ContainerUpload


@dataclass(frozen=True, slots=True)
class Message:
    role: Literal["user", "assistant"]
    parts: tuple[Part, ...]


# ---------------------------------------------------------------- tools offered to the model


@dataclass(frozen=True, slots=True)
class ClientTool:
    """A tool the client runs itself; it reaches the upstream as a plain function.

    ``direct`` and ``from_code`` are its ``allowed_callers``: the model may call it itself (the
    default), and the code of a REPL cell may await it (programmatic tool calling), or both.
    """

    name: str
    description: str | None
    input_schema: Mapping[str, Any]
    cache_control: CacheControl | None = None
    direct: bool = True
    from_code: bool = False


@dataclass(frozen=True, slots=True)
class CodeExecutionTool:
    """Anthropic's server-side code execution tool, in one of its published versions.

    ``version`` is the date of a row of ``tools.versions`` (``"20250825"``); that table, not this type,
    knows which versions exist.
    """

    version: str
    cache_control: CacheControl | None = None


ToolSpec = ClientTool | CodeExecutionTool


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None
    disable_parallel_tool_use: bool = False


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: ``owner`` scopes containers and files; ``upstream_api_key`` is passed through.

    ``key`` is the key the client presented, whose digest ``owner`` is (``keys.key_id``): a separate
    sandbox host derives the owner from it again instead of trusting the gateway's word
    (docs/sandbox.md, "Privilege split"). Never logged: it is left out of ``repr``.
    """

    owner: str
    upstream_api_key: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class FunctionDef:
    """A function as the upstream sees it (name, description, JSON schema of its arguments)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    cache_control: CacheControl | None = None


# ---------------------------------------------------------------- a whole request


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    # OpenAI's reasoning effort (``minimal`` … ``high``), from a Responses request's ``reasoning``; sent
    # as Chat Completions' ``reasoning_effort`` where the upstream takes it.
    reasoning_effort: str | None = None


@dataclass(frozen=True, slots=True)
class ThinkingConfig:
    """Extended thinking as the client asked for it (Anthropic's ``thinking``)."""

    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None
    display: str | None = None  # newer API versions: "summarized" or "omitted"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One client request in neutral form: what the engine loop runs.

    ``system`` is the system prompt as one string; ``system_blocks`` the same as the client's blocks,
    with their cache breakpoints, for upstreams that take blocks. ``thinking``, ``service_tier`` and
    ``betas`` (the ``anthropic-beta`` values the gateway does not serve itself) reach upstreams that
    understand them; others ignore them.
    """

    model: str
    max_tokens: int
    messages: tuple[Message, ...]
    system: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: ToolChoice | None = None
    stop_sequences: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    user_id: str | None = None
    stream: bool = False
    container_id: str | None = None
    system_blocks: tuple[Text, ...] = ()
    thinking: ThinkingConfig | None = None
    service_tier: str | None = None
    betas: tuple[str, ...] = ()

    @property
    def code_execution(self) -> CodeExecutionTool | None:
        return next((t for t in self.tools if isinstance(t, CodeExecutionTool)), None)

    @property
    def client_tools(self) -> tuple[ClientTool, ...]:
        return tuple(t for t in self.tools if isinstance(t, ClientTool))

    @property
    def code_callable_tools(self) -> tuple[ClientTool, ...]:
        """The client tools a REPL cell's code may await (``allowed_callers`` names code execution)."""
        return tuple(t for t in self.tools if isinstance(t, ClientTool) and t.from_code)


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    code_execution_requests: int = 0
    cache_creation_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.code_execution_requests + other.code_execution_requests,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """What a response says about its container."""

    id: str
    expires_at: str  # RFC 3339, UTC
