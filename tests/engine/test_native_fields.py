"""What the engine carries for Anthropic-native upstreams: the request's fields into every turn, the
upstream's thinking, redacted thinking, citations and cache usage out, and ``count_tokens``."""

from __future__ import annotations

import base64
import struct
from typing import Any

from execbridge.config import Settings
from execbridge.engine.events import BlockFinished, BlockStarted, CitationsDelta, MessageFinished
from execbridge.engine.loop import Engine
from execbridge.engine.token_estimate import IMAGE_MAX, PDF_PAGE, TOOL_PROMPT, estimate_tokens
from execbridge.testing import FakeContainerService, ScriptedUpstream
from execbridge.types import (
    CacheControl,
    Caller,
    ClientTool,
    CodeExecutionTool,
    Document,
    GenerationRequest,
    Image,
    Message,
    Text,
    Thinking,
    ThinkingConfig,
    ToolCall,
)
from execbridge.upstream import base as up
from execbridge.upstream.base import ChatTurn

CITATION = {"type": "char_location", "cited_text": "x"}


def engine(upstream: Any) -> Engine:
    return Engine(upstream, FakeContainerService(), Settings())


def request(**fields: Any) -> GenerationRequest:
    base: dict[str, Any] = {"model": "claude-x", "max_tokens": 2048, "messages": (Message("user", (Text("go"),)),)}
    return GenerationRequest(**{**base, **fields})


async def test_request_fields_reach_every_turn_and_upstream_blocks_come_back() -> None:
    upstream = ScriptedUpstream(
        [
            up.ReasoningDelta("plan"),
            up.ReasoningDelta("", "sig-1"),
            up.BlockEnd(),
            up.ToolCallDelta(1, "x", "bash_code_execution", '{"command": "ls"}'),
            up.BlockEnd(),
            up.Finished("tool_calls"),
            up.TokenUsage(10, 5, 0, 700),
        ],
        [
            up.RedactedReasoning("opaque"),
            up.CitationDelta(CITATION),
            up.TextDelta("cited"),
            up.BlockEnd(),
            up.Finished("stop", "###"),
            up.TokenUsage(12, 3, 700, 20),
        ],
    )
    req = request(
        tools=(
            CodeExecutionTool("20250825", CacheControl()),
            ClientTool("w", None, {"type": "object"}, CacheControl()),
        ),
        system="client",
        system_blocks=(Text("client", CacheControl("ephemeral", "1h")),),
        thinking=ThinkingConfig("enabled", 1024),
        service_tier="auto",
        betas=("interleaved-thinking-2025-05-14",),
    )
    events = [e async for e in engine(upstream).run(req, Caller("k"))]
    first, second = upstream.seen
    for turn in (first, second):
        assert turn.thinking == ThinkingConfig("enabled", 1024) and turn.service_tier == "auto"
        assert turn.betas == ("interleaved-thinking-2025-05-14",)
        note, client = turn.system_blocks
        assert "code execution" in note.text and client == Text("client", CacheControl("ephemeral", "1h"))
    assert [f.cache_control for f in first.functions] == [None, CacheControl(), CacheControl()]
    # The loop sends the model's turn back as it came, thinking first, signature and all.
    assert second.messages[1].parts[0] == Thinking("plan", "sig-1")
    assert isinstance(second.messages[1].parts[1], ToolCall)

    finished = [e.block for e in events if isinstance(e, BlockFinished)]
    assert finished[0] == Thinking("plan", "sig-1") and finished[2] == Thinking("", data="opaque")
    assert finished[3] == Text("cited", citations=(CITATION,))
    assert any(isinstance(e, BlockStarted) and e.block == Thinking("", data="opaque") for e in events)
    assert [e.citation for e in events if isinstance(e, CitationsDelta)] == [CITATION]
    end = events[-1]
    assert isinstance(end, MessageFinished) and (end.stop_reason, end.stop_sequence) == ("stop_sequence", "###")
    assert (end.usage.cache_creation_input_tokens, end.usage.cache_read_input_tokens) == (720, 700)
    assert (end.usage.input_tokens, end.usage.output_tokens) == (22, 8)


class CountingUpstream(ScriptedUpstream):
    def __init__(self, answer: int | None) -> None:
        super().__init__()
        self.answer = answer
        self.counted: list[ChatTurn] = []

    async def count_tokens(self, turn: ChatTurn) -> int | None:
        self.counted.append(turn)
        return self.answer


async def test_count_tokens_asks_the_upstream_with_what_the_model_would_see() -> None:
    upstream = CountingUpstream(1234)
    counted = await engine(upstream).count_tokens(request(tools=(CodeExecutionTool("20250825"),)), Caller("k"))
    assert (counted.input_tokens, counted.source) == (1234, "upstream")
    (turn,) = upstream.counted
    assert {f.name for f in turn.functions} == {"bash_code_execution", "text_editor_code_execution"}
    assert "code execution" in (turn.system or "")


async def test_count_tokens_estimates_when_the_upstream_does_not_count() -> None:
    for upstream in (CountingUpstream(None), ScriptedUpstream()):
        plain = await engine(upstream).count_tokens(request(), Caller("k"))
        tools = await engine(upstream).count_tokens(request(tools=(CodeExecutionTool("20250825"),)), Caller("k"))
        assert plain.source == tools.source == "estimate"
        assert tools.input_tokens > plain.input_tokens + TOOL_PROMPT


def png(width: int, height: int) -> str:
    header = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">II", width, height)
        + b"\x08\x02\x00\x00\x00"
    )
    return base64.b64encode(header + b"\x00" * 32).decode()


def test_the_estimate_follows_its_documented_rules() -> None:
    def turn(*parts: Any) -> ChatTurn:
        return ChatTurn("m", (Message("user", parts),), 10)

    assert estimate_tokens(turn(Text("x" * 35))) == 3 + 1 + 10  # message, block, 35 bytes / 3.5
    assert estimate_tokens(turn(Image("image/png", png(750, 100)))) == 3 + 1 + 100
    assert estimate_tokens(turn(Image("image/png", png(4000, 4000)))) == 3 + 1 + IMAGE_MAX
    pdf = base64.b64encode(b"%PDF-1.7 /Type /Pages /Type /Page x /Type/Page y").decode()
    assert estimate_tokens(turn(Document("application/pdf", data=pdf))) == 3 + 1 + 2 * PDF_PAGE
    earlier_thinking = ChatTurn(
        "m",
        (
            Message("assistant", (Thinking("x" * 350, "s"),)),
            Message("user", (Text("q"),)),
            Message("assistant", (Thinking("x" * 35, "s"),)),
        ),
        10,
    )
    assert estimate_tokens(earlier_thinking) == (3 + 1) + (3 + 1 + 1) + (3 + 1 + 10)  # only the last one counts
