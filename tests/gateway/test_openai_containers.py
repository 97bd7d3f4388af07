"""OpenAI's Files and Containers APIs end to end: the official ``openai`` SDK → ``execbridge serve`` →
the store and a real sandbox. Every answer is validated against the SDK's own typed models, with no
field the model does not declare; another key sees nothing; errors arrive as the SDK's exception
classes; Anthropic clients on the shared ``/v1/files`` paths see only their own files.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import pytest
from openai.types import ContainerCreateResponse, ContainerListResponse, ContainerRetrieveResponse, FileObject
from openai.types.containers import FileCreateResponse, FileListResponse, FileRetrieveResponse
from pydantic import BaseModel

from .conftest import CLIENT_KEY, OTHER_KEY, Gateway, sdk_client

CSV = b"x,y\n1,2\n3,4\n"


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0) as c:
        yield c


@pytest.fixture
def other(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=OTHER_KEY, max_retries=0) as c:
        yield c


def strict(model: type[BaseModel], parsed: BaseModel) -> dict[str, Any]:
    """The raw JSON behind ``parsed``, validated strictly by the SDK's model, with nothing it does not declare."""
    raw = parsed.model_dump(mode="json", exclude_unset=True)
    assert set(raw) <= set(model.model_fields), set(raw) - set(model.model_fields)
    assert not parsed.model_extra
    model.model_validate(raw, strict=True)
    return raw


def test_a_containers_session(client: openai.OpenAI):
    created = client.containers.create(
        name="analysis", memory_limit="4g", expires_after={"anchor": "last_active_at", "minutes": 20}
    )
    raw = strict(ContainerCreateResponse, created)
    assert raw["id"].startswith("cntr_") and len(raw["id"]) == 53
    assert (raw["object"], raw["status"], raw["name"], raw["memory_limit"]) == (
        "container",
        "running",
        "analysis",
        "4g",
    )
    assert raw["expires_after"] == {"anchor": "last_active_at", "minutes": 20}
    assert raw["network_policy"] == {"type": "disabled"}
    assert abs(raw["created_at"] - datetime.now(UTC).timestamp()) < 600 and raw["last_active_at"] >= raw["created_at"]
    cid = created.id

    # Upload as multipart, and from a Files API file by id.
    uploaded = client.containers.files.create(cid, file=("data.csv", CSV, "text/csv"))
    raw = strict(FileCreateResponse, uploaded)
    assert raw["id"].startswith("cfile_") and raw["object"] == "container.file"
    assert raw["path"].startswith("/mnt/data/") and raw["path"].endswith("-data.csv")
    assert len(raw["path"].removeprefix("/mnt/data/").split("-")[0]) == 32
    assert (raw["bytes"], raw["source"], raw["container_id"]) == (len(CSV), "user", cid)
    stored = client.files.create(file=("notes.txt", b"hello\n"), purpose="user_data")
    by_id = client.containers.files.create(cid, file_id=stored.id)
    assert by_id.path == f"/mnt/data/{stored.id}-notes.txt" and by_id.bytes == 6 and by_id.source == "user"

    # List (both orders, paged by the SDK), retrieve, download.
    listed = list(client.containers.files.list(cid, order="asc", limit=1))
    assert [f.id for f in listed] == [uploaded.id, by_id.id]
    for f in listed:
        strict(FileListResponse, f)
    assert [f.id for f in client.containers.files.list(cid)] == [by_id.id, uploaded.id]  # newest first by default
    got = client.containers.files.retrieve(uploaded.id, container_id=cid)
    assert strict(FileRetrieveResponse, got) == strict(FileCreateResponse, uploaded)
    content = client.containers.files.content.retrieve(uploaded.id, container_id=cid)
    assert content.read() == CSV
    assert 'filename="' in content.response.headers["content-disposition"]

    # Delete a file, then the container.
    client.containers.files.delete(uploaded.id, container_id=cid)
    assert [f.id for f in client.containers.files.list(cid)] == [by_id.id]
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(uploaded.id, container_id=cid)
    page = client.containers.list()
    assert cid in [c.id for c in page]
    for c in page:
        strict(ContainerListResponse, c)
    assert strict(ContainerRetrieveResponse, client.containers.retrieve(cid))["status"] == "running"
    client.containers.delete(cid)
    with pytest.raises(openai.NotFoundError) as missing:
        client.containers.retrieve(cid)
    assert missing.value.type == "invalid_request_error"
    assert cid not in [c.id for c in client.containers.list()]


