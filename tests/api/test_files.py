"""The Files API routes in process: shapes the SDK parses, multipart edge cases, cursors, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial

import pytest
from anthropic.types import FileMetadata
from anthropic.types.beta import BetaFileMetadata
from starlette.testclient import TestClient

from execbridge.api.app import create_app
from execbridge.api.auth import owner_of
from execbridge.api.files import render_file
from execbridge.config import Settings
from execbridge.files import FileService
from execbridge.store.base import FileRecord
from execbridge.store.memory import MemoryStore
from execbridge.wiring import Services

LIMIT = 1000
KEY = {"x-api-key": "key-alice", "anthropic-version": "2023-06-01"}  # these are Anthropic Files API requests


@pytest.fixture
def files(tmp_path) -> FileService:
    service = FileService(MemoryStore().files, tmp_path / "files", max_bytes=LIMIT)
    service.prepare()
    return service


@pytest.fixture
def http(files: FileService, tmp_path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path)

    @asynccontextmanager
    async def services() -> AsyncIterator[Services]:
        # Only the Files API is exercised here; the messages route's collaborators are not needed.
        yield Services(settings=settings, engine=None, containers=None, files=files)  # type: ignore[arg-type]

    with TestClient(create_app(services)) as client:
        yield client


def upload(http: TestClient, name: str = "a.csv", data: bytes = b"x,y\n", content_type: str = "text/csv", **kw):
    return http.post("/v1/files", files={"file": (name, data, content_type)}, headers=KEY, **kw)


def test_file_object_parses_in_both_sdk_namespaces():
    record = FileRecord("file_1", "o", "a.csv", "text/csv", 3, datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), False)
    body = render_file(record)
    assert body == {
        "id": "file_1",
        "type": "file",
        "filename": "a.csv",
        "mime_type": "text/csv",
        "size_bytes": 3,
        "created_at": "2026-01-02T03:04:05.000006Z",
        "downloadable": False,
        "expires_at": None,
    }
    for cls in (FileMetadata, BetaFileMetadata):
        parsed = cls.model_validate(body)
        assert parsed.created_at == record.created_at and parsed.downloadable is False


def test_upload_keeps_name_and_type_and_ignores_beta_markers(http):
    response = http.post(
        "/v1/files?beta=true",
        files={"file": ("dir/q%22uote.csv", b"1,2\n", "text/csv")},
        data={"expires_in_seconds": "3600"},
        headers={**KEY, "anthropic-beta": "files-api-2025-04-14"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["filename"], body["mime_type"], body["size_bytes"]) == ('q"uote.csv', "text/csv", 4)
    assert response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content": b"{}", "headers": {**KEY, "content-type": "application/json"}}, "multipart/form-data"),
        ({"data": {"purpose": "x"}, "files": {"other": ("a", b"1")}, "headers": KEY}, "no `file` part"),
        (
            {"content": b"--b\r\nnot a part", "headers": {**KEY, "content-type": "multipart/form-data; boundary=b"}},
            "not a valid multipart",
        ),
        (
            {"files": [("file", ("a", b"1")), ("file", ("b", b"2"))], "headers": KEY},
            "more than one `file` part",
        ),
    ],
)
def test_malformed_uploads_are_400s(http, files, kwargs, message):
    response = http.post("/v1/files", **kwargs)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert message in response.json()["error"]["message"]
    assert list(files.root.iterdir()) == []


def test_declared_oversize_is_refused_up_front(http):
    response = upload(http, data=b"z" * (LIMIT + 1))
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"
    headers = {**KEY, "content-type": "multipart/form-data; boundary=b", "content-length": str(10**9)}
    response = http.post("/v1/files", content=b"", headers=headers)
    assert response.status_code == 413


def test_a_key_is_required(http):
    response = http.get("/v1/files", headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_download_headers(http, files):
    create = partial(files.create, owner_of("key-alice"), 'we"ird\nname.html', b"<b>x</b>", downloadable=True)
    record = http.portal.call(create)  # the app's own event loop
    response = http.get(f"/v1/files/{record.id}/content", headers=KEY)
    assert response.status_code == 200 and response.content == b"<b>x</b>"
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment;") and "\n" not in disposition and '"ird' not in disposition


def test_list_parameters_are_checked(http):
    for query in ("limit=0", "limit=1001", "limit=ten", "page=nope", "page=page_!!", "after_id=file_x"):
        response = http.get(f"/v1/files?{query}", headers=KEY)
        assert response.status_code == 400, query
    both = http.get("/v1/files?ids[]=file_a&page=page_x", headers=KEY)
    assert both.status_code == 400 and "ids" in both.json()["error"]["message"]
    assert http.get("/v1/files?after_id=a&before_id=b", headers=KEY).status_code == 400
    many = "&".join(f"ids[]=file_{i}" for i in range(101))
    assert http.get(f"/v1/files?{many}", headers=KEY).status_code == 400


def test_page_cursor_walks_the_whole_list_and_before_id_has_no_forward_cursor(http):
    made = [upload(http, name=f"{i}.txt").json()["id"] for i in range(5)]
    seen, page = [], None
    while True:
        body = http.get("/v1/files", params={"limit": 2, **({"page": page} if page else {})}, headers=KEY).json()
        seen += [f["id"] for f in body["data"]]
        page = body["next_page"]
        if page is None:
            assert body["has_more"] is False
            break
    assert seen == made[::-1]
    back = http.get("/v1/files", params={"before_id": made[0], "limit": 2}, headers=KEY).json()
    assert [f["id"] for f in back["data"]] == [made[2], made[1]] and back["next_page"] is None


def test_unknown_routes_and_methods_use_the_error_envelope(http):
    assert http.put("/v1/files", headers=KEY).status_code == 400  # 405 is reported as invalid_request_error
    deleted = http.delete("/v1/files/file_nope", headers=KEY)
    assert deleted.status_code == 404 and deleted.json()["error"]["type"] == "not_found_error"
