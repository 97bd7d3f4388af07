"""``python -m execbridge.testing --instant``: the fake upstream in its own process (benchmarks)."""

from execbridge.testing.upstream import main

main()
