"""The tool loop: one async generator of events, used by streaming and non-streaming surfaces alike.

For a request it (1) resolves the container and puts the request's ``container_upload`` files into
it (``engine/uploads.py``), (2) runs server calls left unanswered by the client's history
(``pause_turn`` continuations and deferred calls), then (3) alternates upstream model turns and
server tool runs until the model ends its turn, calls a client tool, or the iteration cap is hit
(``pause_turn``). Files a command leaves in ``$OUTPUT_DIR`` are published through the Files API as
the caller's.

Must not: parse or render any wire format; hold settings other than those passed in.
Invariants: events follow the order documented in ``engine/events.py``; a cancelled consumer
cancels the upstream call and the running command (lexical lifetimes, no orphan tasks); a failing
program or a bad tool argument is a result the model sees, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Final, TypeVar

from execbridge import ids
from execbridge.config import Settings
from execbridge.engine.events import EngineEvent, Heartbeat, MessageFinished, MessageStarted, ServerToolResultReady
from execbridge.engine.history import for_upstream, unanswered_server_calls, with_results
from execbridge.engine.observed import observed_tool, observed_turn
from execbridge.engine.ptc import CONTAINER_REQUIRED, CellAnswers, find_answers, missing_answers
from execbridge.engine.token_estimate import TokenCount, estimate_tokens
from execbridge.engine.turn import TurnAssembler, replay
from execbridge.engine.uploads import put_uploads, records_to_put, upload_ids
from execbridge.errors import ExecbridgeError, InvalidRequest, QuotaExceeded
from execbridge.files import FileService
from execbridge.sandbox.base import DEFAULT_WORKSPACE, ContainerInfo, ContainerService
from execbridge.store.base import PendingCall, PendingCallStore
from execbridge.store.memory import MemoryPendingCallStore
from execbridge.telemetry import OFF, Telemetry
from execbridge.tools.code_execution import repl_function, resume_cell, run_call, system_note
from execbridge.tools.versions import PYTHON, TOOL_NAME, ToolVersion, version_of
from execbridge.types import (
    AwaitingTools,
    Caller,
    CommandOutcome,
    ContainerRef,
    FunctionDef,
    GenerationRequest,
    Message,
    OutputFile,
    ServerToolResult,
    StopReason,
    Text,
    Thinking,
    ToolCall,
    ToolChoice,
    ToolFailure,
    ToolOutcome,
    Usage,
)
from execbridge.upstream.base import ChatTurn, FunctionChoice, TokenCounter, Upstream

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_SWEEP_BATCH: Final = 100  # expired pending calls forgotten per pause


@dataclass(slots=True)
class _Run:
    """One request as the loop goes: its container (made when the message starts), history and totals."""

    request: GenerationRequest
    caller: Caller
    version: ToolVersion | None
    functions: tuple[FunctionDef, ...]
    container: ContainerInfo | None
    history: list[Message]
    usage: Usage = field(default_factory=Usage)
    stop_reason: StopReason = "end_turn"
    stop_sequence: str | None = None
    paused: bool = False  # a REPL cell awaits client tools: the request ends with its calls


@dataclass(frozen=True, slots=True)
class _Paused:
    """Yielded by ``_run_calls`` when a cell's code awaits client tools (the rest of the batch waits)."""

    cell_id: str
    awaiting: AwaitingTools


class _Began:
    """Yielded by the loop's body when output exists (the model's first, or a resumed call's): the
    message must have started by then. ``run`` turns the first one into ``MessageStarted``."""


_BEGAN: Final = _Began()


def _container_ref(info: ContainerInfo) -> ContainerRef:
    expires = info.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return ContainerRef(info.id, expires)


def _function_choice(choice: ToolChoice | None, version: ToolVersion | None) -> FunctionChoice | None:
    if choice is None:
        return None
    match choice.mode:
        case "auto":
            return FunctionChoice("auto")
        case "any":
            return FunctionChoice("required")
        case "none":
            return FunctionChoice("none")
        case "tool":
            if choice.name == TOOL_NAME and version is not None:
                # ``code_execution`` names the whole tool; with several sub-tools any of them will do.
                if len(version.sub_tools) == 1:
                    return FunctionChoice("function", version.sub_tools[0].name)
                return FunctionChoice("required")
            return FunctionChoice("function", choice.name)


