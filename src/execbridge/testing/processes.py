"""Server processes that tests start must not outlive the test run, however it ends.

``stop_with_parent`` is a ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when the
process that started it dies, so a test run killed by a timeout or by hand leaves no gateway or model
server behind holding ports, memory and containers. (Fixture teardown covers every other ending.)
"""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded now, not between fork and exec


def stop_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
