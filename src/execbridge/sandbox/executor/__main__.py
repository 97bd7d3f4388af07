"""Start the executor: the one script a sandbox runs, ``python3 -I -S <script> [options]``.

Two forms of the same script:
- in a sandbox, ``/opt/execbridge/executor.py`` is ``executor_image.executor_bytecode()``: this
  script's bytecode with every other module of the package compiled into its ``_MODULES`` constant, in
  dependency order, executed straight into ``sys.modules`` — one file, one ``--ro-bind-data``,
  nothing to compile, unzip or look up at start-up;
- from the source tree (the tests), ``_MODULES`` is still a placeholder and the package is imported
  from the directory this file is in, through the import system.

Must not: import anything but ``sys`` (from the source tree, ``os`` too); leave a trace user code
could see — once ``server`` is loaded, the package's entries in ``sys.modules`` (and the
``sys.path`` entry) go, so every module of the package must have been loaded by then (none is
imported lazily; a relative import at run time would fail).

Not ``python executor.zip``: running a zip or a directory goes through ``runpy`` (~4 ms of imports
here), and ``zipimport`` reads and unmarshals every module twice (~1 ms more).
"""

import sys

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# executor_image.executor_bytecode() replaces this constant by ((module name, code, is package), ...),
# every module after the siblings it imports.
_MODULES: "Any" = "<executor modules>"


def _server_main() -> "Callable[[], int]":
    if isinstance(_MODULES, tuple):
        # Straight into sys.modules, in order, so each relative import finds its target there (the
        # import system's own machinery, with a finder, costs ~0.15 ms more for nine modules).
        for name, code, is_package in _MODULES:
            module = type(sys)(name)
            module.__package__ = "executor"
            if is_package:
                module.__path__ = []
            sys.modules[name] = module
            exec(code, module.__dict__)
        main: Callable[[], int] = sys.modules["executor.server"].main
    else:
        import os

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the directory holding executor/
        sys.path.insert(0, root)
        try:
            from executor.server import main as source_main
        finally:
            sys.path.remove(root)
        main = source_main
    # The modules live on in their functions; once out of sys.modules, the Python commands' children
    # inherit an import system without them (``import executor`` finds the user's own file), at no cost
    # per command.
    for name in [name for name in sys.modules if name == "executor" or name.startswith("executor.")]:
        del sys.modules[name]
    return main


if __name__ == "__main__":
    sys.exit(_server_main()())
