"""Start the executor: the one script a sandbox runs, ``python3 -I -S <script> [options]``.

Two forms of the same script:
- in a sandbox, ``/opt/execbridge/executor.py`` is ``client.executor_bytecode()``: this script's
  bytecode with every other module of the package compiled into its ``_MODULES`` constant, served
  by ``_Bundle`` (a meta-path finder and loader) — one file, one ``--ro-bind-data``, nothing to
  compile or unzip at start-up;
- from the source tree (the tests), ``_MODULES`` is still a placeholder and the package is imported
  from the directory this file is in.

Must not: import anything but ``sys`` and ``_frozen_importlib`` (already loaded); leave a trace
user code could see — the finder, or the ``sys.path`` entry, goes as soon as ``server`` is imported,
so every module of the package must have been imported by then (none is imported lazily).

Not ``python executor.zip``: running a zip or a directory goes through ``runpy`` (~4 ms of imports
here), and ``zipimport`` reads and unmarshals every module twice (~1 ms more).
"""

from __future__ import annotations

import sys
from _frozen_importlib import ModuleSpec  # already loaded: the import system itself

TYPE_CHECKING = False  # typing costs ~8 ms to import here
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, ModuleType
    from typing import Any

# client.executor_bytecode() replaces this constant by ((module name, code, is package), ...).
_MODULES: Any = "<executor modules>"


class _Bundle:
    """Finder and loader of the modules compiled into this file."""

    def __init__(self, modules: tuple[tuple[str, CodeType, bool], ...]) -> None:
        self.modules = {name: (code, is_package) for name, code, is_package in modules}

    def find_spec(self, name: str, path: object = None, target: object = None) -> Any:
        entry = self.modules.get(name)
        if entry is None:
            return None
        return ModuleSpec(name, self, is_package=entry[1])

    def create_module(self, spec: object) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        exec(self.modules[module.__name__][0], module.__dict__)


def _server_main() -> Callable[[], int]:
    if isinstance(_MODULES, tuple):
        bundle = _Bundle(_MODULES)
        sys.meta_path.insert(0, bundle)  # first: no other finder searches the disk for our names
        try:
            from executor.server import main
        finally:
            sys.meta_path.remove(bundle)
    else:
        root = __file__.rpartition("/")[0].rpartition("/")[0] or "/"  # the directory holding executor/
        sys.path.insert(0, root)
        try:
            from executor.server import main
        finally:
            sys.path.remove(root)
    return main


if __name__ == "__main__":
    sys.exit(_server_main()())
