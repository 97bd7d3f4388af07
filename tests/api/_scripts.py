"""Scripted engine event streams shared by the renderer tests and their golden transcripts.

Each script is what the engine loop would yield for one response; ids and timestamps are fixed so the
rendered JSON/SSE is byte-stable.
"""

from __future__ import annotations

from collections.abc import Callable

from execbridge.engine.events import (
    BlockFinished,
    BlockStarted,
    EngineEvent,
    Heartbeat,
    InputJsonDelta,
    MessageFinished,
    MessageStarted,
    ServerToolResultReady,
    TextDelta,
    ThinkingDelta,
)
from execbridge.types import (
    CommandOutcome,
    ContainerRef,
    CreateOutcome,
    OutputFile,
    ServerToolResult,
    StrReplaceOutcome,
    Text,
    Thinking,
    ToolCall,
    ToolFailure,
    Usage,
    ViewOutcome,
)

MODEL = "claude-sonnet-4-5"
CONTAINER = ContainerRef("container_011CPR5CNjB747bTd36fQLFk", "2026-11-24T12:34:56.000000Z")


def _start(n: int = 1, container: ContainerRef | None = None) -> MessageStarted:
    return MessageStarted(f"msg_011CTest{n:04d}", MODEL, Usage(input_tokens=25, output_tokens=1), container)


def _text(*chunks: str) -> list[EngineEvent]:
    return [BlockStarted(Text("")), *(TextDelta(c) for c in chunks), BlockFinished(Text("".join(chunks)))]


def _call(
    id_: str, name: str, fragments: list[str], final: dict[str, object], server: bool = True
) -> list[EngineEvent]:
    return [
        BlockStarted(ToolCall(id_, name, {}, server=server)),
        *(InputJsonDelta(f) for f in fragments),
        BlockFinished(ToolCall(id_, name, final, server=server)),
    ]


def plain_text() -> list[EngineEvent]:
    return [
        _start(1),
        *_text("Hi", "!"),
        MessageFinished("end_turn", None, Usage(input_tokens=25, output_tokens=12), None),
    ]


def bash_session() -> list[EngineEvent]:
    """The docs/protocol.md §2.13 conversation (20250825): an editor create, a bash run with an output file."""
    file_text = "import numpy as np\nprint(np.std([1,2,3]))\n"
    return [
        _start(2, CONTAINER),
        *_text("I'll write a script ", "and run it."),
        *_call(
            "srvtoolu_01C4",
            "text_editor_code_execution",
            [
                '{"command": "create", ',
                '"path": "stats.py", ',
                '"file_text": "import numpy as np\\nprint(np.std([1,2,3]))\\n"}',
            ],
            {"command": "create", "path": "stats.py", "file_text": file_text},
        ),
        ServerToolResultReady(ServerToolResult("srvtoolu_01C4", "text_editor_code_execution", CreateOutcome(False))),
        *_call(
            "srvtoolu_01D5",
            "bash_code_execution",
            ["", '{"command": "python stats.py', ' > out.txt; cp out.txt $OUTPUT_DIR"}'],
            {"command": "python stats.py > out.txt; cp out.txt $OUTPUT_DIR"},
        ),
        Heartbeat(),
        ServerToolResultReady(
            ServerToolResult(
                "srvtoolu_01D5",
                "bash_code_execution",
                CommandOutcome("0.816496580927726\n", "", 0, (OutputFile("file_011CTestOut", "out.txt", 18),)),
            )
        ),
        *_text("The population standard deviation is ≈ 0.8165."),
        MessageFinished(
            "end_turn", None, Usage(input_tokens=1520, output_tokens=210, code_execution_requests=2), CONTAINER
        ),
    ]


def python_legacy() -> list[EngineEvent]:
    """20250522: Python ``code_execution`` with a generated file, a failing program, and a tool error."""
    return [
        _start(3, CONTAINER),
        *_call(
            "srvtoolu_01A2",
            "code_execution",
            ['{"code": "import numpy as np\\nprint(np.mean([1,2,3]))"}'],
            {"code": "import numpy as np\nprint(np.mean([1,2,3]))"},
        ),
        ServerToolResultReady(
            ServerToolResult(
                "srvtoolu_01A2",
                "code_execution",
                CommandOutcome("2.0\n", "", 0, (OutputFile("file_011CTestPlot", "plot.png", 1234),)),
            )
        ),
        *_call("srvtoolu_01A3", "code_execution", ['{"code": "1/0"}'], {"code": "1/0"}),
        ServerToolResultReady(
            ServerToolResult(
                "srvtoolu_01A3",
                "code_execution",
                CommandOutcome("", "Traceback (most recent call last):\nZeroDivisionError: division by zero\n", 1),
            )
        ),
        *_call("srvtoolu_01A4", "code_execution", ['{"code": "while True: pass"}'], {"code": "while True: pass"}),
        ServerToolResultReady(
            ServerToolResult("srvtoolu_01A4", "code_execution", ToolFailure("execution_time_exceeded"))
        ),
        *_text("Done."),
        MessageFinished("end_turn", None, Usage(input_tokens=900, output_tokens=80, code_execution_requests=3), None),
    ]


