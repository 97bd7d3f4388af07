"""The examples run as a reader would run them, against the scripted upstream and a real sandbox: the
notebook cell by cell in a real Jupyter kernel (nbclient), the script as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from execbridge.testing import FakeUpstream, Turn, last_tool_result
from library.conftest import KEY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# What a model would write for the notebook's question; the scripted upstream "writes" it. The standard
# library only: the tests' minimal sandbox runtime has no pandas (the full one does).
REVENUE_BY_REGION = r"""python3 - <<'PY'
import csv
from collections import Counter
totals = Counter()
with open('/workspace/sales.csv', newline='') as f:
    for row in csv.DictReader(f):
        totals[row['region']] += float(row['revenue'])
for region, total in totals.most_common():
    print(f'{region:<8}{total}')
top, amount = totals.most_common(1)[0]
print('top:', top, amount)
PY"""


@pytest.fixture(scope="module")
def fake_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(authorize={f"Bearer {KEY}"}.__contains__) as fake:
        yield fake


@pytest.fixture
def example_env(fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    settings = {
        "EXECBRIDGE_UPSTREAM": fake_upstream.databricks_url,
        "EXECBRIDGE_API_KEY": KEY,
        "EXECBRIDGE_MODEL": "m",
        "EXECBRIDGE_DATA_DIR": str(tmp_path / "data"),
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0",
        "EXECBRIDGE_SANDBOX__MEMORY_MB": "512",
        "EXECBRIDGE_SANDBOX__DISK_MB": "64",
        "EXECBRIDGE_SANDBOX__UID_BASE": str(750_000 + (os.getpid() % 50) * 1000),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)  # the kernel and the script inherit the environment
    return {**os.environ, **settings}


def test_the_notebook_analyses_the_table_in_the_sandbox(fake_upstream: FakeUpstream, example_env: dict[str, str]):
    fake_upstream.reset(
        [
            Turn.text("Let me add it up.").call("bash_code_execution", command=REVENUE_BY_REGION),
            lambda request: Turn.text(f"By revenue: {last_tool_result(request).splitlines()[-1]}"),
        ]
    )
    notebook = nbformat.read(EXAMPLES / "analyse_table.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    ).execute()

    printed = [
        "".join(output.get("text", "") for output in cell.get("outputs", []))
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    assert printed[1].startswith("9 rows; columns: region, month, units, revenue")
    answer = printed[3]
    assert "north   45960.0\nsouth   40135.0\nwest    32110.0\n" in answer  # ran on the uploaded file, in the sandbox
    assert "By revenue: top: north 45960.0" in answer
    assert printed[4].startswith("container: container_") and "stop reason: end_turn" in printed[4]
    assert fake_upstream.remaining == 0


def test_the_script_streams_the_answer_and_the_commands(fake_upstream: FakeUpstream, example_env: dict[str, str]):
    fake_upstream.reset(
        [
            Turn.text("Computing.").call("bash_code_execution", command="python3 -c 'print(2**10)'"),
            Turn.text("It is 1024."),
        ]
    )
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "ask_with_code.py"), "What is 2**10?"],
        env=example_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Computing.\n$ python3 -c 'print(2**10)'\n1024\nIt is 1024.\n"
    assert fake_upstream.remaining == 0
