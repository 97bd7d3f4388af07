"""The executor's entry point and main loop: one framed request at a time, one answer each.

Job: parse the command line, move the protocol off fds 0/1, build the parts (``Reaper``,
``OutputDirs``, ``Runner``, ``Editor``), say ``ready``, then answer requests in order until the
gateway closes the stream. ``site`` is loaded while idle (never before the first request: the
gateway sends one right after ``ready``, and a first bash command should not wait for it).

Must not: write anything but frames to the protocol fd; let one bad request end the loop (it gets
an ``internal_error`` answer); carry on after a malformed frame or a request during a command
(exit 2: nothing after it can be trusted); leave a process running when it exits.

Invariants: exactly one response per request, in order (a bash/python answer is preceded by the
``file`` frames of its ``$OUTPUT_DIR``, with the same id); ``cancel`` frames never get a response of
their own; the first frame is ``ready`` with id 0.
"""

import os
import select
import sys

from .common import ProtocolViolation, ToolError, ignore, log
from .editor import Editor
from .framing import PROTOCOL_VERSION, read_frame, write_frame
from .outputs import OutputDirs
from .reaper import Reaper
from .repl import Repl
from .runner import Runner

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Executor:
    def __init__(
        self,
        proto_in: int,
        proto_out: int,
        *,
        workspace: str,
        output_root: str,
        kill_all: bool,
        extra_env: dict[str, str],
        repl: bool = False,
    ) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.pid = os.getpid()
        self.reaper = Reaper(self.pid, kill_all=kill_all)
        outputs = OutputDirs(output_root, send=lambda frame: write_frame(proto_out, frame))
        self.runner = Runner(proto_in, workspace=workspace, extra_env=extra_env, reaper=self.reaper, outputs=outputs)
        editor = Editor(workspace)
        self.repl: Repl | None = None
        self.handlers: dict[str, Any] = {
            "ping": self.op_ping,
            "bash": self.runner.bash,
            "python": self.runner.python,
            "view": editor.view,
            "create": editor.create,
            "str_replace": editor.str_replace,
            "put_file": editor.put_file,
        }
        if repl:
            # The REPL's own sandbox answers cells only: bash and the editor run in the container's
            # main sandbox, where no interpreter survives between commands.
            self.repl = Repl(proto_in, runner=self.runner, reaper=self.reaper, outputs=outputs)
            self.handlers = {"ping": self.op_ping, "cell": self.repl.cell, "resume": self.repl.resume}

    def hello(self) -> "dict[str, Any]":
        return {
            "id": 0,
            "status": "ok",
            "op": "ready",
            "protocol": PROTOCOL_VERSION,
            "pid": self.pid,
            "python": ".".join(map(str, sys.version_info[:3])),
            "subreaper": self.reaper.subreaper,
            "kill_all": self.reaper.kill_all,
            "repl": self.repl is not None,
        }

    def serve(self) -> None:
        write_frame(self.proto_out, self.hello())
        served = False
        while True:
            # Pay for ``site`` while idle, but never before the first request: the gateway sends it
            # right after "ready", and a first bash command should not wait for Python's start-up.
            if served and not self.runner.warm and not _readable(self.proto_in, 0):
                self.runner.warm_up()
            request = read_frame(self.proto_in)
            if request is None:
                self.shutdown()
                return
            response = self.handle(request)
            if response is not None:
                write_frame(self.proto_out, response)
                served = True

    def shutdown(self) -> None:
        """Nothing of ours outlives the executor: the REPL's interpreter, then every other process."""
        if self.repl is not None:
            self.repl.close()
        self.reaper.kill_others()

    def handle(self, request: "dict[str, Any]") -> "dict[str, Any] | None":
        op = request.get("op")
        rid = request.get("id")
        if op == "cancel":
            return None  # the command it meant already finished; its answer is on its way
        try:
            handler = self.handlers.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            result = handler(request)
            return {"id": rid, "status": "ok", **result}
        except ProtocolViolation:
            raise
        except ToolError as exc:
            return {"id": rid, "status": "tool_error", "error_code": exc.code, "message": exc.message}
        except Exception as exc:  # the boundary: one bad request must not end the loop
            import traceback

            log(f"internal error in {op!r}:\n{traceback.format_exc()}")
            return {"id": rid, "status": "internal_error", "message": f"{type(exc).__name__}: {exc}"}

    def op_ping(self, request: "dict[str, Any]") -> "dict[str, Any]":
        return {"op": "pong", "warm": self.runner.warm}


def _readable(fd: int, timeout_ms: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout_ms))


_USAGE = """usage: executor --workspace DIR [--output-root DIR] [--kill-all] [--repl] [--env NAME=VALUE]...

  --workspace DIR     working directory and HOME of commands; editor paths are relative to it
                      (required: the container's workspace path, which the gateway owns)
  --output-root DIR   where each command's fresh $OUTPUT_DIR is made (default /tmp/outputs)
  --kill-all          the executor owns its PID namespace: after a command, kill every process
                      except itself and its ancestors (default: only its own descendants)
  --env NAME=VALUE    add or override a variable of the commands' environment (repeatable)
  --repl              be the persistent Python REPL's supervisor: answer "cell" (and "ping") only
"""


def _parse_args(argv: list[str]) -> "dict[str, Any]":
    options: dict[str, Any] = {"workspace": None, "output_root": "/tmp/outputs", "kill_all": False,
                               "extra_env": {}, "repl": False}  # fmt: skip
    args = iter(argv)
    for arg in args:
        if arg == "--kill-all":
            options["kill_all"] = True
        elif arg == "--repl":
            options["repl"] = True
        elif arg in ("--workspace", "--output-root", "--env"):
            value = next(args, None)
            if value is None:
                raise SystemExit(f"{arg} needs a value\n{_USAGE}")
            if arg == "--env":
                name, sep, val = value.partition("=")
                if not sep or not name:
                    raise SystemExit(f"--env wants NAME=VALUE, got {value!r}")
                options["extra_env"][name] = val
            else:
                options[arg[2:].replace("-", "_")] = os.path.abspath(value)
        else:
            raise SystemExit(f"unknown argument {arg!r}\n{_USAGE}")
    if options["workspace"] is None:
        raise SystemExit(f"--workspace is required\n{_USAGE}")
    return options


def main(argv: list[str] | None = None) -> int:
    options = _parse_args(sys.argv[1:] if argv is None else argv)
    # Move the protocol off fds 0/1 (and mark it close-on-exec): a stray print or a library that
    # writes to fd 1 then lands in the log instead of corrupting a frame.
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    # Commands are exec'd without closing fds first (posix_spawn): nothing the launcher left open may
    # reach them.
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            with ignore(OSError):
                os.set_inheritable(int(name), False)
    executor = Executor(proto_in, proto_out, **options)
    try:
        executor.serve()
    except (BrokenPipeError, EOFError) as exc:
        log(f"protocol stream closed: {exc!r}")
        executor.shutdown()
    except (ProtocolViolation, ValueError) as exc:  # a malformed frame: nothing after it can be trusted
        log(f"protocol error, exiting: {exc}")
        executor.shutdown()
        return 2
    return 0
