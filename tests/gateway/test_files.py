"""Files both ways, end to end: the official SDK → execbridge serve → fake Databricks + real sandbox.

Uploads with ``client.beta.files`` and ``client.files``, ``container_upload`` into the container, a
scripted model that reads the CSV and draws a chart into ``$OUTPUT_DIR``, the chart downloaded with
the SDK and checked as a real PNG; list/get/delete in both namespaces; another key sees nothing.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import struct
import zlib

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import (
    BashCodeExecutionResultBlock,
    BashCodeExecutionToolResultBlock,
    FileMetadata,
    FileNotDownloadableError,
)
from anthropic.types.beta import (
    BetaBashCodeExecutionOutputBlock,
    BetaBashCodeExecutionResultBlock,
    BetaBashCodeExecutionToolResultBlock,
    BetaBashCodeExecutionToolResultError,
    BetaCodeExecutionOutputBlock,
    BetaCodeExecutionResultBlock,
    BetaFileMetadata,
    BetaTextEditorCodeExecutionViewResultBlock,
)

from execbridge.testing import Turn, last_tool_result, tool_results

from .conftest import (
    CLIENT_KEY,
    LISTER_KEY,
    MAX_FILE_BYTES,
    OTHER_KEY,
    OUTPUT_FILE_LIMIT_BYTES,
    Gateway,
    sdk_client,
    serve,
)

BASH_TOOL = [{"type": "code_execution_20250825", "name": "code_execution"}]
PYTHON_TOOL = [{"type": "code_execution_20250522", "name": "code_execution"}]
SALES = b"month,amount\nJan,120.5\nFeb,98\nMar,143.25\n"
CHART_SCRIPT = r"""python3 - <<'PY'
import csv, os
import matplotlib.pyplot as plt
with open('/workspace/sales.csv', newline='') as f:
    rows = list(csv.DictReader(f))
