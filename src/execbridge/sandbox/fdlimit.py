"""Each process raises its own soft limit on open file descriptors to what it needs, at start.

systemd's default soft limit is 1,024, and the hard limit is usually far higher (524,288): a process
that holds a few descriptors per live container would fail with EMFILE near a few hundred containers
without ever reaching its configured budget. So the container manager (and the gateway, for its
connections) asks for what its budgets need, up to the hard limit, and says clearly when the hard
limit is too low.

Must not: lower a limit, or touch the hard limit (raising it needs privileges an operator grants).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

# What a live container costs the process that runs its sandboxes: the executor's channel (one
# socket) and its stderr pipe, and the workspace's loop device while a sandbox is being started.
FDS_PER_LIVE_CONTAINER = 3
BASE_FDS = 1024  # the database, logs, sockets to gateways and clients, libraries


def raise_soft_limit(wanted: int, *, who: str) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to ``wanted`` (at most the hard limit); returns the new soft
    limit. Logs a warning naming the shortfall when the hard limit is lower than ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("%s could not raise its file descriptor limit from %d to %d: %s", who, soft, target, exc)
    if soft < wanted:
        log.warning(
            "%s needs up to %d file descriptors but may open only %d (hard limit %s); raise LimitNOFILE "
            "(systemd) or `ulimit -Hn`, or lower the live-container budget",
            who,
            wanted,
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
        )
    return soft
