"""The warm executor: runs inside each sandbox and forks one child per command.

Started by the launcher as ``python3 -I -S /opt/execbridge/executor.py [options]``, where that file
is ``executor_image.executor_bytecode()`` (``__main__.py`` with every module of the package compiled
in), with the protocol on stdin (requests) and stdout (responses); stderr is its log. It also runs from this
source directory (``python3 -I -S .../executor/__main__.py``), without any sandbox, as the tests do.

Job: answer framed requests from the gateway one at a time: run bash or Python (fork per command,
output captured, time limit enforced, ``$OUTPUT_DIR`` collected), and the text-editor commands.

    __main__.py the script that starts it: brings the package in, then takes it out of sight
    server.py   entry point and main loop: argv, protocol fds, ready, dispatch, answers
    framing.py  the frame format (the executor's copy of ``sandbox/protocol.py``)
    runner.py   one bash/Python command: spawn or fork, output capture, time limit, cancel
    pymain.py   in the forked child: run the code as ``python -c`` would, then exit
    repl.py     with ``--repl``: the persistent Python REPL's supervisor (one cell at a time, its pauses)
    interpreter.py  the REPL's forked interpreter: cells in one ``__main__``, client tools as async functions
    reaper.py   subreaper, and killing everything a command left behind
    outputs.py  each command's fresh ``$OUTPUT_DIR``, read and removed afterwards
    editor.py   view / create / str_replace / put_file
    common.py   log, exceptions, request fields, bounded reads

Must not (every module):
- import execbridge or anything outside the standard library (it runs under the sandbox's Python);
  modules of this package import each other only relatively (it is ``executor`` inside the
  sandbox and ``execbridge.sandbox.executor`` in the gateway's tests);
- import anything heavy at start-up: it is on the "new container to first result" path. ``json``
  (it pulls in ``re`` and ``enum``), ``ctypes``, ``signal``, ``typing`` and ``site`` each cost 3-8 ms
  here and ``__future__`` ~0.1 ms, so the executor uses ``_json``, ``_ctypes`` and ``_signal``
  directly, names ``typing`` only for type checkers (in quoted annotations, without ``from __future__
  import annotations``), and runs ``site.main()`` only when idle or before the first Python command.
  Every module of the package is imported at start-up, none lazily: ``__main__`` takes the package
  out of the import system once ``server`` is imported;
- write anything but frames to the protocol fd, or log user code or program output;
- die because of user code: every command runs in a forked child that always ends in ``os._exit``.

Invariants:
- exactly one response per request, in order (a bash/python answer comes after its ``file`` frames);
  ``cancel`` frames never get a response of their own;
- when a bash/python command's main process exits (or its time runs out, or it is cancelled), every
  other process it started is killed before the answer is sent, so nothing runs between commands
  (``reaper.py``);
- user code sees neither the executor's modules nor its finder or ``sys.path`` entry nor its
  ``-I -S`` flags, and a forked Python command copies as little of the executor's memory as it can
  (the executor's objects are frozen out of the garbage collector's reach after warm-up).

This module only re-exports, for the gateway-side tests, the pure pieces they check: the framing
and its bounds (which must agree with ``protocol.py``) and two editor helpers.
"""

from .editor import _replacement_diff, _trim_partial_utf8
from .framing import FILE_CHUNK, PROTOCOL_VERSION, decode_frame, encode_frame
from .outputs import MAX_LISTED

__all__ = [
    "FILE_CHUNK",
    "MAX_LISTED",
    "PROTOCOL_VERSION",
    "_replacement_diff",
    "_trim_partial_utf8",
    "decode_frame",
    "encode_frame",
]
