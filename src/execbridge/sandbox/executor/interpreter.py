"""The persistent REPL's interpreter: the forked child that runs cells in one shared ``__main__``.

Runs inside the REPL's sandbox, forked by its supervisor (``repl.py``), which it reaches through two
pipes: frames in (cells; replies to tool calls), short messages out (``done <rc>``; ``call <n>`` and
the calls as JSON). Each cell is compiled with top-level ``await`` allowed and, when it awaits, run on
one event loop that lives as long as the REPL. The client tools a cell may call are ``async def
name(input: dict) -> str`` in its globals (``_ToolBridge``).

Must not: trust its own user code with anything of the supervisor's (it holds no protocol fd);
outlive its supervisor (EOF on the command pipe ends it).
"""

import _signal as _sig
import os
import sys

from .common import ignore
from .framing import read_frame
from .pymain import _system_exit_code, become_plain_python

# Names for type checkers only (``typing`` costs ~8 ms to import here).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

INTERRUPT_GRACE_S = 2.0  # after SIGINT at the cell's limit: how long the cell has to stop before SIGKILL
CALL_LIMIT = 4 << 20  # bytes of one ``call`` message (the inputs of one pause's tool calls, as JSON)
_PYCF_ALLOW_TOP_LEVEL_AWAIT = 0x2000  # ast.PyCF_ALLOW_TOP_LEVEL_AWAIT (``ast`` costs ~3 ms to import)
_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE: the compiled cell awaits


def interpreter_main(cmd_fd: int, ctl_fd: int, env: dict[str, str], flags: "Any") -> "NoReturn":  # pragma: no cover
    """The REPL's loop: read a cell, run it in the shared ``__main__``, say ``done <rc>``; forever."""
    main = become_plain_python(env, flags, argv0="")
    namespace = main.__dict__
    state: dict[str, Any] = {"loop": None}
    bridge = _ToolBridge(cmd_fd, ctl_fd)
    _sig.signal(_sig.SIGINT, _sig.SIG_IGN)  # interrupts count only while a cell runs
    while True:
        message = read_frame(cmd_fd)
        if message is None:  # the supervisor went away
            os._exit(0)
        if "code" not in message:
            continue  # replies that an interrupt kept from their pause: that cell is over
        for name, value in message.get("env", {}).items():
            os.environ[name] = value
        bridge.define(namespace, message.get("tools") or [])
        rc: int | None = None
        _sig.signal(_sig.SIGINT, _sig.default_int_handler)
        try:
            rc = _run_cell(str(message["code"]), int(message["cell"]), namespace, state)
        except KeyboardInterrupt:  # landed between the cell and its own handler
            rc = 130 if rc is None else rc
        while True:  # an interrupt may land here too; ignore it from now on
            try:
                _sig.signal(_sig.SIGINT, _sig.SIG_IGN)
                break
            except KeyboardInterrupt:
                continue
        bridge.forget_pending()
        for stream in (sys.stdout, sys.stderr):
            with ignore(BaseException):
                stream.flush()
        os.write(ctl_fd, f"done {rc & 0xFF if rc >= 0 else 1}\n".encode())


_FLUSH_PATIENCE = 1000  # event-loop rounds a pause waits for other ready work before it goes anyway