def editor_variants() -> list[EngineEvent]:
    """Thinking with a signature, every editor result, and bash/editor error objects."""
    return [
        _start(4, CONTAINER),
        BlockStarted(Thinking("")),
        ThinkingDelta("Look at the config "),
        ThinkingDelta("first."),
        BlockFinished(Thinking("Look at the config first.", "EqQBCgIYAhIM")),
        *_call(
            "srvtoolu_01E1",
            "text_editor_code_execution",
            ['{"command": "view", "path": "config.json"}'],
            {"command": "view", "path": "config.json"},
        ),
        ServerToolResultReady(
            ServerToolResult(
                "srvtoolu_01E1",
                "text_editor_code_execution",
                ViewOutcome("text", '{\n  "debug": true\n}', num_lines=3, start_line=1, total_lines=3),
            )
        ),
        *_call(
            "srvtoolu_01E2",
            "text_editor_code_execution",
            ['{"command": "str_replace", "path": "config.json", "old_str": "true", "new_str": "false"}'],
            {"command": "str_replace", "path": "config.json", "old_str": "true", "new_str": "false"},
        ),
        ServerToolResultReady(
            ServerToolResult(
                "srvtoolu_01E2",
                "text_editor_code_execution",
                StrReplaceOutcome(2, 1, 2, 1, ('-  "debug": true', '+  "debug": false')),
            )
        ),
        *_call(
            "srvtoolu_01E3",
            "text_editor_code_execution",
            ['{"command": "view", "path": "nope.txt"}'],
            {"command": "view", "path": "nope.txt"},
        ),
        ServerToolResultReady(
            ServerToolResult(
                "srvtoolu_01E3",
                "text_editor_code_execution",
                ToolFailure("file_not_found", "The file nope.txt does not exist."),
            )
        ),
        *_call(
            "srvtoolu_01E4",
            "bash_code_execution",
            ['{"command": "yes | head -c 2G > $OUTPUT_DIR/big"}'],
            {"command": "yes | head -c 2G > $OUTPUT_DIR/big"},
        ),
        ServerToolResultReady(
            ServerToolResult("srvtoolu_01E4", "bash_code_execution", ToolFailure("output_file_too_large"))
        ),
        *_text("Config updated."),
        MessageFinished("end_turn", None, Usage(input_tokens=3000, output_tokens=400, code_execution_requests=4), None),
    ]


def client_tool_deferred() -> list[EngineEvent]:
    """A server call deferred next to a client tool call (docs/protocol.md §2.12): stop_reason tool_use, no result."""
    return [
        _start(5, CONTAINER),
        *_text("Let me check both."),
        *_call("srvtoolu_01F1", "bash_code_execution", ['{"command": "ls"}'], {"command": "ls"}),
        *_call("toolu_01F2", "get_weather", ['{"city": ', '"Paris"}'], {"city": "Paris"}, server=False),
        MessageFinished("tool_use", None, Usage(input_tokens=700, output_tokens=60), CONTAINER),
    ]


def paused() -> list[EngineEvent]:
    """The iteration cap was hit: a call without a result and ``pause_turn``; stop sequences elsewhere."""
    return [
        _start(6, CONTAINER),
        *_call("srvtoolu_01G1", "bash_code_execution", ['{"command": "sleep 1"}'], {"command": "sleep 1"}),
        MessageFinished(
            "pause_turn", None, Usage(input_tokens=800, output_tokens=20, code_execution_requests=10), CONTAINER
        ),
    ]


def stop_sequence() -> list[EngineEvent]:
    return [
        _start(7),
        *_text("<answer>42"),
        MessageFinished("stop_sequence", "</answer>", Usage(input_tokens=30, output_tokens=5), None),
    ]


SCRIPTS: dict[str, Callable[[], list[EngineEvent]]] = {
    "plain_text": plain_text,
    "bash_session": bash_session,
    "python_legacy": python_legacy,
    "editor_variants": editor_variants,
    "client_tool_deferred": client_tool_deferred,
    "paused": paused,
    "stop_sequence": stop_sequence,
}
