"""Liveness and readiness (SPEC §4.3)."""

from __future__ import annotations

from typing import Any

from relay.app import create_app


def test_healthz_needs_no_dependency(make_settings: Any) -> None:
    down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    assert down.get("/healthz").status_code == 200


def test_readyz_follows_redis(client: Any, make_settings: Any) -> None:
    assert client.get("/readyz").status_code == 200
    down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    response = down.get("/readyz")
    assert response.status_code == 503 and response.json["redis"] == "unreachable"


def test_every_response_carries_a_request_id(client: Any) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "abc"}).headers["X-Request-Id"] == "abc"
    assert len(client.get("/healthz").headers["X-Request-Id"]) == 32


def test_unknown_paths_are_json_404(client: Any) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.json["error"]
