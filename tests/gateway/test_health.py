"""``GET /healthz`` and ``GET /readyz`` of a real ``execbridge serve``, asked without a key as a
supervisor or a load balancer asks."""

from __future__ import annotations

import httpx

from .conftest import Gateway


def test_healthz_answers_without_a_key(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["request-id"]


def test_readyz_reports_each_check(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"store", "sandbox", "upstream_credentials"}
    assert all(check["ok"] for check in body["checks"].values()), body


def test_only_get_is_served(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/readyz")
    assert response.status_code == 400  # as every wrong method here: Anthropic's invalid_request_error
    assert response.json()["error"]["type"] == "invalid_request_error"
