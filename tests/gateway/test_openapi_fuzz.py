"""Schema-driven fuzzing of a real ``execbridge serve`` (schemathesis): requests generated from the
gateway's own ``GET /openapi.json``, valid and invalid, against every route; none may get a 5xx (the
upstream is the instant fake, which never fails), a status or content type the document does not
declare, or a response that does not match its schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from execbridge.testing import FakeUpstream

from .conftest import CLIENT_KEY, serve_process

EXAMPLES = int(os.environ.get("EXECBRIDGE_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def running_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("openapi-fuzz")
    with FakeUpstream(instant=True) as upstream:
        env = {
            **os.environ,
            "EXECBRIDGE_DATA_DIR": str(data_dir),
            "EXECBRIDGE_MAX_FILE_BYTES": str(256 << 10),
            "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "1",
            "EXECBRIDGE_SHUTDOWN_GRACE_S": "2",
        }
        with serve_process(env, data_dir, "--upstream", upstream.databricks_url) as url:
            yield url


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=os.environ.get("EXECBRIDGE_FUZZ_RANDOM") != "1",
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_request_gets_a_server_error_or_an_undeclared_answer(running_gateway: str, mode: GenerationMode) -> None:
    """Each operation of the document in turn (schemathesis's pytest plugin does not run on pytest 9)."""
    schema = schemathesis.openapi.from_url(f"{running_gateway}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @SETTINGS
        @given(operation.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=running_gateway, headers={"x-api-key": CLIENT_KEY}, checks=CHECKS, timeout=60
            )

        try:
            fuzz()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # an operation without inputs has nothing to make invalid
