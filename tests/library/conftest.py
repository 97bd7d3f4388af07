"""Library mode against the scripted upstream and a real sandbox: ``execbridge.open`` as a program uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execbridge.testing import FakeUpstream

KEY = "dapi-library-test-key"


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(authorize={f"Bearer {KEY}"}.__contains__) as fake:
        yield fake


@pytest.fixture
def fake(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_upstream.reset()
    yield fake_upstream
    assert fake_upstream.remaining == 0, "the test left scripted turns unused"


def library_options(data_dir: Path) -> dict[str, Any]:
    """What ``execbridge.open`` is given in these tests: small containers, a uid range of this process's."""
    return {
        "data_dir": data_dir,
        "max_iterations": 3,
        "sandbox": {
            "spare_containers": 0,
            "memory_mb": 512,
            "disk_mb": 64,
            "command_timeout_s": 20,
            "uid_base": 700_000 + (os.getpid() % 50) * 1000,
        },
    }