amounts = [float(r['amount']) for r in rows]
print(f'total={sum(amounts):g} months={len(rows)}')
fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
ax.bar([r['month'] for r in rows], amounts)
fig.savefig(os.path.join(os.environ['OUTPUT_DIR'], 'chart.png'))
PY
ls "$OUTPUT_DIR"
"""


def client(gateway: Gateway, key: str = CLIENT_KEY) -> anthropic.Anthropic:
    return sdk_client(gateway.url, key)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking every chunk's CRC and inflating the image data."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
        if kind == b"IEND":
            break
    assert header is not None and idat
    width, height, depth, color = header[:4]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    assert depth == 8
    assert len(zlib.decompress(idat)) == height * (1 + width * channels)  # one filter byte per row
    return width, height


def upload_message(file_id: str, text: str = "Chart my sales.") -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "container_upload", "file_id": file_id}]}
    ]


# ---------------------------------------------------------------- the whole story


def test_csv_in_chart_out_beta_namespace(gateway: Gateway, fake):
    sdk = client(gateway)
    uploaded = sdk.beta.files.upload(file=("sales.csv", SALES, "text/csv"), betas=["files-api-2025-04-14"])
    assert isinstance(uploaded, BetaFileMetadata)
    assert (uploaded.filename, uploaded.mime_type, uploaded.size_bytes) == ("sales.csv", "text/csv", len(SALES))
    assert uploaded.id.startswith("file_") and uploaded.downloadable is False and uploaded.expires_at is None

    fake.reset(
        [
            Turn.text("Let me look.").call("bash_code_execution", command=CHART_SCRIPT),
            Turn.text("Here is your chart."),
        ]
    )
    message = sdk.beta.messages.create(
        model="m",
        max_tokens=1024,
        betas=["code-execution-2025-08-25", "files-api-2025-04-14"],
        tools=BASH_TOOL,
        messages=upload_message(uploaded.id),
    )
    _intro, call, result, answer = message.content
    assert call.input == {"command": CHART_SCRIPT}
    assert isinstance(result, BetaBashCodeExecutionToolResultBlock)
    assert isinstance(result.content, BetaBashCodeExecutionResultBlock), result.content
    assert result.content.return_code == 0, result.content.stderr
    assert result.content.stdout == "total=361.75 months=3\nchart.png\n"
    (output,) = result.content.content
    assert isinstance(output, BetaBashCodeExecutionOutputBlock) and output.file_id.startswith("file_")

    # The model was told where the upload is, and which file went back to the user.
    first, second = fake.chat_requests
    assert "/workspace/sales.csv" in orjson.dumps(first["messages"]).decode()
    assert answer.text == "Here is your chart."
    assert "files returned to the user from $OUTPUT_DIR: chart.png" in last_tool_result(second)

    meta = sdk.beta.files.retrieve_metadata(output.file_id)
    assert (meta.filename, meta.mime_type, meta.downloadable) == ("chart.png", "image/png", True)
    chart = sdk.beta.files.download(output.file_id).read()
    assert len(chart) == meta.size_bytes > 0
    assert png_size(chart) == (150, 100)  # figsize times dpi


def test_ga_namespace_round_trip_and_uploads_are_not_downloadable(gateway: Gateway, fake):
    sdk = client(gateway)
    uploaded = sdk.files.upload(file=("notes.txt", b"hello\n", "text/plain"))
    assert isinstance(uploaded, FileMetadata) and uploaded.downloadable is False
    assert sdk.files.retrieve_metadata(uploaded.id) == uploaded
    assert uploaded.id in {f.id for f in sdk.files.list()}

    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.files.download(uploaded.id)
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert refused.value.body["error"]["details"] == {"error_code": "file_not_downloadable"}
    assert isinstance(refused.value, FileNotDownloadableError)  # the SDK maps (400, error_code) to it

    deleted = sdk.files.delete(uploaded.id)
    assert (deleted.id, deleted.type) == (uploaded.id, "file_deleted")
    assert not (gateway.data_dir / "files" / uploaded.id).exists()
    with pytest.raises(anthropic.NotFoundError):
        sdk.files.retrieve_metadata(uploaded.id)
    with pytest.raises(anthropic.NotFoundError):
        sdk.files.delete(uploaded.id)


def test_listing_pages_in_both_sdk_namespaces_and_raw_cursors(gateway: Gateway, fake):
    key = LISTER_KEY  # a key of its own: the listing holds exactly these files
    sdk = client(gateway, key)
    made = [sdk.beta.files.upload(file=(f"f{i}.json", b"{}", "application/json")).id for i in range(5)]
    newest_first = made[::-1]
    assert [f.id for f in sdk.beta.files.list(limit=2)] == newest_first  # auto-paginates over next_page
    assert [f.id for f in sdk.files.list(limit=3)] == newest_first

    headers = {"x-api-key": key}
    page = httpx.get(f"{gateway.url}/v1/files?beta=true&limit=2", headers=headers).json()
    assert set(page) == {"data", "has_more", "first_id", "last_id", "next_page"}
    assert (page["first_id"], page["last_id"], page["has_more"]) == (made[4], made[3], True)
    assert page["next_page"].startswith("page_")
    older = httpx.get(f"{gateway.url}/v1/files", params={"after_id": made[3], "limit": 2}, headers=headers).json()
    assert [f["id"] for f in older["data"]] == [made[2], made[1]] and older["has_more"] is True
    newer = httpx.get(f"{gateway.url}/v1/files", params={"before_id": made[1], "limit": 2}, headers=headers).json()
    assert [f["id"] for f in newer["data"]] == [made[3], made[2]] and newer["has_more"] is True
    picked = httpx.get(f"{gateway.url}/v1/files", params={"ids[]": [made[0], "file_nope"]}, headers=headers).json()
    assert [f["id"] for f in picked["data"]] == [made[0]] and picked["next_page"] is None

    for file_id in made:
        sdk.beta.files.delete(file_id)
    assert list(sdk.beta.files.list()) == []


@pytest.mark.adversarial
def test_made_up_keys_create_nothing(gateway: Gateway, fake):
    """Pass-through mode: a key becomes an owner only once the upstream has accepted it, so anyone who
    reaches the port cannot fill the disk under made-up owners."""
    files_dir = gateway.data_dir / "files"
    before = sorted(files_dir.iterdir())
    made_up = ["junk", "dapi-" + "0" * 40, "x" * 4000, CLIENT_KEY + "-not", CLIENT_KEY.upper()]
    for key in made_up * 2:  # the second round is answered from memory
        with pytest.raises(anthropic.AuthenticationError) as refused:
            client(gateway, key).beta.files.upload(file=("fill.bin", b"\0" * 1024, "application/octet-stream"))
        assert refused.value.body["error"]["type"] == "authentication_error"
    assert sorted(files_dir.iterdir()) == before  # not a byte written
    # One upstream call per key (each refused), not one per request.
    assert [status for status, _ in fake.rejections] == [401] * len(made_up)
    mine = client(gateway).beta.files.upload(file=("ok.csv", b"a\n", "text/csv"))  # the real key still works
    client(gateway).beta.files.delete(mine.id)


def test_another_key_sees_none_of_it(gateway: Gateway, fake):
    mine = client(gateway).beta.files.upload(file=("secret.csv", b"a,b\n1,2\n", "text/csv"))
    theirs = client(gateway, OTHER_KEY)
    assert mine.id not in {f.id for f in theirs.beta.files.list()}
    for attempt in (theirs.beta.files.retrieve_metadata, theirs.beta.files.download, theirs.beta.files.delete):
        with pytest.raises(anthropic.NotFoundError):
            attempt(mine.id)
    with pytest.raises(anthropic.BadRequestError) as refused:
        theirs.messages.create(model="m", max_tokens=10, tools=BASH_TOOL, messages=upload_message(mine.id))
    assert mine.id in refused.value.body["error"]["message"]
    assert fake.chat_requests == []  # refused before the model ran
    client(gateway).beta.files.retrieve_metadata(mine.id)  # still there for its owner


def test_unknown_file_in_container_upload_is_a_400_naming_it(gateway: Gateway, fake):
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(gateway).messages.create(
            model="m", max_tokens=10, tools=BASH_TOOL, messages=upload_message("file_011CdoesNotExist")
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"
    assert "file_011CdoesNotExist" in refused.value.body["error"]["message"]
    assert fake.chat_requests == []


def test_oversized_upload_is_413_whether_declared_or_streamed(gateway: Gateway, fake):
    too_big = b"x" * (MAX_FILE_BYTES + 1)
    with pytest.raises(anthropic.APIStatusError) as refused:
        client(gateway).beta.files.upload(file=("big.bin", too_big, "application/octet-stream"))
    assert refused.value.status_code == 413
    assert refused.value.body["error"]["type"] == "request_too_large"

    # No content-length: the limit is enforced while the body streams in.
    boundary = "b0undary"

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'.encode()
        for _ in range(8):
            yield b"y" * (MAX_FILE_BYTES // 4)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = httpx.post(
        f"{gateway.url}/v1/files",
        content=body(),
        headers={
            "x-api-key": CLIENT_KEY,
            "anthropic-version": "2023-06-01",
            "content-type": f"multipart/form-data; boundary={boundary}",
        },
    )
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"
    assert not list((gateway.data_dir / "files").glob(".tmp-*"))  # the partial upload is gone


def test_reput_never_clobbers_and_same_names_do_not_collide(gateway: Gateway, fake):
    sdk = client(gateway)
    first = sdk.files.upload(file=("notes.txt", b"first upload\n", "text/plain"))
    second = sdk.files.upload(file=("dir/notes.txt", b"second upload\n", "text/plain"))
    assert second.filename == "notes.txt"  # only the final path component is kept
    fake.reset(
        [
            Turn.tool_call("bash_code_execution", command="cat notes.txt notes-2.txt && echo changed > notes.txt"),
            Turn.text("changed it"),
            Turn.tool_call("bash_code_execution", command="cat notes.txt notes-2.txt"),
            Turn.text("read it"),
        ]
    )
    history = [
        {
            "role": "user",
            "content": [
                {"type": "container_upload", "file_id": first.id},
                {"type": "container_upload", "file_id": second.id},
                {"type": "text", "text": "change the first"},
            ],
        }
    ]
    one = sdk.messages.create(model="m", max_tokens=100, tools=BASH_TOOL, messages=history)
    assert one.content[1].content.stdout == "first upload\nsecond upload\n"
    history += [
        {"role": "assistant", "content": [b.to_dict() for b in one.content]},
        {"role": "user", "content": "read them again"},
    ]
    two = sdk.messages.create(model="m", max_tokens=100, tools=BASH_TOOL, container=one.container.id, messages=history)
    assert two.content[1].content.stdout == "changed\nsecond upload\n"  # the model's change survived
    notes = orjson.dumps(fake.chat_requests[2]["messages"]).decode()
    assert "/workspace/notes.txt" in notes and "/workspace/notes-2.txt" in notes


# ---------------------------------------------------------------- generated files


def test_streaming_result_blocks_carry_file_ids(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call(
                "bash_code_execution",
                command='printf "a,b\\n1,2\\n" > "$OUTPUT_DIR/table.csv"; echo report > "$OUTPUT_DIR/report.txt"',
            ),
            Turn.text("two files"),
        ]
    )
    sdk = client(gateway)
    with sdk.messages.stream(
        model="m", max_tokens=100, tools=BASH_TOOL, messages=[{"role": "user", "content": "make files"}]
    ) as stream:
        starts = [e.content_block for e in stream if e.type == "content_block_start"]
        final = stream.get_final_message()
    streamed = next(b for b in starts if b.type == "bash_code_execution_tool_result")
    result = final.content[1]
    assert isinstance(result, BashCodeExecutionToolResultBlock)
    assert isinstance(result.content, BashCodeExecutionResultBlock)
    assert [o.file_id for o in streamed.content.content] == [o.file_id for o in result.content.content]
    names = {sdk.files.retrieve_metadata(o.file_id).filename: o.file_id for o in result.content.content}
    assert set(names) == {"table.csv", "report.txt"}
    assert sdk.files.download(names["table.csv"]).read() == b"a,b\n1,2\n"
    assert sdk.files.retrieve_metadata(names["table.csv"]).mime_type == "text/csv"


def test_python_tool_returns_code_execution_output(gateway: Gateway, fake):
    code = "import os\nopen(os.path.join(os.environ['OUTPUT_DIR'], 'out.txt'), 'w').write('42')\nprint('ok')"
    fake.reset([Turn.tool_call("code_execution", code=code), Turn.text("wrote it")])
    message = client(gateway).beta.messages.create(
        model="m",
        max_tokens=100,
        betas=["code-execution-2025-05-22"],
        tools=PYTHON_TOOL,
        messages=[{"role": "user", "content": "write"}],
    )
    result = message.content[1].content
    assert isinstance(result, BetaCodeExecutionResultBlock) and result.stdout == "ok\n"
    (output,) = result.content
    assert isinstance(output, BetaCodeExecutionOutputBlock)
    assert client(gateway).beta.files.download(output.file_id).read() == b"42"


def test_output_limits_size_is_an_error_and_count_is_a_note(gateway: Gateway, fake):
    big = OUTPUT_FILE_LIMIT_BYTES + 1
    fake.reset(
        [
            Turn.tool_call(
                "bash_code_execution",
                command=f'head -c {big} /dev/zero > "$OUTPUT_DIR/big.bin"; touch "$OUTPUT_DIR/ok.txt"',
            ),
            Turn.tool_call(
                "bash_code_execution", command='for i in $(seq 1 34); do echo $i > "$OUTPUT_DIR/f$i.txt"; done'
            ),
            Turn.text("done"),
        ]
    )
    message = client(gateway).beta.messages.create(
        model="m", max_tokens=100, tools=BASH_TOOL, messages=[{"role": "user", "content": "files"}]
    )
    too_large, many = (b.content for b in message.content if b.type == "bash_code_execution_tool_result")
    assert isinstance(too_large, BetaBashCodeExecutionToolResultError)
    assert too_large.error_code == "output_file_too_large"
    assert "big.bin" in tool_results(fake.chat_requests[1])[0]  # the model is told which file

    assert isinstance(many, BetaBashCodeExecutionResultBlock) and len(many.content) == 32
    assert "2 more file(s) in $OUTPUT_DIR not returned" in many.stderr


def test_links_and_odd_names_in_output_dir_publish_only_regular_files(gateway: Gateway, fake):
    command = r"""cd "$OUTPUT_DIR"
