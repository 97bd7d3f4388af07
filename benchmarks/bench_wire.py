"""Request validation: the hand-written parser (``api/wire.py``) side by side with msgspec.

``wire.py`` validates a Messages request by hand, in one pass, and builds the neutral model as it goes.
This prints the measurement behind that choice, per request, on the same bodies in one run:

- ``orjson + wire.py``: what the gateway does (decode the body, then ``parse_messages_request``);
- ``msgspec decode``: msgspec decoding the raw bytes straight into ``Struct`` declarations of the
  request (a tagged union of every content block ``wire.py`` accepts). It checks JSON types only: the
  semantic rules (roles per block, API-version dialects, reserved names, ranges) and the conversion
  into the neutral model would still have to be written, so this is a lower bound for a msgspec parser.

Bodies: a one-line question, and a 40-round code-execution conversation (text + ``server_tool_use`` +
bash result per round, as the SDK sends history back).

    .venv/bin/python benchmarks/bench_wire.py [-n 2000]      # needs: pip install msgspec
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
import orjson

from execbridge.api.blocks import render_block
from execbridge.api.wire import parse_messages_request
from execbridge.types import CommandOutcome, ServerToolResult, ToolCall

HEADERS = {"anthropic-version": "2023-06-01"}
TOOLS = [{"type": "code_execution_20250825", "name": "code_execution"}]

# ------------------------------------------------------------------ the request, declared for msgspec


class Source(msgspec.Struct, forbid_unknown_fields=False):
    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ImageBlock(msgspec.Struct, tag="image", tag_field="type"):
    source: Source


class DocumentBlock(msgspec.Struct, tag="document", tag_field="type"):
    source: Source
    title: str | None = None
    context: str | None = None


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type"):
    data: str


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class ServerToolUseBlock(msgspec.Struct, tag="server_tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock] | None = None
    is_error: bool | None = None


class ContainerUploadBlock(msgspec.Struct, tag="container_upload", tag_field="type"):
    file_id: str


class OutputRef(msgspec.Struct):
    type: str
    file_id: str


class ResultContent(msgspec.Struct):
    type: str
    stdout: str | None = None
    stderr: str | None = None
    return_code: int | None = None
    content: list[OutputRef] | str | None = None
    error_code: str | None = None


class BashResultBlock(msgspec.Struct, tag="bash_code_execution_tool_result", tag_field="type"):
    tool_use_id: str
    content: ResultContent


class PythonResultBlock(msgspec.Struct, tag="code_execution_tool_result", tag_field="type"):
    tool_use_id: str
    content: ResultContent


class EditorResultBlock(msgspec.Struct, tag="text_editor_code_execution_tool_result", tag_field="type"):
    tool_use_id: str
    content: dict[str, Any]


Block = (
    TextBlock
    | ImageBlock
    | DocumentBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ToolUseBlock
    | ServerToolUseBlock
    | ToolResultBlock
    | ContainerUploadBlock
    | BashResultBlock
    | PythonResultBlock
    | EditorResultBlock
)


class MessageParam(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(msgspec.Struct):
    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoiceParam(msgspec.Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(msgspec.Struct):
    model: str
    max_tokens: int
    messages: list[MessageParam]
    system: str | list[TextBlock] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None
    stream: bool | None = None
    container: str | dict[str, Any] | None = None


# ------------------------------------------------------------------ bodies and timing


def small() -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi!"}]}


def conversation(rounds: int = 40) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Analyse the data in /workspace."}]
    content: list[dict[str, Any]] = []
    for i in range(rounds):
        call = ToolCall(f"srvtoolu_{i:04d}", "bash_code_execution", {"command": f"python step_{i}.py"}, server=True)
        result = ServerToolResult(call.id, call.name, CommandOutcome(f"step {i} done\n" * 5, "", 0))
        content += [{"type": "text", "text": f"Step {i}.", "citations": None}, render_block(call), render_block(result)]
    messages.append({"role": "assistant", "content": content})
    messages.append({"role": "user", "content": "Now summarise."})
    return {"model": "claude-sonnet-4-5", "max_tokens": 4096, "tools": TOOLS, "messages": messages}


def per_call_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 200)):  # warm up
        fn()
    best = float("inf")
    for _ in range(5):  # best of five: the run least disturbed by the rest of the machine
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    decoder = msgspec.json.Decoder(MessagesRequest)
    print(f"{'body':<24}{'orjson + wire.py':>18}{'msgspec decode':>16}{'wire.py / msgspec':>19}")
    for name, body in (("one question", small()), ("40-round conversation", conversation())):
        raw = orjson.dumps(body)
        assert decoder.decode(raw).model == body["model"]  # the declarations accept the body
        hand = per_call_us(lambda raw=raw: parse_messages_request(orjson.loads(raw), HEADERS), args.n)
        declared = per_call_us(lambda raw=raw: decoder.decode(raw), args.n)
        print(f"{name:<24}{hand:>16.1f}µs{declared:>14.1f}µs{hand / declared:>18.1f}x")


if __name__ == "__main__":
    main()
