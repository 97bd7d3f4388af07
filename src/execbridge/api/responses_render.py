"""The engine's events as OpenAI Responses stream events, and the Response object they build.

Job: the third renderer of the one loop (next to ``render_json`` and ``render_sse``). ``ResponseRenderer``
turns each ``EngineEvent`` into the Responses API's stream events, in OpenAI's order, numbered from
0 (docs/protocol.md §5.2, "The Responses API", streaming), and keeps the Response object up to date;
a non-streaming response is the last event's ``response``, so both answers come from the same code.

Mapping: a text block is a ``message`` item; thinking is a ``reasoning`` item; a client call is a
``function_call``; the Python sub-tool is a ``code_interpreter_call`` (its code streamed as code
deltas, decoded from the argument JSON as it grows); the bash sub-tool is a ``shell_call`` followed by
its ``shell_call_output``. Image outputs and file citations come from an ``Artifacts`` source.

Must not: run the loop or catch its errors (the route turns an error after the start into
``response.failed``, with ``failed``); the Response it builds always holds code interpreter outputs
(``client_view`` leaves them out for clients that did not ask).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, assert_never

import orjson
import pydantic_core

from execbridge import ids
from execbridge.api.responses_items import JSON, call_id_of, ci_id_of, item_id
from execbridge.api.responses_request import ResponsesRequest
from execbridge.engine.events import (
    BlockFinished,
    BlockStarted,
    CitationsDelta,
    EngineEvent,
    Heartbeat,
    InputJsonDelta,
    MessageFinished,
    MessageStarted,
    ServerToolResultReady,
    TextDelta,
    ThinkingDelta,
)
from execbridge.tools.versions import BASH
from execbridge.types import CommandOutcome, ServerToolResult, StopReason, Text, Thinking, ToolCall, ToolFailure, Usage

__all__ = ["KEEP_ALIVE", "Artifacts", "NoArtifacts", "ResponseRenderer", "client_view", "usage_object"]

KEEP_ALIVE: Final[JSON] = {}
"""Yielded for a heartbeat: no event, but a stream may write a comment to keep the connection open."""

_INCOMPLETE: Final[Mapping[StopReason, str]] = {"max_tokens": "max_output_tokens", "pause_turn": "max_messages"}


class Artifacts(Protocol):
    """What a hosted tool left behind, as the Responses API shows it (docs/protocol.md §5.2, "The Responses API")."""

    async def outputs(self, container_id: str, result: ServerToolResult) -> list[JSON]:
        """``image`` outputs of a code interpreter call (its ``logs`` are the renderer's)."""
        ...

    async def citations(self, container_id: str, text: str) -> list[JSON]:
        """``container_file_citation`` annotations for the ``sandbox:/mnt/data/…`` links in ``text``."""
        ...


class NoArtifacts:
    async def outputs(self, container_id: str, result: ServerToolResult) -> list[JSON]:
        return []

    async def citations(self, container_id: str, text: str) -> list[JSON]:
        return []


def usage_object(usage: Usage) -> JSON:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens,
            "cache_write_tokens": usage.cache_creation_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def client_view(response: JSON, *, include_outputs: bool) -> JSON:
    """``response`` as a client sees it: code interpreter ``outputs`` are null unless it asked for them."""
    if include_outputs:
        return response
    output = [{**i, "outputs": None} if i.get("type") == "code_interpreter_call" else i for i in response["output"]]
    return {**response, "output": output}


def logs_of(outcome: object) -> str:
    """What a code interpreter call's ``logs`` output says: its stdout, then its stderr."""
    if isinstance(outcome, CommandOutcome):
        return outcome.stdout + outcome.stderr
    if isinstance(outcome, ToolFailure):
        return f"{outcome.error_code}: {outcome.message}" if outcome.message else outcome.error_code
    return ""


def _shell_output(outcome: object) -> JSON:
    if isinstance(outcome, CommandOutcome):
        return {
            "stdout": outcome.stdout,
            "stderr": outcome.stderr,
            "outcome": {"type": "exit", "exit_code": outcome.return_code},
        }
    if isinstance(outcome, ToolFailure) and outcome.error_code == "execution_time_exceeded":
        return {"stdout": "", "stderr": "", "outcome": {"type": "timeout"}}
    return {"stdout": "", "stderr": logs_of(outcome), "outcome": {"type": "exit", "exit_code": 1}}


@dataclass(slots=True)
class _Open:
    """The item being streamed: its output index, the call's argument JSON so far and what of its
    code or command has been sent as deltas."""

    index: int
    arguments: str = ""
    sent: str = ""


@dataclass(slots=True)
class ResponseRenderer:
    """Renders one response. ``container_id`` is the container the Response names (None: the one the
    engine reports when the message starts); ``calls`` are the conversation's calls by id, for results
    of calls deferred from an earlier response."""

    request: ResponsesRequest
    response_id: str = field(default_factory=lambda: ids.new_id("resp"))
    container_id: str | None = None
    calls: Mapping[str, ToolCall] = field(default_factory=dict)
    artifacts: Artifacts = field(default_factory=NoArtifacts)
    created_at: int = field(default_factory=lambda: int(time.time()))
    response: JSON = field(init=False)
    _sequence: int = 0
    _open: _Open | None = None
    _by_call: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.response = self._shell()

    # ------------------------------------------------------------ the Response object

    def _shell(self) -> JSON:
        request = self.request
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": "in_progress",
            "background": False,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": request.model,
            "output": [],
            "parallel_tool_calls": request.parallel_tool_calls,
            "previous_response_id": request.previous_response_id,
            "service_tier": "default",
            "store": request.store,
            "temperature": 1.0 if request.temperature is None else request.temperature,
            "tool_choice": request.tool_choice_echo,
            "tools": request.tools,
            "top_p": 1.0 if request.top_p is None else request.top_p,
            "usage": None,
            **request.echo,
        }

    def _tools_echo(self) -> list[JSON]:
        """The tools as sent, but a shell tool on an automatic container names the container (OpenAI
        rewrites it so; a ``code_interpreter`` tool is echoed unchanged)."""
        echoed = []
        for tool in self.request.tools:
            environment = tool.get("environment")
            auto = environment is None or (
                isinstance(environment, dict) and environment.get("type") == "container_auto"
            )
            if tool.get("type") == "shell" and auto and self.container_id:
                tool = {**tool, "environment": {"type": "container_reference", "container_id": self.container_id}}
            echoed.append(tool)
        return echoed

    def _event(self, kind: str, **fields: Any) -> JSON:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _lifecycle(self, kind: str) -> JSON:
        # A shallow copy is a snapshot here: it is taken when the output is still empty (created, in
        # progress) or final (completed, incomplete, failed), and events are encoded as they come.
        return self._event(kind, response={**self.response, "output": list(self.response["output"])})

    def failed(self, message: str, code: str = "server_error") -> JSON:
        """The ``response.failed`` event for an error after the stream started."""
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        return self._lifecycle("response.failed")

    # ------------------------------------------------------------ events

    async def render(self, events: AsyncIterable[EngineEvent]) -> AsyncGenerator[Sequence[JSON], None]:
        """The stream events of each engine event, together (a stream writes them at once)."""
        async for event in events:
            out = await self._on(event)
            if out:
                yield out

    async def _on(self, event: EngineEvent) -> Sequence[JSON]:
        match event:
            case MessageStarted(container=container):
                if self.container_id is None and container is not None:
                    self.container_id = container.id
                self.response["tools"] = self._tools_echo()
                return [self._lifecycle("response.created"), self._lifecycle("response.in_progress")]
            case BlockStarted(block=block):
                return self._started(block)
            case TextDelta(text=text):
                item = self._item()
                return [self._event("response.output_text.delta", **self._text_ref(item), delta=text, logprobs=[])]
            case ThinkingDelta(text=text):
                item = self._item()
                return [
                    self._event(
                        "response.reasoning_text.delta",
                        item_id=item["id"],
                        output_index=self._index(),
                        content_index=0,
                        delta=text,
                    )
                ]
            case InputJsonDelta(partial_json=fragment):
                return self._arguments(fragment)
            case BlockFinished(block=block):
                return await self._finished(block)
            case ServerToolResultReady(result=result):
                return await self._result(result)
            case MessageFinished(stop_reason=stop_reason, usage=usage):
                return [*self._deferred(), self._completed(stop_reason, usage)]
            case CitationsDelta():
                return []  # an Anthropic upstream's document citations have no Responses form here
            case Heartbeat():
                return [KEEP_ALIVE]
            case _:
                assert_never(event)

    def _add(self, item: JSON) -> JSON:
        index = len(self.response["output"])
        self.response["output"].append(item)
        self._open = _Open(index)
        return self._event("response.output_item.added", output_index=index, item=dict(item))

    def _item(self) -> JSON:
        assert self._open is not None, "a delta outside a block"
        item: JSON = self.response["output"][self._open.index]
        return item

    def _index(self) -> int:
        assert self._open is not None
        return self._open.index

    def _text_ref(self, item: JSON) -> JSON:
        return {"item_id": item["id"], "output_index": self._index(), "content_index": 0}

    def _done(self, index: int) -> JSON:
        item = self.response["output"][index]
        return self._event("response.output_item.done", output_index=index, item=dict(item))

    def _started(self, block: Text | Thinking | ToolCall) -> list[JSON]:
        match block:
            case Text():
                item: JSON = {
                    "id": ids.new_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                }
                added = self._add(item)
                part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
                return [added, self._event("response.content_part.added", **self._text_ref(item), part=part)]
            case Thinking():
                item = {"id": ids.new_id("rs"), "type": "reasoning", "summary": [], "status": "in_progress"}
                return [self._add(item)]
            case ToolCall(server=False):
                item = {
                    "id": item_id("fc", block.id),
                    "type": "function_call",
                    "call_id": call_id_of(block.id),
                    "name": block.name,
                    "arguments": "",
                    "status": "in_progress",
                }
                return [self._add(item)]
            case ToolCall(name=name) if name == BASH:
                self._by_call[block.id] = len(self.response["output"])
                added = self._add(self._shell_call(block, []))
                index = self._index()
                return [
                    added,
                    self._event("response.shell_call_command.added", output_index=index, command_index=0, command=""),
                ]
            case ToolCall():
                self._by_call[block.id] = len(self.response["output"])
                added = self._add(self._ci_call(block.id))
                progress = self._event(
                    "response.code_interpreter_call.in_progress",
                    output_index=self._index(),
                    item_id=added["item"]["id"],
                )
                return [added, progress]
            case _:
                assert_never(block)

    def _ci_call(self, tool_id: str) -> JSON:
        return {
            "id": ci_id_of(tool_id),
            "type": "code_interpreter_call",
            "status": "in_progress",
            "code": "",
            "container_id": self.container_id,
            "outputs": [],
        }

    def _shell_call(self, block: ToolCall, commands: list[str]) -> JSON:
        return {
            "id": item_id("sh", block.id),
            "type": "shell_call",
            "call_id": call_id_of(block.id),
            "status": "in_progress",
            "action": {"commands": commands, "timeout_ms": None, "max_output_length": None},
            "environment": {"type": "container_reference", "container_id": self.container_id},
        }

    def _arguments(self, fragment: str) -> list[JSON]:
        opened = self._open
        assert opened is not None
        opened.arguments += fragment
        item = self._item()
        match item["type"]:
            case "function_call":
                item["arguments"] = opened.arguments
                return [
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=opened.index,
                        delta=fragment,
                    )
                ]
            case "code_interpreter_call":
                delta = self._grown(opened, "code")
                if not delta:
                    return []
                item["code"] = opened.sent
                return [
                    self._event(
                        "response.code_interpreter_call_code.delta",
                        item_id=item["id"],
                        output_index=opened.index,
                        delta=delta,
                    )
                ]
            case "shell_call":
                delta = self._grown(opened, "command")
                if not delta:
                    return []
                return [
                    self._event(
                        "response.shell_call_command.delta", output_index=opened.index, command_index=0, delta=delta
                    )
                ]
        return []

    @staticmethod
    def _grown(opened: _Open, key: str) -> str:
        """What the argument ``key`` gained since the last delta, read from the partial JSON."""
        try:
            value = pydantic_core.from_json(opened.arguments, allow_partial="trailing-strings")
        except ValueError:
            return ""
        text = value.get(key) if isinstance(value, dict) else None
        if not isinstance(text, str) or not text.startswith(opened.sent) or len(text) == len(opened.sent):
            return ""
        delta = text[len(opened.sent) :]
        opened.sent = text
        return delta

    async def _finished(self, block: Text | Thinking | ToolCall) -> list[JSON]:
        opened = self._open
        assert opened is not None
        item = self._item()
        index = opened.index
        self._open = None
        match block:
            case Text(text=text):
                annotations = await self.artifacts.citations(self.container_id, text) if self.container_id else []
                ref = {"item_id": item["id"], "output_index": index, "content_index": 0}
                out = [
                    self._event("response.output_text.annotation.added", **ref, annotation_index=i, annotation=a)
                    for i, a in enumerate(annotations)
                ]
                part = {"type": "output_text", "annotations": annotations, "logprobs": [], "text": text}
                item["content"] = [part]
                item["status"] = "completed"
                out.append(self._event("response.output_text.done", **ref, text=text, logprobs=[]))
                out.append(self._event("response.content_part.done", **ref, part=part))
                out.append(self._done(index))
                return out
            case Thinking(text=text):
                item["content"] = [{"type": "reasoning_text", "text": text}]
                item["status"] = "completed"
                done = self._event(
                    "response.reasoning_text.done", item_id=item["id"], output_index=index, content_index=0, text=text
                )
                return [done, self._done(index)]
            case ToolCall(server=False):
                arguments = opened.arguments if _is_json(opened.arguments) else orjson.dumps(block.input).decode()
                item["arguments"] = arguments
                item["status"] = "completed"
                done = self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=arguments,
                )
                return [done, self._done(index)]
            case ToolCall(name=name) if name == BASH:
                command = str(block.input.get("command", ""))
                item["action"]["commands"] = [command]
                item["status"] = "completed"
                out = []
                if command.startswith(opened.sent) and len(command) > len(opened.sent):
                    out.append(
                        self._event(
                            "response.shell_call_command.delta",
                            output_index=index,
                            command_index=0,
                            delta=command[len(opened.sent) :],
                        )
                    )
                out.append(
                    self._event(
                        "response.shell_call_command.done", output_index=index, command_index=0, command=command
                    )
                )
                out.append(self._done(index))
                return out
            case ToolCall():
                code = str(block.input.get("code", ""))
                out = []
                if code.startswith(opened.sent) and len(code) > len(opened.sent):
                    out.append(
                        self._event(
                            "response.code_interpreter_call_code.delta",
                            item_id=item["id"],
                            output_index=index,
                            delta=code[len(opened.sent) :],
                        )
                    )
                item["code"] = code
                item["status"] = "interpreting"
                out.append(
                    self._event(
                        "response.code_interpreter_call_code.done", item_id=item["id"], output_index=index, code=code
                    )
                )
                out.append(
                    self._event("response.code_interpreter_call.interpreting", item_id=item["id"], output_index=index)
                )
                return out
            case _:
                assert_never(block)

    async def _result(self, result: ServerToolResult) -> list[JSON]:
        if result.tool_name == BASH:
            return await self._shell_result(result)
        out: list[JSON] = []
        index = self._by_call.get(result.tool_use_id)
        if index is None:  # a call deferred from an earlier response runs first: it gets its item now
            call = self.calls.get(result.tool_use_id)
            item = self._ci_call(result.tool_use_id)
            item["code"] = str(call.input.get("code", "")) if call is not None else ""
            out.append(self._add(item))
            self._open = None
            index = len(self.response["output"]) - 1
        item = self.response["output"][index]
        images = await self.artifacts.outputs(self.container_id, result) if self.container_id else []
        logs = logs_of(result.outcome)
        item["outputs"] = [*images, {"type": "logs", "logs": logs}] if logs or not images else images
        # A program that failed is a completed call whose logs say so; a call the sandbox could not run is
        # ``failed`` (docs/protocol.md §5.2, "The Responses API").
        item["status"] = "failed" if isinstance(result.outcome, ToolFailure) else "completed"
        out.append(self._event("response.code_interpreter_call.completed", item_id=item["id"], output_index=index))
        out.append(self._done(index))
        return out

    async def _shell_result(self, result: ServerToolResult) -> list[JSON]:
        if self.container_id:
            await self.artifacts.outputs(self.container_id, result)  # what it wrote may be cited later
        out: list[JSON] = []
        if result.tool_use_id not in self._by_call:  # deferred from an earlier response
            call = self.calls.get(result.tool_use_id) or ToolCall(result.tool_use_id, BASH, {}, server=True)
            command = str(call.input.get("command", ""))
            self._by_call[call.id] = len(self.response["output"])
            out.append(self._add({**self._shell_call(call, [command]), "status": "completed"}))
            out.append(self._done(self._index()))
        item: JSON = {
            "id": item_id("sho", result.tool_use_id),
            "type": "shell_call_output",
            "call_id": call_id_of(result.tool_use_id),
            "status": "in_progress",
            "output": [],
            "max_output_length": None,
        }
        out.append(self._add(item))
        index = self._index()
        self._open = None
        entry = _shell_output(result.outcome)
        ref = {"item_id": item["id"], "output_index": index, "command_index": 0}
        delta = {"stdout": entry["stdout"], "stderr": entry["stderr"]}
        out.append(self._event("response.shell_call_output_content.delta", **ref, delta=delta))
        out.append(self._event("response.shell_call_output_content.done", **ref, output=[entry]))
        item["output"] = [entry]
        item["status"] = "completed"
        out.append(self._done(index))
        return out

    def _deferred(self) -> list[JSON]:
        """Code interpreter calls left without a result: deferred (a function was called in the same
        batch). They end ``incomplete`` and run first in the response that answers the function."""
        out = []
        for index, item in enumerate(self.response["output"]):
            if item["type"] == "code_interpreter_call" and item["status"] == "interpreting":
                item["status"] = "incomplete"
                item["outputs"] = None
                out.append(self._done(index))
        return out

    def _completed(self, stop_reason: StopReason, usage: Usage) -> JSON:
        self.response["usage"] = usage_object(usage)
        reason = _INCOMPLETE.get(stop_reason)
        if reason is not None:
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": reason}
            return self._lifecycle("response.incomplete")
        self.response["status"] = "completed"
        self.response["completed_at"] = int(time.time())
        return self._lifecycle("response.completed")


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return bool(text)
