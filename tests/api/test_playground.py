"""``GET /playground`` in-process: the page and its assets without a key, under a strict
Content-Security-Policy; only the known assets; whether the page asks for a key; off means 404.

The page's behaviour in a real browser is tested in ``tests/gateway/test_playground_browser.py``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from execbridge.api import playground
from execbridge.api.app import create_app
from execbridge.config import Settings
from execbridge.keys import GatewayKeys, KeyGate
from execbridge.store.memory import MemoryKeyStore
from execbridge.wiring import Services

STATIC = resources.files("execbridge.api") / "playground_static"


def client(settings: Settings, gate: KeyGate | None = None) -> TestClient:
    services: Any = Services(settings=settings, engine=None, containers=None, files=None, key_gate=gate)  # type: ignore[arg-type]

    @asynccontextmanager
    async def factory() -> AsyncIterator[Services]:
        yield services

    return TestClient(create_app(factory))


@pytest.fixture
def http() -> Iterator[TestClient]:
    with client(Settings()) as running:
        yield running


def csp(response: Any) -> dict[str, str]:
    directives = (d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


def test_the_page_needs_no_key_and_forbids_inline_script_and_style(http: TestClient) -> None:
    response = http.get("/playground")  # no x-api-key
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = csp(response)
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no CDN
    assert policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' blob:"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "request-id" in response.headers


def test_the_shipped_files_hold_no_inline_script_style_or_remote_url() -> None:
    """What the CSP would block must not be in the page to begin with (it would silently not work)."""
    page = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S)
    assert scripts and all(body.strip() == "" for body in scripts)
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    for item in STATIC.iterdir():
        text = item.read_text()
        assert not re.search(r"https?://", text), f"{item.name} refers to another origin"
        # Untrusted text only ever becomes textContent: no HTML parsing from strings, no code from strings.
        assert not re.search(r"\.(inner|outer)HTML\b|insertAdjacentHTML|document\.write|\beval\(|new Function", text)


def test_every_asset_is_served_with_its_type_and_the_policy(http: TestClient) -> None:
    names = {item.name for item in STATIC.iterdir()} - {"index.html"}
    assert names == set(playground._ASSETS)  # nothing shipped unserved, nothing served unshipped
    for name in names:
        response = http.get(f"/playground/static/{name}")
        assert response.status_code == 200, name
        expected = "text/css" if name.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(expected)
        assert response.headers["content-security-policy"] == playground.CONTENT_SECURITY_POLICY
        assert response.content == (STATIC / name).read_bytes()


@pytest.mark.parametrize("path", ["/playground/static/index.html", "/playground/static/..%2Fplayground.py"])
def test_unknown_assets_are_404_in_the_error_envelope(http: TestClient, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_off_every_playground_route_is_a_404() -> None:
    with client(Settings(playground=False)) as http:
        for path in ("/playground", "/playground/session", "/playground/static/main.js"):
            response = http.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["type"] == "not_found_error"


def test_pass_through_the_page_asks_for_the_upstream_key(http: TestClient) -> None:
    response = http.get("/playground/session")
    assert response.json() == {"key_required": True}
    assert response.headers["cache-control"] == "no-store"


async def test_an_open_loopback_gateway_needs_no_key_until_its_first_key_exists() -> None:
    keys = GatewayKeys(MemoryKeyStore())
    settings = Settings(upstream_api_key=SecretStr("sk-upstream"))
    with client(settings, KeyGate(keys, open_without_keys=True)) as http:
        assert http.get("/playground/session").json() == {"key_required": False}
        await keys.create("first")
        assert http.get("/playground/session").json() == {"key_required": True}
        await keys.revoke(next(iter(await keys.list())).id)
        assert http.get("/playground/session").json() == {"key_required": True}  # revoking does not reopen


def test_a_gateway_with_keys_off_loopback_always_asks() -> None:
    keys = GatewayKeys(MemoryKeyStore())
    with client(Settings(upstream_api_key=SecretStr("k")), KeyGate(keys, open_without_keys=False)) as http:
        assert http.get("/playground/session").json() == {"key_required": True}