ln -s /etc/hostname host; ln -s /workspace ws; ln -s / root; mkfifo fifo; mkdir sub; echo deep > sub/deep.txt
echo ok > ok.txt
python3 -c 'open("we\nird\"x.txt", "w").write("odd"); open(b"bad\xff.bin", "w").write("b")'
"""
    fake.reset([Turn.tool_call("bash_code_execution", command=command), Turn.text("done")])
    sdk = client(gateway)
    message = sdk.messages.create(
        model="m", max_tokens=100, tools=BASH_TOOL, messages=[{"role": "user", "content": "try"}]
    )
    result = message.content[1].content
    assert result.return_code == 0, result.stderr
    published = {sdk.files.retrieve_metadata(o.file_id).filename: o.file_id for o in result.content}
    assert set(published) == {"ok.txt", 'we\nird"x.txt', "bad\ufffd.bin"}  # no link, FIFO or subdirectory
    assert sdk.files.download(published['we\nird"x.txt']).read() == b"odd"


def test_editor_views_images_and_pdfs_as_such(gateway: Gateway, fake):
    make = (
        "python3 -c \"import matplotlib.pyplot as plt; plt.figure(figsize=(1, 1), dpi=20); plt.savefig('dot.png')\"; "
        "printf '%%PDF-1.4\\n%%%%EOF\\n' > doc.pdf"
    )
    fake.reset(
        [
            Turn.tool_call("bash_code_execution", command=make),
            Turn.tool_call("text_editor_code_execution", command="view", path="dot.png").call(
                "text_editor_code_execution", command="view", path="/workspace/doc.pdf"
            ),
            Turn.text("seen"),
        ]
    )
    message = client(gateway).beta.messages.create(
        model="m", max_tokens=100, tools=BASH_TOOL, messages=[{"role": "user", "content": "look"}]
    )
    made, image, pdf = (b.content for b in message.content if b.type.endswith("_tool_result"))
    assert made.return_code == 0, made.stderr
    assert isinstance(image, BetaTextEditorCodeExecutionViewResultBlock) and image.file_type == "image"
    assert png_size(base64.b64decode(image.content)) == (20, 20)
    assert isinstance(pdf, BetaTextEditorCodeExecutionViewResultBlock) and pdf.file_type == "pdf"
    assert base64.b64decode(pdf.content).startswith(b"%PDF-1.4")


# ---------------------------------------------------------------- persistence


def test_files_survive_a_restart(fake_upstream, tmp_path):
    data_dir = tmp_path / "restart"
    data_dir.mkdir()
    options = {"EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0", "EXECBRIDGE_SANDBOX__UID_BASE": "230000"}
    with serve(fake_upstream, data_dir, **options) as first:
        uploaded = client(first).beta.files.upload(file=("keep.csv", SALES, "text/csv"))
    with serve(fake_upstream, data_dir, **options) as second:
        sdk = client(second)
        assert sdk.beta.files.retrieve_metadata(uploaded.id) == uploaded
        assert [f.id for f in sdk.beta.files.list()] == [uploaded.id]
        sdk.beta.files.delete(uploaded.id)
    assert not (data_dir / "files" / uploaded.id).exists()


# ---------------------------------------------------------------- budgets and expiry


def test_owner_budget_is_a_400_and_deleting_frees_it(fake_upstream, tmp_path):
    data_dir = tmp_path / "budget"
    data_dir.mkdir()
    budget = 130_000  # room for one upload; the second's content-length is over what is left + slack
    options = {
        "EXECBRIDGE_MAX_FILE_BYTES_PER_OWNER": str(budget),
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0",
        "EXECBRIDGE_SANDBOX__UID_BASE": "250000",
    }
    chunk = b"x" * 120_000
    with serve(fake_upstream, data_dir, **options) as running:
        alice, bob = client(running), client(running, OTHER_KEY)
        first = alice.beta.files.upload(file=("one.bin", chunk, "application/octet-stream"))
        with pytest.raises(anthropic.BadRequestError) as refused:  # declared content-length: before reading
            alice.files.upload(file=("two.bin", chunk, "application/octet-stream"))
        error = refused.value.body["error"]
        assert error["type"] == "invalid_request_error" and "full" in error["message"]
        assert "DELETE /v1/files" in error["message"]

        # No content-length: refused while the body streams in, nothing left behind.
        boundary = "b0undary"

        def body():
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="two.bin"\r\n\r\n'.encode()
            for _ in range(4):
                yield b"y" * 30_000
            yield f"\r\n--{boundary}--\r\n".encode()

        response = httpx.post(
            f"{running.url}/v1/files",
            content=body(),
            headers={
                "x-api-key": CLIENT_KEY,
                "anthropic-version": "2023-06-01",
                "content-type": f"multipart/form-data; boundary={boundary}",
            },
        )
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        assert not list((data_dir / "files").glob(".tmp-*"))

        # Over the per-file limit stays a 413, whatever the budget.
        with pytest.raises(anthropic.APIStatusError) as too_large:
            alice.files.upload(file=("big.bin", b"z" * (MAX_FILE_BYTES + 1), "application/octet-stream"))
        assert too_large.value.status_code == 413

        theirs = bob.files.upload(file=("two.bin", chunk, "application/octet-stream"))  # bob is unaffected
        alice.files.delete(first.id)
        again = alice.files.upload(file=("two.bin", chunk, "application/octet-stream"))
        assert again.size_bytes == len(chunk) and bob.files.retrieve_metadata(theirs.id) == theirs


def test_expires_in_seconds_sets_expires_at_and_is_checked(gateway: Gateway, fake):
    sdk = client(gateway)
    beta = sdk.beta.files.upload(file=("soon.csv", SALES, "text/csv"), expires_in_seconds=3600)
    ga = sdk.files.upload(file=("later.csv", SALES, "text/csv"), expires_in_seconds=7_776_000)
    assert beta.expires_at is not None and ga.expires_at is not None
    assert (beta.expires_at - beta.created_at).total_seconds() == 3600
    assert (ga.expires_at - ga.created_at).total_seconds() == 7_776_000
    assert sdk.files.retrieve_metadata(beta.id).expires_at == beta.expires_at
    assert sdk.files.upload(file=("never.csv", SALES, "text/csv")).expires_at is None
    for bad in (3599, 7_776_001, 0):
        with pytest.raises(anthropic.BadRequestError) as refused:
            sdk.files.upload(file=("bad.csv", SALES, "text/csv"), expires_in_seconds=bad)
        assert "expires_in_seconds" in refused.value.body["error"]["message"]
    response = httpx.post(
        f"{gateway.url}/v1/files",
        headers={"x-api-key": CLIENT_KEY},
        data={"expires_in_seconds": "soon"},
        files={"file": ("bad.csv", SALES, "text/csv")},
    )
    assert response.status_code == 400 and "expires_in_seconds" in response.json()["error"]["message"]


def test_an_expired_file_is_gone(gateway: Gateway, fake):
    sdk = client(gateway)
    doomed = sdk.beta.files.upload(file=("doomed.csv", SALES, "text/csv"), expires_in_seconds=3600)
    # Expiry without waiting an hour: move the stored expiry into the past (another process may write
    # the WAL database; the gateway's next read sees it).
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "execbridge.sqlite3")) as db:
        db.execute("UPDATE files SET expires_us = 1 WHERE id = ?", (doomed.id,))
        db.commit()
    for attempt in (sdk.beta.files.retrieve_metadata, sdk.beta.files.download, sdk.beta.files.delete):
        with pytest.raises(anthropic.NotFoundError):
            attempt(doomed.id)
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="m", max_tokens=10, tools=BASH_TOOL, messages=upload_message(doomed.id))
    assert doomed.id in refused.value.body["error"]["message"] and fake.chat_requests == []
    assert doomed.id not in {f.id for f in sdk.beta.files.list()}  # a listing also sweeps it
    assert not (gateway.data_dir / "files" / doomed.id).exists()
