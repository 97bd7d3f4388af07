"""Hypothesis settings for the fuzz tests: a bounded, repeatable budget in CI, more on request.

``derandomize`` makes every run try the same inputs, so a run on a busy machine cannot fail where an
idle one passed (no timing luck, no lucky seeds); ``deadline=None`` because a slow machine is not a
bug. ``EXECBRIDGE_FUZZ_EXAMPLES=20000`` and ``EXECBRIDGE_FUZZ_RANDOM=1`` let a developer search
further and wider. No example database is written into the checkout.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "execbridge",
    max_examples=int(os.environ.get("EXECBRIDGE_FUZZ_EXAMPLES", "400")),
    derandomize=os.environ.get("EXECBRIDGE_FUZZ_RANDOM") != "1",
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("execbridge")
