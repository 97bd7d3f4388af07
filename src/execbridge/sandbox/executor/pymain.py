"""A Python command, run the way ``python -c`` would run it, in a child forked from the warm executor.

Job: in the forked child, turn the executor's interpreter into a plain ``python -c`` one — fresh
``__main__``, ``argv ['-c']``, ``''`` first on ``sys.path``, the command's environment, unbuffered
stdio on fds 0-2, ``sys.flags`` without the executor's ``-I -S`` — run the code, and end as the
interpreter would: tracebacks on stderr and rc 1, ``SystemExit`` honoured, threads joined, atexit
handlers run, streams flushed.

Must not: return into the executor's loop (every path ends in ``os._exit``); let the executor's
compiler flags leak into the user's program (``dont_inherit``; the executor's own modules are
already out of ``sys.modules``, see ``__main__``); flush the executor's stream objects into the
command's pipes; touch more of the executor's memory than it must (each page written is copied).
"""

import atexit
import io
import os
import sys

from .common import ignore

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


def plain_flags() -> "Any":
    """A ``sys.flags`` look-alike saying what a plain ``python -c`` would say.

    The executor runs with ``-I -S``; left alone, forked Python children would report those flags and
    ``subprocess._args_from_interpreter_flags()`` would pass ``-S -I`` on to every interpreter they
    spawn (multiprocessing's spawn, joblib/loky workers), which then cannot import dist-packages.
    """
    names = getattr(type(sys.flags), "__match_args__", None)
    if not names:
        return None
    values = dict(zip(names, sys.flags, strict=False))
    values.update(no_user_site=0, no_site=0, ignore_environment=0, isolated=0, safe_path=False)
    row = tuple(values[name] for name in names)

    def field(i: int) -> property:
        return property(lambda self: tuple.__getitem__(self, i))

    namespace: dict[str, Any] = {name: field(i) for i, name in enumerate(names)}
    namespace["__slots__"] = ()
    namespace["__match_args__"] = names
    namespace["n_fields"] = namespace["n_sequence_fields"] = len(names)
    namespace["__repr__"] = lambda self: (
        f"sys.flags({', '.join(f'{n}={v!r}' for n, v in zip(names, self, strict=True))})"
    )
    flags_type = type("flags", (tuple,), namespace)
    flags_type.__module__ = "sys"
    return flags_type(row)


def become_plain_python(env: dict[str, str], flags: "Any", *, argv0: str) -> "Any":  # pragma: no cover - child
    """Turn this forked child into a plain interpreter: environment, flags, argv, stdio, a fresh ``__main__``.

    Shared by a ``python -c`` command (``python_main``) and the persistent REPL's interpreter
    (``repl.interpreter_main``); returns the new ``__main__`` module.
    """
    for name, value in env.items():  # warm_up() gave the executor this environment; usually only
        if os.environ.get(name) != value:  # OUTPUT_DIR differs
            os.environ[name] = value
    if flags is not None:
        sys.flags = flags
    sys.argv = [argv0]
    sys.path.insert(0, "")  # python -c (and the interactive interpreter) put the current directory first
    # The executor's own stream objects stay referenced until os._exit: were they collected, their
    # finalizers would flush into the command's pipes.
    _previous_streams.append((sys.stdin, sys.stdout, sys.stderr))
    stdin_raw = io.FileIO(0, "r", closefd=False)
    stdin_raw.name = "<stdin>"
    # Both, as the interpreter sets them at start-up (typeshed marks ``__stdin__`` Final).
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(  # type: ignore[misc]
        io.BufferedReader(stdin_raw), encoding="utf-8", errors="surrogateescape"
    )
    # Like PYTHONUNBUFFERED=1: raw fds under write-through text layers, so output written before a
    # kill (time limit) is not lost in a buffer.
    for fd, name, errors in ((1, "stdout", "surrogateescape"), (2, "stderr", "backslashreplace")):
        raw = io.FileIO(fd, "w", closefd=False)
        raw.name = f"<{name}>"
        stream = io.TextIOWrapper(raw, encoding="utf-8", errors=errors, write_through=True)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    main = type(sys)("__main__")
    main.__loader__ = sys.modules["_frozen_importlib"].BuiltinImporter
    main.__annotations__ = {}
    sys.modules["__main__"] = main
    return main


_previous_streams: "list[Any]" = []


def python_main(code: str, env: dict[str, str], flags: "Any") -> "NoReturn":  # pragma: no cover - child
    """Run ``code`` the way ``python -c`` would, in this forked child, and exit."""
    main = become_plain_python(env, flags, argv0="-c")
    rc = 0
    try:
        # dont_inherit: no compiler flag of the executor's (a ``from __future__`` import) reaches user code.
        exec(compile(code, "<string>", "exec", dont_inherit=True), main.__dict__)
    except SystemExit as exc:
        rc = _system_exit_code(exc)
    except BaseException as exc:  # this *is* the top level of the user's program
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        exc.__traceback__ = tb  # hide this frame: the traceback starts in "<string>", as with -c
        with ignore(BaseException):
            sys.excepthook(type(exc), exc, tb)
        rc = 130 if isinstance(exc, KeyboardInterrupt) else 1
    # What interpreter shutdown would do: wait for threads, run atexit handlers, flush.
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as exc:
        rc = _system_exit_code(exc)
    except BaseException:
        pass
    for current in (sys.stdout, sys.stderr):
        try:
            current.flush()
        except BaseException:
            rc = rc or 120  # like CPython when flushing stdout fails at exit
    try:
        os._exit(rc & 0xFF)
    except BaseException:
        os._exit(1)


def _system_exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    with ignore(BaseException):
        sys.stderr.write(f"{code}\n")
    return 1