class _ToolBridge:  # pragma: no cover - runs in the interpreter
    """The client tools a cell may call, as ``async def name(input: dict) -> str`` in its globals.

    A call is queued; once the event loop has nothing else ready (every task of an ``asyncio.gather``
    has made its call), the queued calls go to the supervisor as one ``call`` message and the
    interpreter blocks for the replies, stopped by its supervisor meanwhile. A reply's text is the
    call's return value; a ``timeout`` reply raises ``TimeoutError`` in the awaiting code.
    """

    def __init__(self, cmd_fd: int, ctl_fd: int) -> None:
        self.cmd_fd = cmd_fd
        self.ctl_fd = ctl_fd
        self.seq = 0
        self.queued: list[tuple[int, str, str, Any]] = []  # seq, name, input as JSON, future
        self.flushing = False
        self.defined: dict[str, Any] = {}  # name → the function put into the globals

    def define(self, namespace: "dict[str, Any]", names: "list[str]") -> None:
        """This cell's tools in ``namespace``; the previous cell's that it does not have go (unless rebound)."""
        for name, function in self.defined.items():
            if name not in names and namespace.get(name) is function:
                del namespace[name]
        self.defined = {name: self._function(name) for name in names}
        namespace.update(self.defined)

    def forget_pending(self) -> None:
        self.queued.clear()
        self.flushing = False

    def _function(self, name: str) -> "Any":
        bridge = self

        async def tool(input: "dict[str, Any]") -> str:
            if not isinstance(input, dict):
                raise TypeError(f"{name}() takes a single dict of arguments, e.g. await {name}({{...}})")
            import asyncio
            import json

            payload = json.dumps(input, ensure_ascii=False)
            if len(payload) > CALL_LIMIT // 2:
                raise ValueError(f"the input of {name}() is over {CALL_LIMIT // 2} characters as JSON")
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            bridge.seq += 1
            bridge.queued.append((bridge.seq, name, payload, future))
            if not bridge.flushing:
                bridge.flushing = True
                loop.call_soon(bridge.flush, loop, 0)
            result: str = await future
            return result

        tool.__name__ = tool.__qualname__ = name
        tool.__doc__ = f"Call the client's tool {name!r}: one dict of arguments; returns its result as a string."
        return tool

    def flush(self, loop: "Any", rounds: int) -> None:
        if getattr(loop, "_ready", None) and rounds < _FLUSH_PATIENCE:
            loop.call_soon(self.flush, loop, rounds + 1)  # other tasks may still be about to call
            return
        self.flushing = False
        batch = [q for q in self.queued if not q[3].done()]  # a cancelled await asks for nothing
        self.queued.clear()
        if batch:
            import json

            body = ",".join(f'{{"seq":{s},"name":{json.dumps(n)},"input":{p}}}' for s, n, p, _ in batch)
            data = f"[{body}]".encode("utf-8", "surrogatepass")
            if len(data) > CALL_LIMIT:
                too_big = ValueError(f"the inputs of the tool calls awaited together are over {CALL_LIMIT} bytes")
                for *_, future in batch:
                    future.set_exception(too_big)
                return
            _write_all(self.ctl_fd, b"call %d\n" % len(data) + data)
            message = read_frame(self.cmd_fd)  # the supervisor stops us here until the client answers
            if message is None:
                os._exit(0)
            if "replies" not in message:
                # Out of step with the supervisor: nothing this interpreter does can be trusted now.
                os._exit(70)
            replies = {r["seq"]: r for r in message["replies"]}
            for seq, name, _, future in batch:
                reply = replies.get(seq)
                if future.done():
                    continue
                if reply is not None and "text" in reply:
                    future.set_result(reply["text"])
                else:
                    after = reply["timeout"] if reply is not None else 0
                    future.set_exception(
                        TimeoutError(f"Calling tool [{name!r}] timed out (no response after {after:g}s).")
                    )


def _write_all(fd: int, data: bytes) -> None:  # pragma: no cover - interpreter
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _run_cell(code: str, number: int, namespace: "dict[str, Any]", state: "dict[str, Any]") -> int:  # pragma: no cover
    filename = f"<cell {number}>"
    import linecache

    # Tracebacks show the cell's lines, as IPython's do.
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        compiled = compile(code, filename, "exec", flags=_PYCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        if compiled.co_flags & _CO_COROUTINE:
            import asyncio

            loop = state["loop"]
            if loop is None:
                loop = state["loop"] = asyncio.new_event_loop()
                asyncio.set_event_loop(loop)
            task = loop.create_task(eval(compiled, namespace))
            try:
                loop.run_until_complete(task)
            except BaseException:
                # Interrupted while the loop waited: the cell's task would otherwise run on in later cells.
                if not task.done():
                    task.cancel()
                    with ignore(BaseException):
                        loop.run_until_complete(asyncio.wait([task], timeout=INTERRUPT_GRACE_S))
                raise
        else:
            exec(compiled, namespace)
    except SystemExit as exc:
        return _system_exit_code(exc)
    except BaseException as exc:  # the top level of the cell
        tb = _from_cell(exc.__traceback__, filename)
        exc.__traceback__ = tb  # hide this frame (and the event loop's): the traceback starts in the cell
        with ignore(BaseException):
            if sys.excepthook is sys.__excepthook__:
                import traceback  # the C hook reads source lines from disk; this one finds the cell's

                traceback.print_exception(type(exc), exc, tb)
            else:
                sys.excepthook(type(exc), exc, tb)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def _from_cell(tb: "Any", filename: str) -> "Any":  # pragma: no cover - interpreter
    """The traceback from the cell's first frame on (after ours and asyncio's); else without our frame."""
    entry = tb
    while entry is not None:
        if entry.tb_frame.f_code.co_filename == filename:
            return entry
        entry = entry.tb_next
    return tb.tb_next if tb is not None else None