def test_an_idle_container_expires(client: openai.OpenAI, gateway: Gateway):
    created = client.containers.create(name="short", expires_after={"anchor": "last_active_at", "minutes": 1})
    client.containers.files.create(created.id, file=("a.txt", b"a"))
    # Its last activity, moved back past its expiry (the store is the gateway's clock for this).
    before = datetime.now(UTC) - timedelta(minutes=2)
    micros = (before - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    with sqlite3.connect(gateway.data_dir / "execbridge.sqlite3") as db:
        db.execute("PRAGMA busy_timeout=5000")
        changed = db.execute("UPDATE openai_containers SET active_us = ? WHERE id = ?", (micros, created.id)).rowcount
    assert changed == 1
    expired = client.containers.retrieve(created.id)
    assert expired.status == "expired" and expired.last_active_at == int(before.timestamp())
    assert [c.status for c in client.containers.list(name="short") if c.id == created.id] == ["expired"]
    for use in (
        lambda: client.containers.files.list(created.id),
        lambda: client.containers.files.create(created.id, file=("b.txt", b"b")),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            use()
        assert refused.value.code == "container_expired"
    client.containers.delete(created.id)  # metadata can still be deleted


def test_another_key_sees_nothing(client: openai.OpenAI, other: openai.OpenAI):
    mine = client.containers.create(name="private")
    cfile = client.containers.files.create(mine.id, file=("secret.txt", b"s3cret"))
    stored = client.files.create(file=("secret.txt", b"s3cret"), purpose="assistants")
    assert mine.id not in [c.id for c in other.containers.list()]
    assert stored.id not in [f.id for f in other.files.list()]
    attempts = [
        lambda: other.containers.retrieve(mine.id),
        lambda: other.containers.delete(mine.id),
        lambda: other.containers.files.list(mine.id),
        lambda: other.containers.files.retrieve(cfile.id, container_id=mine.id),
        lambda: other.containers.files.content.retrieve(cfile.id, container_id=mine.id),
        lambda: other.containers.files.create(mine.id, file=("x.txt", b"x")),
        lambda: other.files.retrieve(stored.id),
        lambda: other.files.content(stored.id),
        lambda: other.files.delete(stored.id),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            attempt()
    # Nor may it place a stranger's file into a container of its own.
    theirs = other.containers.create(name="theirs")
    with pytest.raises(openai.NotFoundError):
        other.containers.files.create(theirs.id, file_id=stored.id)
    assert client.containers.files.content.retrieve(cfile.id, container_id=mine.id).read() == b"s3cret"


def test_errors_are_the_sdks_exceptions(client: openai.OpenAI):
    cases: list[tuple[Any, type[openai.APIStatusError], str | None]] = [
        (lambda: client.containers.create(name="x", memory_limit="2g"), openai.BadRequestError, "memory_limit"),
        (lambda: client.post("/containers", body={}, cast_to=object), openai.BadRequestError, "name"),
        (
            lambda: client.containers.create(name="x", expires_after={"anchor": "last_active_at", "minutes": 0}),
            openai.BadRequestError,
            "expires_after.minutes",
        ),
        (
            lambda: client.containers.create(name="x", network_policy={"type": "allowlist", "allowed_domains": ["a"]}),
            openai.BadRequestError,
            "network_policy",
        ),
        (lambda: client.containers.create(name="x", file_ids=["file-nope"]), openai.NotFoundError, "file_ids"),
        (lambda: client.containers.retrieve("cntr_" + "0" * 48), openai.NotFoundError, None),
        (lambda: client.containers.retrieve("container_011Cabc"), openai.NotFoundError, None),
        (lambda: client.containers.list(limit=101), openai.BadRequestError, "limit"),
        (lambda: client.files.create(file=("a.txt", b"a"), purpose="nonsense"), openai.BadRequestError, "purpose"),
        (lambda: client.files.retrieve("file-nope"), openai.NotFoundError, None),
    ]
    for call, error, param in cases:
        with pytest.raises(error) as raised:
            call()
        body = raised.value.body
        assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
        assert raised.value.param == param, (body, param)
        assert raised.value.request_id, "x-request-id"


def test_files_round_trip_and_each_api_keeps_its_own(client: openai.OpenAI, gateway: Gateway):
    first = client.files.create(file=("a.csv", CSV), purpose="user_data")
    second = client.files.create(
        file=("b.json", b"{}"), purpose="assistants", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    raw = strict(FileObject, first)
    assert raw["id"].startswith("file-") and (raw["object"], raw["status"], raw["purpose"]) == (
        "file",
        "processed",
        "user_data",
    )
    assert (raw["bytes"], raw["filename"], raw["expires_at"]) == (len(CSV), "a.csv", None)
    assert second.expires_at == second.created_at + 3600
    assert strict(FileObject, client.files.retrieve(first.id)) == raw
    ids = [f.id for f in client.files.list()]
    assert ids.index(second.id) < ids.index(first.id)  # newest first
    assert [f.id for f in client.files.list(purpose="user_data") if f.id in (first.id, second.id)] == [first.id]
    ascending = [f.id for f in client.files.list(order="asc", limit=1) if f.id in (first.id, second.id)]
    assert ascending == [first.id, second.id]
    assert client.files.content(first.id).read() == CSV
    deleted = client.files.delete(first.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (first.id, True, "file")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(first.id)

    # Anthropic's SDK on the same paths: its own shapes and files only, and OpenAI's never.
    anthropic_client = sdk_client(gateway.url, CLIENT_KEY)
    theirs = anthropic_client.beta.files.upload(file=("c.txt", b"c", "text/plain"))
    assert theirs.id.startswith("file_") and theirs.type == "file"
    anthropic_ids = [f.id for f in anthropic_client.beta.files.list()]
    assert theirs.id in anthropic_ids and second.id not in anthropic_ids
    assert theirs.id not in [f.id for f in client.files.list()]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(theirs.id)


def test_models_in_openai_shape(client: openai.OpenAI):
    models = list(client.models.list())
    assert [m.id for m in models] == ["fake-model"]
    assert (models[0].object, models[0].owned_by) == ("model", "execbridge")
    assert client.models.retrieve("fake-model").id == "fake-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
