"""``POST /v1/responses`` bodies: check one and say what it asks for (docs/protocol.md §5.2, "The Responses API").

Job: the request half of the Responses surface. ``parse_responses_request`` checks the body in one
pass (errors name the field, like OpenAI's ``param``) and returns a ``ResponsesRequest``: the input
items in stored form, the tools, the options the engine needs, and the fields the Response echoes.
``generation_request`` then builds the neutral ``GenerationRequest`` from it and the conversation
(the ``previous_response_id`` chain's items, then this input).

Must not: read the store, run anything, or render a Response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from execbridge.api._checks import at, fail, kind_of, nested_at_most, opt_int, opt_str, req_str, wrong
from execbridge.api.responses_items import JSON, Conversation, normalize_input
from execbridge.errors import InvalidRequest
from execbridge.tools.versions import BASH, PYTHON, TOOL_NAME, openai_tool
from execbridge.types import (
    ClientTool,
    GenerationRequest,
    Message,
    Sampling,
    Text,
    ToolChoice,
    ToolSpec,
)

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "INCLUDE_OUTPUTS",
    "ContainerChoice",
    "ResponsesRequest",
    "generation_request",
    "parse_responses_request",
]

DEFAULT_MAX_OUTPUT_TOKENS: Final = 8192
"""The upstream's ``max_tokens`` when the client sets no ``max_output_tokens`` (Chat Completions
upstreams want a number; OpenAI itself has none)."""

INCLUDE_OUTPUTS: Final = "code_interpreter_call.outputs"

# Accepted and echoed or ignored (docs/protocol.md §5.2, "The Responses API"); anything else is a 400,
# as OpenAI answers.
_KNOWN: Final = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "include",
        "previous_response_id",
        "store",
        "stream",
        "stream_options",
        "max_output_tokens",
        "max_tool_calls",
        "temperature",
        "top_p",
        "top_logprobs",
        "text",
        "reasoning",
        "metadata",
        "truncation",
        "background",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "service_tier",
    }
)
_INCLUDABLE: Final = frozenset(
    {
        INCLUDE_OUTPUTS,
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
    }
)
_MEMORY_LIMITS: Final = ("1g", "4g", "16g", "64g")
_EFFORTS: Final = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True, slots=True)
class ContainerChoice:
    """Where the hosted tools run: a named container (``cntr_…``, or this gateway's own ids), or one
    chosen automatically (reused from the conversation, else new) with ``file_ids`` put in it."""

    container_id: str | None = None
    file_ids: tuple[str, ...] = ()
    memory_limit: str | None = None


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    model: str
    input_items: list[JSON]
    instructions: str | None
    tools: list[JSON]  # as sent, for the Response's echo
    functions: tuple[ClientTool, ...]
    code_interpreter: bool
    shell: bool
    container: ContainerChoice | None
    tool_choice: ToolChoice | None
    tool_choice_echo: str | JSON
    parallel_tool_calls: bool
    include_outputs: bool
    previous_response_id: str | None
    store: bool
    stream: bool
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    user: str | None
    reasoning_effort: str | None
    echo: JSON = field(default_factory=dict)  # the other fields the Response repeats as sent


def _opt_number(body: JSON, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) not in (int, float):
        wrong("", key, "a number", value)
    if not low <= value <= high:
        fail(key, f"must be between {low:g} and {high:g}, got {value}")
    return float(value)


def _opt_bool(body: JSON, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if type(value) is not bool:
        wrong("", key, "a boolean", value)
    return value


def parse_responses_request(body: JSON) -> ResponsesRequest:
    """Check ``body``; every problem is an ``InvalidRequest`` naming its field, in its message (the
    ``_checks`` style, ``tools.0.type: …``) and as ``param`` (OpenAI's ``error.param``)."""
    try:
        return _parse(body)
    except InvalidRequest as error:
        if error.param is None and ": " in error.message:
            error.param = error.message.split(": ", 1)[0]
        raise


def _parse(body: JSON) -> ResponsesRequest:
    if type(body) is not dict:
        raise InvalidRequest("request body must be a JSON object")
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise InvalidRequest(f"Unknown parameter: '{unknown[0]}' (not supported by this gateway).", param=unknown[0])
    model = req_str(body, "model", "")
    if body.get("background"):
        fail("background", "background responses are not supported by this gateway")
    previous = opt_str(body, "previous_response_id", "")
    raw_input = body.get("input")
    if raw_input is None and previous is None:
        fail("input", "Field required (unless previous_response_id continues a response)")
    items = normalize_input(raw_input) if raw_input is not None else []
    tools, functions, code_interpreter, shell, container = _tools(body.get("tools"))
    choice, choice_echo = _tool_choice(body.get("tool_choice"), functions, code_interpreter, shell)
    include = body.get("include") or []
    if type(include) is not list or not all(type(i) is str for i in include):
        wrong("", "include", "an array of strings", include)
    for i, value in enumerate(include):
        if value not in _INCLUDABLE:
            fail(at("include", i), f"unknown value {value!r}")
    parallel = _opt_bool(body, "parallel_tool_calls", True)
    if choice is not None and not parallel:
        choice = ToolChoice(choice.mode, choice.name, disable_parallel_tool_use=True)
    elif choice is None and not parallel:
        choice = ToolChoice("auto", disable_parallel_tool_use=True)
    text = body.get("text")
    if text is not None:
        fmt = text.get("format") if type(text) is dict else None
        if type(text) is not dict or (fmt is not None and (type(fmt) is not dict or fmt.get("type") != "text")):
            fail("text.format", "only the 'text' format is supported by this gateway")
    metadata = body.get("metadata")
    if metadata is not None and (type(metadata) is not dict or not all(type(v) is str for v in metadata.values())):
        fail("metadata", "expected an object of string values")
    reasoning = body.get("reasoning")
    if reasoning is not None and type(reasoning) is not dict:
        wrong("", "reasoning", "an object", reasoning)
    effort = reasoning.get("effort") if reasoning else None
    if effort is not None and effort not in _EFFORTS:
        fail("reasoning.effort", f"expected one of {', '.join(map(repr, _EFFORTS))}, got {effort!r}")
    return ResponsesRequest(
        model=model,
        input_items=items,
        instructions=opt_str(body, "instructions", ""),
        tools=tools,
        functions=functions,
        code_interpreter=code_interpreter,
        shell=shell,
        container=container,
        tool_choice=choice,
        tool_choice_echo=choice_echo,
        parallel_tool_calls=parallel,
        include_outputs=INCLUDE_OUTPUTS in include,
        previous_response_id=previous,
        store=_opt_bool(body, "store", True),
        stream=_opt_bool(body, "stream", False),
        max_output_tokens=opt_int(body, "max_output_tokens", "", minimum=1, maximum=2**31 - 1),
        temperature=_opt_number(body, "temperature", 0, 2),
        top_p=_opt_number(body, "top_p", 0, 1),
        user=opt_str(body, "safety_identifier", "") or opt_str(body, "user", ""),
        reasoning_effort=effort,
        echo={
            "metadata": metadata or {},
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
            if reasoning
            else {"effort": None, "summary": None},
            "text": {"format": {"type": "text"}},
            "truncation": body.get("truncation") or "disabled",
            "max_tool_calls": opt_int(body, "max_tool_calls", "", minimum=1),
            "top_logprobs": opt_int(body, "top_logprobs", "", minimum=0, maximum=20) or 0,
            "user": body.get("user") if type(body.get("user")) is str else None,
            "safety_identifier": body.get("safety_identifier") if type(body.get("safety_identifier")) is str else None,
            "prompt_cache_key": body.get("prompt_cache_key") if type(body.get("prompt_cache_key")) is str else None,
        },
    )


def _tools(
    value: object,
) -> tuple[list[JSON], tuple[ClientTool, ...], bool, bool, ContainerChoice | None]:
    if value is None:
        return [], (), False, False, None
    if type(value) is not list:
        wrong("", "tools", "an array", value)
    functions: list[ClientTool] = []
    code_interpreter = shell = False
    containers: list[ContainerChoice] = []
    for i, tool in enumerate(value):
        path = at("tools", i)
        if type(tool) is not dict:
            fail(path, f"expected an object, got {kind_of(tool)}")
        kind = tool.get("type")
        if kind == "function":
            functions.append(_function(tool, path))
        elif kind == "code_interpreter":
            code_interpreter = True
            containers.append(_ci_container(tool.get("container"), at(path, "container")))
        elif kind == "shell":
            shell = True
            containers.append(_shell_container(tool.get("environment"), at(path, "environment")))
        else:
            fail(
                at(path, "type"),
                f"tool type {kind!r} is not supported by this gateway (code_interpreter, shell, function)",
            )
    names = [f.name for f in functions]
    for name in names:
        if names.count(name) > 1:
            fail("tools", f"function name {name!r} is used twice")
        if name in (PYTHON, BASH):
            fail("tools", f"function name {name!r} is reserved by the hosted tools of this gateway")
    named = {c.container_id for c in containers if c.container_id}
    if len(named) > 1:
        fail("tools", "code_interpreter and shell must use the same container")
    container = None
    if containers:
        file_ids = tuple(dict.fromkeys(f for c in containers for f in c.file_ids))
        memory = next((c.memory_limit for c in containers if c.memory_limit), None)
        container = ContainerChoice(next(iter(named), None), file_ids, memory)
    return list(value), tuple(functions), code_interpreter, shell, container


def _function(tool: JSON, path: str) -> ClientTool:
    name = req_str(tool, "name", path)
    if not name or len(name) > 128 or not all(c.isalnum() or c in "_-" for c in name):
        fail(at(path, "name"), "must be 1-128 letters, digits, underscores or dashes")
    parameters = tool.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    elif type(parameters) is not dict:
        wrong(path, "parameters", "an object", parameters)
    return ClientTool(name, opt_str(tool, "description", path), nested_at_most(parameters, at(path, "parameters")))


def _auto(value: JSON, path: str) -> ContainerChoice:
    file_ids = value.get("file_ids") or []
    if type(file_ids) is not list or not all(type(f) is str for f in file_ids):
        wrong(path, "file_ids", "an array of file ids", file_ids)
    memory = value.get("memory_limit")
    if memory is not None and memory not in _MEMORY_LIMITS:
        fail(at(path, "memory_limit"), f"expected one of {', '.join(map(repr, _MEMORY_LIMITS))}, got {memory!r}")
    return ContainerChoice(None, tuple(file_ids), memory)


def _ci_container(value: object, path: str) -> ContainerChoice:
    if type(value) is str and value:
        return ContainerChoice(value)
    if type(value) is dict and value.get("type") == "auto":
        return _auto(value, path)
    fail(path, "expected a container id or {'type': 'auto'}")


def _shell_container(value: object, path: str) -> ContainerChoice:
    if value is None:
        return ContainerChoice()
    if type(value) is dict and value.get("type") == "container_auto":
        return _auto(value, path)
    if type(value) is dict and value.get("type") == "container_reference":
        return ContainerChoice(req_str(value, "container_id", path))
    kind = value.get("type") if type(value) is dict else kind_of(value)
    fail(path, f"environment {kind!r} is not supported by this gateway (container_auto, container_reference)")


def _tool_choice(
    value: object, functions: Iterable[ClientTool], code_interpreter: bool, shell: bool
) -> tuple[ToolChoice | None, str | JSON]:
    if value is None:
        return None, "auto"
    echo: str | JSON = value if isinstance(value, str | dict) else "auto"
    match value:
        case "auto":
            return ToolChoice("auto"), echo
        case "none":
            return ToolChoice("none"), echo
        case "required":
            return ToolChoice("any"), echo
        case {"type": "function", "name": str(name)}:
            if name not in {f.name for f in functions}:
                fail("tool_choice.name", f"no function named {name!r} in tools")
            return ToolChoice("tool", name), echo
        case {"type": "code_interpreter"}:
            if not code_interpreter:
                fail("tool_choice", "the code_interpreter tool is not in tools")
            return ToolChoice("tool", TOOL_NAME), echo  # the Python sub-tool (or any, next to shell)
        case {"type": "shell"}:
            if not shell:
                fail("tool_choice", "the shell tool is not in tools")
            return ToolChoice("tool", BASH), echo
        case {"type": "allowed_tools", "mode": "auto" | "required" as mode}:
            # The list narrows nothing here: every tool stays offered (docs/protocol.md §5.2, "The Responses API").
            return ToolChoice("auto" if mode == "auto" else "any"), echo
    fail("tool_choice", "expected 'auto', 'none', 'required' or a tool choice object")


def generation_request(
    request: ResponsesRequest, conversation: Conversation, container_id: str | None, *, placed: Sequence[str] = ()
) -> GenerationRequest:
    """The engine's request: ``conversation`` is every item the model sees (earlier ones, then the
    input), as ``to_conversation`` made it; ``container_id`` is the sandbox container the hosted tools
    use; ``placed`` are the paths the request's ``file_ids`` were put at, which the model is told in
    the latest user turn."""
    messages = list(conversation.messages)
    if placed:
        note = Text("[Files the user provided, in the container: " + ", ".join(placed) + "]")
        last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
        if last is None:
            messages.append(Message("user", (note,)))
        else:
            messages[last] = Message("user", (note, *messages[last].parts))
    system = [request.instructions] if request.instructions else []
    system += conversation.system
    tools: list[ToolSpec] = []
    if request.code_interpreter or request.shell:
        tools.append(openai_tool(code_interpreter=request.code_interpreter, shell=request.shell))
    tools.extend(request.functions)
    return GenerationRequest(
        model=request.model,
        max_tokens=request.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS,
        messages=tuple(messages),
        system="\n\n".join(system) or None,
        tools=tuple(tools),
        tool_choice=request.tool_choice,
        sampling=Sampling(
            temperature=request.temperature, top_p=request.top_p, reasoning_effort=request.reasoning_effort
        ),
        user_id=request.user,
        stream=request.stream,
        container_id=container_id,
    )
