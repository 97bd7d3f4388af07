"""The tool layer's handling of captured files: what is published, what is an error, what the model reads."""

from __future__ import annotations

from pathlib import Path

from execbridge.config import SandboxSettings
from execbridge.sandbox.base import ExecutionResult, SkippedFile
from execbridge.testing import FakeContainerService, fake_output
from execbridge.tools.code_execution import BASH, PYTHON, command_outcome, render_for_model, run_call
from execbridge.types import CommandOutcome, OutputFile, ServerToolResult, ToolFailure

TOO_LARGE = ExecutionResult(
    "out\n",
    "",
    0,
    1.0,
    error_code="output_file_too_large",
    files=(fake_output("ok.txt", b"ok"),),
    files_too_large=("big.bin",),
)


def test_bash_file_over_the_limit_is_the_reference_error():
    outcome = command_outcome(TOO_LARGE, tool_name=BASH, file_limit=1000)
    assert outcome == ToolFailure(
        "output_file_too_large", "big.bin in $OUTPUT_DIR over the 1000-byte limit; no file of this command was returned"
    )


def test_python_has_no_such_error_code_so_the_rest_is_returned_with_a_note():
    files = (OutputFile("file_1", "ok.txt", 2),)
    outcome = command_outcome(TOO_LARGE, files, tool_name=PYTHON, file_limit=1000)
    assert isinstance(outcome, CommandOutcome) and outcome.files == files and outcome.stdout == "out\n"
    assert outcome.stderr == "[execbridge] not returned from $OUTPUT_DIR, over the 1000-byte limit: big.bin\n"


def test_files_past_the_count_are_a_note_not_an_error():
    result = ExecutionResult("", "warning", 0, 1.0, files_omitted=3)
    outcome = command_outcome(result)
    assert isinstance(outcome, CommandOutcome)
    assert outcome.stderr.startswith("warning\n[execbridge] 3 more file(s) in $OUTPUT_DIR not returned")


def test_many_too_large_names_are_cut_short():
    result = ExecutionResult("", "", 0, 1.0, files_too_large=tuple(f"f{i}" for i in range(25)))
    outcome = command_outcome(result, tool_name=BASH)
    assert isinstance(outcome, ToolFailure) and "f9 and 15 more" in outcome.message
    past_the_list = ExecutionResult(
        "", "", 0, 1.0, files_too_large=tuple(f"f{i}" for i in range(100)), files_too_large_unlisted=200
    )
    python = command_outcome(past_the_list, tool_name=PYTHON)
    assert isinstance(python, CommandOutcome) and "f9 and 290 more\n" in python.stderr


class Batch:
    """An ``OutputBatch`` in a test directory: records what was published and what was discarded."""

    def __init__(self, root: Path, published: list[list[tuple[str, bytes]]]) -> None:
        self.root = root
        self.published = published
        self.paths: list[Path] = []
        self.over_budget: list[str] = []

    def new_path(self) -> Path:
        path = self.root / f"tmp-{len(list(self.root.iterdir()))}"
        self.paths.append(path)
        return path

    async def publish(self, outputs):
        self.published.append([(name, path.read_bytes()) for name, path in outputs])
        return tuple(OutputFile(f"file_{name}", name, path.stat().st_size) for name, path in outputs)

    def discard(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


async def test_run_call_publishes_only_what_it_keeps(tmp_path):
    published: list[list[tuple[str, bytes]]] = []

    def respond(kind: str, source: str) -> ExecutionResult:
        if source == "big":
            return TOO_LARGE
        return ExecutionResult("", "", 0, 1.0, files=(fake_output("a.txt", b"abc"),))

    sandbox = FakeContainerService(respond)
    info = await sandbox.create("k")
    session = sandbox.sessions[info.id]
    limits = SandboxSettings()
    ok = await run_call(session, BASH, {"command": "fine"}, limits, lambda: Batch(tmp_path, published))
    assert ok == CommandOutcome("", "", 0, (OutputFile("file_a.txt", "a.txt", 3),))
    too_large = await run_call(session, BASH, {"command": "big"}, limits, lambda: Batch(tmp_path, published))
    assert isinstance(too_large, ToolFailure)
    assert list(tmp_path.iterdir()) == []  # the batch's files that were not published are gone
    unpublished = await run_call(session, BASH, {"command": "fine"}, limits)  # no Files API: dropped
    assert unpublished == CommandOutcome("", "", 0)
    assert published == [[("a.txt", b"abc")]]


async def test_outputs_over_the_owners_budget_are_named_on_stderr(tmp_path):
    class FullBatch(Batch):
        async def publish(self, outputs):
            self.over_budget = [name for name, _ in outputs]
            return ()

    def respond(kind: str, source: str) -> ExecutionResult:
        return ExecutionResult("out\n", "err", 0, 1.0, files=(fake_output("a.txt", b"abc"),))

    sandbox = FakeContainerService(respond)
    session = sandbox.sessions[(await sandbox.create("k")).id]
    outcome = await run_call(session, BASH, {"command": "x"}, SandboxSettings(), lambda: FullBatch(tmp_path, []))
    assert isinstance(outcome, CommandOutcome) and (outcome.stdout, outcome.files) == ("out\n", ())
    assert outcome.stderr == (
        "err\n[execbridge] not returned from $OUTPUT_DIR, the file storage of this API key is full: a.txt "
        "(delete files with the Files API to free space)\n"
    )


def test_skipped_entries_are_named_in_a_note_and_the_result_is_kept():
    skipped = (
        SkippedFile("l2", "hard_link", "l1"),
        SkippedFile("fifo", "not_regular", "FIFO"),
        SkippedFile("grow", "changed", "written to while it was read"),
    )
    result = ExecutionResult("out\n", "err", 3, 1.0, files_skipped=skipped, files_skipped_unlisted=5)
    outcome = command_outcome(result, tool_name=BASH)
    assert isinstance(outcome, CommandOutcome) and (outcome.stdout, outcome.return_code) == ("out\n", 3)
    assert outcome.stderr == (
        "err\n[execbridge] skipped in $OUTPUT_DIR: l2 (a hard link to l1, counted once), fifo (a FIFO, not a "
        "regular file), grow (changed while it was collected: written to while it was read) and 5 more\n"
    )
    gone = ExecutionResult("", "", 0, 1.0, files_skipped=(SkippedFile(".", "replaced", "symbolic link"),))
    note = command_outcome(gone, tool_name=PYTHON)
    assert isinstance(note, CommandOutcome)
    assert "$OUTPUT_DIR (replaced by a symbolic link; nothing in it was returned)" in note.stderr


def test_model_sees_file_ids_when_names_are_unknown():
    result = ServerToolResult("s", BASH, CommandOutcome("", "", 0, (OutputFile("file_x", "", 0),)))
    assert render_for_model(result).endswith("files returned to the user from $OUTPUT_DIR: file_x")