class Engine:
    """Runs requests. One instance serves the whole process; it holds no per-request state."""

    def __init__(
        self,
        upstream: Upstream,
        containers: ContainerService,
        settings: Settings,
        *,
        files: FileService | None = None,
        pending_calls: PendingCallStore | None = None,
        heartbeat_s: float = 5.0,
        telemetry: Telemetry = OFF,
    ) -> None:
        self._upstream = upstream
        self._telemetry = telemetry
        self._containers = containers
        self._settings = settings
        self._files = files  # None: no Files API (container_upload refused, outputs dropped)
        # Which client calls suspended cells wait for (programmatic tool calling); shared by every
        # gateway process when it is the store's.
        self._pending = pending_calls if pending_calls is not None else MemoryPendingCallStore()
        self._heartbeat_s = heartbeat_s

    async def run(self, request: GenerationRequest, caller: Caller) -> AsyncGenerator[EngineEvent, None]:
        """The request's events, from ``MessageStarted`` to ``MessageFinished``."""
        version = version_of(request.code_execution) if request.code_execution else None
        functions = self._functions(request, version)
        answers = find_answers(request.messages) if version is not None and version.repl else None
        if answers is not None:  # the client answers the calls of a suspended cell: it goes on first
            await self._check_answers(request, caller, answers)
            pending = answers.deferred
        else:
            pending = unanswered_server_calls(request.messages) if version is not None else ()
            if request.container_id is not None and version is not None and version.repl:
                await self._refuse_if_waiting(request.container_id, caller)
        needed_now = bool(pending) or answers is not None
        container, uploads = await self._prepare_container(request, caller, version, needed_now=needed_now)
        history = for_upstream(request.messages, uploads, await self._known_outputs(request, caller))
        run = _Run(request, caller, version, functions, container, history)
        message_id = ids.message_id()
        started = False
        async with aclosing(self._body(run, pending, answers)) as body:
            async for item in body:
                if not started:
                    started = True
                    yield await self._message_started(run, message_id)
                if not isinstance(item, _Began):
                    yield item
        container = run.container
        ref = _container_ref(await self._containers.get(container.id, caller)) if container else None
        stop_sequence = run.stop_sequence if run.stop_reason == "stop_sequence" else None
        yield MessageFinished(run.stop_reason, stop_sequence, run.usage, ref)

    async def _message_started(self, run: _Run, message_id: str) -> MessageStarted:
        # The message starts with the first output, and a new container is made only then: a request
        # the upstream refuses (a stranger's key, a bad model) builds nothing.
        if run.container is None and run.version is not None:
            run.container = await self._containers.create(run.caller)
        ref = _container_ref(run.container) if run.container else None
        return MessageStarted(message_id, run.request.model, Usage(), ref)

    async def _body(
        self, run: _Run, pending: Sequence[ToolCall], answers: CellAnswers | None
    ) -> AsyncGenerator[EngineEvent | _Began, None]:
        """A suspended cell the client answered first, then calls the client left unanswered, then model
        turns and their server calls."""
        if answers is not None and run.container is not None:
            yield _BEGAN
            async for event in self._resume(run, answers):
                yield event
        if pending and run.container is not None and not run.paused:
            yield _BEGAN
            async for event in self._run_round(run, pending):
                yield event
        if run.paused:
            run.stop_reason = "tool_use"
            return
        # Closed here, not whenever the collector gets to it: a consumer that leaves ends the turn now.
        async with aclosing(self._model_turns(run)) as turns:
            async for item in turns:
                yield item

    async def _model_turns(self, run: _Run) -> AsyncGenerator[EngineEvent | _Began, None]:
        """Model turn, server calls, model turn … until the model stops, calls a client tool, or the cap."""
        request = run.request
        first = self._turn(request, run.caller, run.version, run.functions, run.history)
        server_names = run.version.names if run.version else frozenset()
        for iteration in range(self._settings.max_iterations):
            turn = first if iteration == 0 else replace(first, messages=tuple(run.history), function_choice=None)
            assembler = TurnAssembler(server_names.__contains__, single_call=turn.parallel_calls is False)
            began = False
            stream = observed_turn(self._telemetry, self._upstream.stream_turn(turn), turn.model, run.caller.owner)
            async with aclosing(stream) as upstream_events:
                async for upstream_event in upstream_events:
                    if not began:
                        began = True
                        yield _BEGAN
                    for event in assembler.feed(upstream_event):
                        yield event
            if not began:  # an upstream turn with no events at all
                yield _BEGAN
            closing, outcome = assembler.finish()
            for event in closing:
                yield event
            run.usage += outcome.usage
            run.stop_reason, run.stop_sequence = outcome.stop_reason, outcome.stop_sequence

            calls = [b for b in outcome.blocks if isinstance(b, ToolCall)]
            if not calls or any(not c.server for c in calls):
                for block in outcome.held_back:  # client calls wait for the client; server calls defer
                    for event in replay(block):
                        yield event
                if calls and run.stop_reason != "max_tokens":
                    run.stop_reason = "tool_use"
                return

            # The results go into a user turn of their own after the model's calls (``with_results``).
            run.history += [Message("assistant", outcome.blocks), Message("user", ())]
            async for event in self._run_round(run, calls, held_back=outcome.held_back, invalid=outcome.invalid_inputs):
                yield event
            if run.paused:  # a cell awaits client tools: the client answers them first
                run.stop_reason = "tool_use"
                return
            if run.stop_reason == "max_tokens":
                return
            run.stop_reason = "pause_turn"  # if the cap ends the loop here, the client continues the turn

    async def _run_round(
        self,
        run: _Run,
        calls: Sequence[ToolCall],
        *,
        held_back: Sequence[Text | Thinking | ToolCall] = (),
        invalid: frozenset[str] = frozenset(),
    ) -> AsyncIterator[EngineEvent]:
        """One round of server calls: their events, then their results in the history and the usage."""
        assert run.container is not None  # made when the message started (the tool is present)
        results: list[ServerToolResult] = []
        repl = run.version is not None and run.version.repl
        code_tools = tuple(t.name for t in run.request.code_callable_tools) if repl else ()
        written = run.version is not None and run.version.surface == "openai"  # OpenAI's tools cite files
        events = self._run_calls(
            calls,
            run.container,
            run.caller,
            held_back=held_back,
            invalid=invalid,
            repl=repl,
            code_tools=code_tools,
            written=written,
        )
        async for event in events:
            if isinstance(event, _Paused):
                async for paused in self._pause(run, event.cell_id, event.awaiting):
                    yield paused
                continue
            if isinstance(event, ServerToolResultReady):
                results.append(event.result)
            yield event
        run.usage += Usage(code_execution_requests=len(results))
        run.history = with_results(run.history, results)

    # ------------------------------------------------------------------ programmatic tool calling

    async def _check_answers(self, request: GenerationRequest, caller: Caller, answers: CellAnswers) -> None:
        """Refuse, before anything runs, a continuation that cannot resume its cell (docs/protocol.md §5.1)."""
        if request.container_id is None:
            raise InvalidRequest(CONTAINER_REQUIRED)
        waited_for = await self._pending.of_cell(answers.cell_id, caller.owner)
        elsewhere = [c for c in waited_for if c.container_id != request.container_id]
        if elsewhere:
            raise InvalidRequest(
                f"container: the code execution cell {answers.cell_id} runs in container {elsewhere[0].container_id}"
            )
        missing = missing_answers((c.tool_use_id for c in waited_for), answers)
        if missing:
            raise InvalidRequest(
                f"`tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(missing)}. "
                "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
            )

    async def _refuse_if_waiting(self, container_id: str, caller: Caller) -> None:
        """A container whose cell waits for the client's tool results takes nothing but those results."""
        waiting = await self._pending.of_container(container_id, caller.owner, datetime.now(UTC))
        if waiting:
            raise InvalidRequest(
                f"container {container_id} has a code execution cell waiting for tool results "
                f"({', '.join(c.tool_use_id for c in waiting)}): answer them with tool_result blocks, or leave out "
                f"container until the cell times out ({self._settings.sandbox.ptc_call_timeout_s:g} s)"
            )

    async def _resume(self, run: _Run, answers: CellAnswers) -> AsyncIterator[EngineEvent]:
        """Run the suspended cell on with the client's answers: its result, or its next pause."""
        assert run.container is not None
        publish = partial(self._files.output_batch, run.caller.owner) if self._files is not None else None
        limits = self._settings.sandbox
        async with self._containers.lease(run.container.id, run.caller) as session:
            task = asyncio.ensure_future(resume_cell(session, answers.cell_id, answers.replies, limits, publish))
            async for beat in self._beating(task):
                yield beat
        outcome = self._outcome_of(task)
        await self._pending.clear(answers.cell_id)
        if isinstance(outcome, AwaitingTools):
            async for event in self._pause(run, answers.cell_id, outcome):
                yield event
            return
        result = ServerToolResult(answers.cell_id, PYTHON, outcome)
        yield ServerToolResultReady(result)
        run.usage += Usage(code_execution_requests=1)
        run.history = with_results(run.history, [result])

    async def _pause(self, run: _Run, cell_id: str, awaiting: AwaitingTools) -> AsyncIterator[EngineEvent]:
        """The cell waits: remember for whom and what (the store), and hand its calls to the client."""
        assert run.container is not None
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=self._settings.sandbox.ptc_call_timeout_s)
        container_id, owner = run.container.id, run.caller.owner
        await self._pending.sweep(now, limit=_SWEEP_BATCH)  # the calls of cells long gone, a batch at a time
        await self._pending.add(
            [PendingCall(c.id, cell_id, container_id, owner, c.name, now, expires) for c in awaiting.calls]
        )
        run.paused = True
        for call in awaiting.calls:
            for event in replay(call):
                yield event

    # ------------------------------------------------------------------ helpers

    def _turn(
        self,
        request: GenerationRequest,
        caller: Caller,
        version: ToolVersion | None,
        functions: tuple[FunctionDef, ...],
        history: Sequence[Message],
    ) -> ChatTurn:
        """The first model turn of ``request``: what the upstream sees, with the gateway's tools and note.

        Later turns differ only in the history and in leaving the tool choice to the model."""
        return ChatTurn(
            model=request.model,
            messages=tuple(history),
            max_tokens=request.max_tokens,
            system=self._system(request, version),
            functions=functions,
            function_choice=_function_choice(request.tool_choice, version),
            parallel_calls=False if request.tool_choice and request.tool_choice.disable_parallel_tool_use else None,
            stop=request.stop_sequences,
            sampling=request.sampling,
            user=request.user_id,
            stream=request.stream,
            api_key=caller.upstream_api_key,
            system_blocks=self._system_blocks(request, version),
            thinking=request.thinking,
            service_tier=request.service_tier,
            betas=request.betas,
        )

    async def count_tokens(self, request: GenerationRequest, caller: Caller) -> TokenCount:
        """The input tokens of ``request``'s first model turn, tools and system note included: counted
        by the upstream where it does, else estimated (``engine/token_estimate.py``). Nothing runs and
        no container is made; uploads are counted as the note the model would read about them."""
        version = version_of(request.code_execution) if request.code_execution else None
        functions = self._functions(request, version)
        uploads = {i: f"{DEFAULT_WORKSPACE}/{i}" for i in upload_ids(request.messages)} if version else {}
        history = for_upstream(request.messages, uploads)
        turn = self._turn(request, caller, version, functions, history)
        if isinstance(self._upstream, TokenCounter):
            counted = await self._upstream.count_tokens(turn)
            if counted is not None:
                return TokenCount(counted, "upstream")
        return TokenCount(estimate_tokens(turn), "estimate")

    @staticmethod
    def _functions(request: GenerationRequest, version: ToolVersion | None) -> tuple[FunctionDef, ...]:
        """What the model is offered: the tool's sub-tools (the REPL's Python function listing the client
        tools its code may await), then the client's tools the model may call itself.

        ``api/wire.py`` refuses a clashing name with its field path; this check guards requests built
        in code, which no parser has seen.
        """
        server = version.functions if version else ()
        reserved = version.names if version else frozenset()
        clashes = [t.name for t in request.client_tools if t.name in reserved]
        if clashes:
            raise InvalidRequest(f"tools: client tool name '{clashes[0]}' is reserved by the code execution tool")
        # A tool only code may call is not offered to the model; the REPL's function lists it instead.
        client = tuple(
            FunctionDef(t.name, t.description or "", t.input_schema, t.cache_control)
            for t in request.client_tools
            if t.direct
        )
        if version is not None and version.repl and request.code_callable_tools:
            code_tools = request.code_callable_tools
            server = tuple(repl_function(f, code_tools) if f.name == PYTHON else f for f in server)
        tool = request.code_execution
        if server and tool is not None and tool.cache_control is not None:
            # A breakpoint on the code execution tool caches its sub-tools: it goes on the last of them.
            server = (*server[:-1], replace(server[-1], cache_control=tool.cache_control))
        return server + client

    def _system(self, request: GenerationRequest, version: ToolVersion | None) -> str | None:
        if version is None:
            return request.system
        note = system_note(version, self._settings.sandbox)
        return f"{request.system}\n\n{note}" if request.system else note

    def _system_blocks(self, request: GenerationRequest, version: ToolVersion | None) -> tuple[Text, ...]:
        """The system prompt as blocks: the gateway's note first, then the client's blocks as sent, so a
        breakpoint the client put on its system prompt caches the note too (it never changes)."""
        if version is None:
            return request.system_blocks
        return (Text(system_note(version, self._settings.sandbox)), *request.system_blocks)

    async def _prepare_container(
        self, request: GenerationRequest, caller: Caller, version: ToolVersion | None, *, needed_now: bool
    ) -> tuple[ContainerInfo | None, dict[str, str]]:
        """The request's container, with its uploads put in; also every upload's path there.

        A named container is looked up. A new one is created here only when something must go into it
        before the model runs (uploads, or ``needed_now`` for unanswered calls); otherwise it is created
        when the message starts, at the upstream's first output (``_message_started``), so a request
        the upstream refuses builds none. A request without the tool never has one.
        Upload ids are checked before a container is created, so a bad id leaves nothing behind.
        Without the code execution tool there is no container to put anything in: uploads are ignored.
        """
        container = None
        if request.container_id:
            container = await self._containers.get(request.container_id, caller)
        wanted = upload_ids(request.messages) if version is not None else ()
        placed: dict[str, str] = {}
        if wanted and container is not None and self._files is not None:
            placed = await self._files.placements(container.id)
        records = await records_to_put(self._files, caller.owner, [i for i in wanted if i not in placed])
        if container is None and version is not None and (records or needed_now):
            container = await self._containers.create(caller)
        if records and container is not None and self._files is not None:
            placed = await put_uploads(self._files, self._containers, container, caller, records, placed)
        return container, placed

    async def _known_outputs(self, request: GenerationRequest, caller: Caller) -> dict[str, OutputFile]:
        """Names and sizes of the output files in the client's history (the wire carries only ids)."""
        if self._files is None:
            return {}
        file_ids = [
            f.file_id
            for m in request.messages
            for p in m.parts
            if isinstance(p, ServerToolResult) and isinstance(p.outcome, CommandOutcome)
            for f in p.outcome.files
            if not f.filename
        ]
        if not file_ids:
            return {}
        found = await self._files.find(caller.owner, file_ids)
        return {i: OutputFile(r.id, r.filename, r.size_bytes) for i, r in found.items()}

    async def _run_calls(
        self,
        calls: Sequence[ToolCall],
        container: ContainerInfo,
        caller: Caller,
        *,
        held_back: Sequence[Text | Thinking | ToolCall] = (),
        invalid: frozenset[str] = frozenset(),
        repl: bool = False,
        code_tools: Sequence[str] = (),
        written: bool = False,
    ) -> AsyncIterator[EngineEvent | _Paused]:
        """Run server calls in order, each result right after its call; held-back blocks interleave.

        ``repl``: Python calls are cells of the container's persistent REPL (``ToolVersion.repl``), whose
        code may await the client tools ``code_tools``. A cell that does is suspended: ``_Paused``, and
        the calls after it are not run (they are deferred, like server calls beside a client call).
        ``written``: commands report the workspace files they wrote (``CommandOutcome.written``)."""
        held = list(held_back)
        publish = partial(self._files.output_batch, caller.owner) if self._files is not None else None
        async with self._containers.lease(container.id, caller) as session:
            for call in calls:
                if call in held:
                    for event in replay(call):
                        yield event
                    held.remove(call)
                if call.id in invalid:
                    outcome: ToolOutcome = ToolFailure("invalid_tool_input", "arguments were not a JSON object")
                else:
                    execution = run_call(
                        session,
                        call.name,
                        call.input,
                        self._settings.sandbox,
                        publish,
                        repl=repl,
                        code_tools=code_tools,
                        call_id=call.id,
                        written=written,
                    )
                    observed = observed_tool(self._telemetry, execution, call.name, call.id, container.id, caller.owner)
                    task = asyncio.ensure_future(observed)
                    async for beat in self._beating(task):
                        yield beat
                    done = self._outcome_of(task)
                    if isinstance(done, AwaitingTools):
                        yield _Paused(call.id, done)
                        break
                    outcome = done
                yield ServerToolResultReady(ServerToolResult(call.id, call.name, outcome))
        for block in held:  # text after the last call
            for event in replay(block):
                yield event

    async def _beating(self, task: asyncio.Future[_T]) -> AsyncIterator[Heartbeat]:
        """Heartbeats every ``heartbeat_s`` until ``task`` is done (cancelled if the consumer goes away)."""
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._heartbeat_s)
                if done:
                    return
                yield Heartbeat()
        finally:
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    @staticmethod
    def _outcome_of(task: asyncio.Future[_T]) -> _T | ToolFailure:
        error = task.exception()
        if error is None:
            return task.result()
        if isinstance(error, QuotaExceeded):  # no live container could be made for it: the tool's own code
            return ToolFailure("too_many_requests", error.message)
        if isinstance(error, ExecbridgeError):
            log.warning("sandbox failed during a tool call: %s", error.message)
            return ToolFailure("unavailable", error.message)
        raise error
