"""Liveness and readiness (SPEC §4.3)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from relay.app import create_app
from relay.logs import JsonFormatter
from tests.helpers import BEARER, basic_auth, mime, wait_for_status


def test_healthz_needs_no_dependency(make_settings: Any) -> None:
    down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    assert down.get("/healthz").status_code == 200


def test_readyz_follows_redis(client: Any, make_settings: Any) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200
    # It names where the data lives: the primary it reached, and that primary's replicas.
    assert ready.json["topology"]["mode"] == "direct"
    port = urlsplit(client.application.extensions["relay"].settings.redis_url).port or 6379
    assert ready.json["topology"]["primary"].endswith(f":{port}")
    assert isinstance(ready.json["topology"]["replicas"], list)
    down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    response = down.get("/readyz")
    assert response.status_code == 503 and response.json["redis"] == "unreachable"


def test_every_response_carries_a_request_id(client: Any) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "abc"}).headers["X-Request-Id"] == "abc"
    assert len(client.get("/healthz").headers["X-Request-Id"]) == 32


def test_unknown_paths_are_json_404(client: Any) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and response.json["error"]


def test_info_logs_carry_no_addresses_bodies_or_secrets(client: Any, sandbox: Any, worker: Any, caplog: Any) -> None:
    sandbox.seed("P1", agent="pat")
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    caplog.set_level(logging.INFO)
    response = client.post(
        "/webhooks/mime", data=mime(body="secret tour code 4711"), content_type="message/rfc822", headers=basic_auth()
    )
    wait_for_status(client, response.json["deliveries"][0]["id"], "delivered")
    client.post("/webhooks/mime", data=b"garbage", content_type="message/rfc822", headers=basic_auth())
    lines = [JsonFormatter().format(record) for record in caplog.records if record.levelno >= logging.INFO]
    assert any("delivered to Knock" in line for line in lines)
    delivery_id = response.json["deliveries"][0]["id"]
    assert any("email accepted" in line and delivery_id in line for line in lines)
    assert any('"request"' in line and '"/webhooks/mime"' in line and '"status": 200' in line for line in lines)
    for line in lines:
        for leaked in ("renter@example.com", "leasing@acme-living.com", "4711", "s3cret", "test-token", "sandbox-key"):
            assert leaked not in line, line


def test_every_answer_says_nosniff_and_production_asks_for_https_only(make_settings: Any) -> None:
    production = create_app(make_settings()).test_client()
    for path in ("/healthz", "/v1/prospects/P1", "/console/sign-in", "/webhooks/mime"):
        response = production.get(path) if path != "/webhooks/mime" else production.post(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000", path
    development = create_app(make_settings(RELAY_ENV="development")).test_client().get("/healthz")
    assert development.headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in development.headers
