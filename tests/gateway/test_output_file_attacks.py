"""Hostile ``$OUTPUT_DIR`` contents through the whole gateway, seen by the official SDK.

Sparse files of huge apparent size, hundreds of hard links to one file and a budget's worth of
files come back as Anthropic result blocks (an error block, files with a note on stderr), never as a
500; the data directory grows by what was returned, nothing more, and no temporary is left behind.
The sandbox-level attacks are in ``tests/sandbox/test_adversarial_outputs.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from anthropic.types.beta import (
    BetaBashCodeExecutionResultBlock,
    BetaBashCodeExecutionToolResultError,
    BetaCodeExecutionResultBlock,
)

from execbridge.testing import FakeUpstream, Turn, tool_results

from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

pytestmark = [pytest.mark.adversarial]

BASH_TOOL = [{"type": "code_execution_20250825", "name": "code_execution"}]
PYTHON_TOOL = [{"type": "code_execution_20250522", "name": "code_execution"}]
TOTAL = 2 << 20  # the gateway's output budget per command; files are capped at 512 KiB each (conftest)
SPARSE = 'for i in 1 2 3 4 5 6 7 8; do truncate -s 100M "$OUTPUT_DIR/s$i"; done; echo sparse'
LINKS = (
    'head -c 300K /dev/urandom > /tmp/f; for i in $(seq 1 500); do ln /tmp/f "$OUTPUT_DIR/l$i"; done; sha256sum /tmp/f'
)
FIT = "import os\nfor i in range(8):\n    open(os.environ['OUTPUT_DIR'] + f'/p{i}', 'w').truncate(400 << 10)\n"


@pytest.fixture(scope="module")
def attacked(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    options = {
        "EXECBRIDGE_SANDBOX__OUTPUT_TOTAL_LIMIT_BYTES": str(TOTAL),
        "EXECBRIDGE_SANDBOX__UID_BASE": "240000",  # not the session gateway's range: both run at once
    }
    with serve(fake_upstream, tmp_path_factory.mktemp("attacked-data"), **options) as running:
        yield running


def stored(gateway: Gateway) -> int:
    """Apparent bytes of every file in the gateway's Files API directory."""
    root = gateway.data_dir / "files"
    assert not list(root.glob(".tmp-*")), "a temporary output file was left behind"
    return sum(p.stat().st_size for p in root.iterdir()) if root.exists() else 0


def test_sparse_and_hard_linked_outputs_get_anthropic_blocks_not_a_500(attacked: Gateway, fake_upstream: FakeUpstream):
    fake_upstream.reset(
        [
            Turn.tool_call("bash_code_execution", command=SPARSE).call("bash_code_execution", command=LINKS),
            Turn.text("ok"),
        ]
    )
    sdk = sdk_client(attacked.url, CLIENT_KEY)
    before = stored(attacked)
    message = sdk.beta.messages.create(
        model="m", max_tokens=100, tools=BASH_TOOL, messages=[{"role": "user", "content": "fill $OUTPUT_DIR"}]
    )
    sparse, links = (b.content for b in message.content if b.type == "bash_code_execution_tool_result")
    assert isinstance(sparse, BetaBashCodeExecutionToolResultError)
    assert sparse.error_code == "output_file_too_large"
    assert "s1, s2, s3" in tool_results(fake_upstream.chat_requests[1])[0]  # the model is told which files

    assert isinstance(links, BetaBashCodeExecutionResultBlock) and links.return_code == 0
    (output,) = links.content
    content = sdk.beta.files.download(output.file_id).read()
    assert hashlib.sha256(content).hexdigest() == links.stdout.split()[0]
    assert sdk.beta.files.retrieve_metadata(output.file_id).filename == "l1"
    assert "l10 (a hard link to l1, counted once)" in links.stderr and "and 489 more" in links.stderr
    assert stored(attacked) - before == len(content) == 300 << 10
    assert fake_upstream.remaining == 0


def test_a_budgets_worth_of_python_outputs_come_back_with_a_note(attacked: Gateway, fake_upstream: FakeUpstream):
    fake_upstream.reset([Turn.tool_call("code_execution", code=FIT + "print('fit')"), Turn.text("ok")])
    sdk = sdk_client(attacked.url, CLIENT_KEY)
    before = stored(attacked)
    with sdk.beta.messages.stream(
        model="m",
        max_tokens=100,
        betas=["code-execution-2025-05-22"],
        tools=PYTHON_TOOL,
        messages=[{"role": "user", "content": "write"}],
    ) as stream:
        message = stream.get_final_message()
    result = message.content[1].content
    assert isinstance(result, BetaCodeExecutionResultBlock) and (result.stdout, result.return_code) == ("fit\n", 0)
    names = [sdk.beta.files.retrieve_metadata(o.file_id).filename for o in result.content]
    assert names == ["p0", "p1", "p2", "p3", "p4"]  # five of 400 KiB fit in 2 MiB, the 6th would not
    assert "3 more file(s) in $OUTPUT_DIR not returned" in result.stderr
    assert stored(attacked) - before == 5 * (400 << 10)
    assert Path(attacked.data_dir / "files").stat().st_mode & 0o777 == 0o700
