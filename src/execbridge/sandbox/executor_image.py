"""The executor as it is shipped into a sandbox: its command line and its one-file bytecode image.

Job: ``executor_argv`` builds the command that starts an executor (``executor/``), and
``executor_bytecode`` compiles the package into the single ``.pyc`` image bound into every sandbox
at ``bwrap.EXECUTOR_PATH``. The container manager builds the image once; the launcher builds the argv.

Must not: start anything, or pick a container's workspace path (the caller passes it: it is the
container's, ``ContainerInfo.workspace``).

Invariants:
- The image holds every module of the package, each after the siblings it imports (an import cycle
  is a ``graphlib.CycleError`` here, not a failure inside a sandbox).
- The image runs only on a Python with this interpreter's major.minor ("Bad magic number" otherwise).
"""

from __future__ import annotations

import ast
import graphlib
import importlib.util
import marshal
from pathlib import Path

EXECUTOR_PACKAGE = Path(__file__).with_name("executor")
"""The executor's source: a stdlib-only package that runs inside the sandbox (``executor/__init__.py``)."""
EXECUTOR_SCRIPT = EXECUTOR_PACKAGE / "__main__.py"
"""The script that starts it from this source tree (the tests); a sandbox gets ``executor_bytecode()``."""
_MODULES_SLOT = "<executor modules>"  # the placeholder constant of ``_MODULES`` in executor/__main__.py


def executor_argv(
    python: str | Path,
    script: str | Path = EXECUTOR_SCRIPT,
    *,
    workspace: str | Path,
    output_root: str | Path = "/tmp/outputs",
    kill_all: bool = False,
    env: dict[str, str] | None = None,
    repl: bool = False,
) -> list[str]:
    """The command line that starts an executor: protocol on stdin/stdout, log on stderr.

    ``workspace``: the container's workspace path as the executor sees it (its working directory,
    ``HOME``, and the base of relative editor paths).

    ``-I -S``: no environment, no user site, no ``site`` at start-up (it costs ~6 ms and runs later,
    when the executor is idle or before its first Python command). Pass ``kill_all`` only when the
    executor is alone in its own PID namespace: it then kills every other process after each command.
    ``repl``: the persistent Python REPL's supervisor (``executor/repl.py``), which answers cells only.
    """
    argv = [str(python), "-I", "-S", str(script), "--workspace", str(workspace), "--output-root", str(output_root)]
    if kill_all:
        argv.append("--kill-all")
    if repl:
        argv.append("--repl")
    for name, value in (env or {}).items():
        argv += ["--env", f"{name}={value}"]
    return argv


def executor_bytecode() -> bytes:
    """The executor as one ``.pyc`` image, for ``python3 -I -S /opt/execbridge/executor.py``.

    The image is ``executor/__main__.py`` compiled, with every other module of the package compiled
    into its ``_MODULES`` constant, each after the siblings it imports: one file to bind into the
    sandbox, nothing to compile at start-up. Sources would be compiled at every start (~8 ms here, as
    much as the interpreter's own start-up), and nothing can cache them in a read-only sandbox.

    The image only runs on a Python with this interpreter's bytecode version (same major.minor); any
    other refuses it at start ("Bad magic number").
    """
    paths = {
        "executor" if path.stem == "__init__" else f"executor.{path.stem}": path
        for path in EXECUTOR_PACKAGE.glob("*.py")
        if path != EXECUTOR_SCRIPT
    }
    sources = {name: path.read_bytes() for name, path in paths.items()}
    needs: dict[str, set[str]] = {}  # the siblings each module imports as it runs: top-level ``from .x import``
    for name, source in sources.items():
        imports = [node for node in ast.parse(source).body if isinstance(node, ast.ImportFrom) and node.level == 1]
        needs[name] = {f"executor.{node.module or alias.name}" for node in imports for alias in node.names}
    modules = []
    for name in graphlib.TopologicalSorter(needs).static_order():  # CycleError on an import cycle
        code = compile(sources[name], f"executor/{paths[name].name}", "exec", dont_inherit=True, optimize=0)
        modules.append((name, code, name == "executor"))
    script = compile(EXECUTOR_SCRIPT.read_bytes(), "executor/__main__.py", "exec", dont_inherit=True, optimize=0)
    slot = [i for i, c in enumerate(script.co_consts) if type(c) is str and c == _MODULES_SLOT]
    if len(slot) != 1:
        raise RuntimeError(f"executor/__main__.py has no single {_MODULES_SLOT!r} constant to fill")
    consts = list(script.co_consts)
    consts[slot[0]] = tuple(modules)
    script = script.replace(co_consts=tuple(consts))
    # .pyc header: magic, flags (0: timestamp-based), mtime, source size; running a .pyc directly
    # checks only the magic.
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(script)
