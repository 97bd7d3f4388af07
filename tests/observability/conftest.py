"""A scripted conversation through library mode, with the real sandbox and store, for the telemetry tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anthropic
import pytest

import execbridge
from execbridge.telemetry import Sink
from execbridge.testing import FakeUpstream, Turn
from library.conftest import KEY, library_options

BASH_TOOL = [{"type": "code_execution_20250825", "name": "code_execution"}]
SALES = b"month,amount\nJan,120.5\nFeb,98\nMar,143.25\n"
SECRET_COMMAND = "echo s3cr3t-in-the-code > /dev/null; exit 3"


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(authorize={f"Bearer {KEY}"}.__contains__) as fake:
        yield fake


@dataclass
class Conversation:
    message: anthropic.types.Message
    metrics_text: str
    data_dir: Path


def converse(fake: FakeUpstream, data_dir: Path, sinks: Sequence[Sink] = (), **overrides: object) -> Conversation:
    """Upload a CSV, then one request: a retried first turn, two commands (one failing), a final answer."""
    fake.reset(
        [
            Turn.error(429, "slow down", retry_after=0.01),
            Turn.text("Looking.", prompt_tokens=100, completion_tokens=20)
            .call("bash_code_execution", command="wc -l /workspace/sales.csv")
            .call("bash_code_execution", command=SECRET_COMMAND),
            Turn.text("Four lines.", prompt_tokens=150, completion_tokens=5),
        ]
    )
    options = {**library_options(data_dir), "usage_flush_s": 0, **overrides}
    with execbridge.open(upstream=fake.databricks_url, sinks=sinks, **options) as gateway:
        client = anthropic.Anthropic(api_key=KEY, base_url=gateway.base_url, http_client=gateway.http_client())
        uploaded = client.beta.files.upload(file=("sales.csv", SALES, "text/csv"))
        message = client.messages.create(
            model="m",
            max_tokens=512,
            tools=BASH_TOOL,  # type: ignore[list-item]
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Count."},
                        {"type": "container_upload", "file_id": uploaded.id},
                    ],
                }
            ],
        )
        scraped = gateway.http_client().get("/metrics")
    assert fake.remaining == 0
    return Conversation(message, scraped.text if scraped.status_code == 200 else "", data_dir)
