"""What an operator reads: every line of the web and the worker is one JSON object, with its ids, and
no body or full address at INFO."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import BIN, Stack, spawn, stop
from tests.helpers import basic_auth, free_port, mime, wait_until

pytestmark = pytest.mark.e2e


def test_a_full_flow_logs_one_json_object_per_line_with_ids_and_no_secrets(stack: Stack, tmp_path: Path) -> None:
    stack.sandbox.call("POST", "/_sandbox/reset").raise_for_status()
    stack.sandbox.seed("P1", agent="pat")
    stack.sandbox.fault(status=503, count=1)
    port = free_port()
    env = {**stack.env, "PORT": str(port), "LOG_LEVEL": "INFO", "RELAY_WORKER_PORT": str(free_port())}
    web = spawn([str(BIN / "gunicorn"), "wsgi:app"], env, tmp_path / "web.log")
    worker = spawn([sys.executable, "-m", "relay", "worker"], env, tmp_path / "worker.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), timeout=30)
        bearer = {"Authorization": f"Bearer {env['RELAY_API_TOKEN']}"}
        prospect = {"emails": ["renter@example.com"]}
        requests.put(f"{url}/v1/prospects/P1", json=prospect, headers=bearer, timeout=10).raise_for_status()
        headers = {**basic_auth(), "Content-Type": "message/rfc822", "X-Request-ID": "req-77"}
        answer = requests.post(f"{url}/webhooks/mime", data=mime(body="secret tour code 4711"), headers=headers,
                               timeout=10)  # fmt: skip
        assert answer.headers["X-Request-ID"] == "req-77"
        delivery_id = answer.json()["deliveries"][0]["id"]
        wait_until(lambda: len(stack.sandbox.events("P1")) == 1, timeout=30)
    finally:
        stop(worker)
        stop(web)
    web_lines = [json.loads(line) for line in (tmp_path / "web.log").read_text().splitlines()]
    worker_lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines()]
    request_line = next(line for line in web_lines if line.get("path") == "/webhooks/mime")
    assert request_line["request_id"] == "req-77" and request_line["status"] == 200 and "duration_ms" in request_line
    attempts = [line for line in worker_lines if line["message"] == "Knock answered"]
    assert [(a["delivery_id"], a["knock_status"]) for a in attempts] == [(delivery_id, 503), (delivery_id, 200)]
    assert all(isinstance(a["knock_ms"], float) for a in attempts)
    sandbox_lines = [json.loads(line) for line in (stack.logs / "sandbox.log").read_text().splitlines()]
    assert sandbox_lines and not any("\x1b" in line["message"] for line in sandbox_lines)
    for line in web_lines + worker_lines:
        text = json.dumps(line)
        for leaked in ("renter@example.com", "leasing@acme-living.com", "4711", "s3cret", "test-token", "sandbox-key"):
            assert leaked not in text, line


def _up(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


def test_access_lines_carry_no_query_string_or_referer(stack: Stack, tmp_path: Path) -> None:
    """gunicorn writes an access line per request; queries (and a Referer's) carry addresses."""
    port = free_port()
    env = {**stack.env, "PORT": str(port), "LOG_LEVEL": "INFO"}
    web = spawn([str(BIN / "gunicorn"), "wsgi:app"], env, tmp_path / "web.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), timeout=30)
        headers = {"Authorization": f"Bearer {env['RELAY_API_TOKEN']}",
                   "Referer": f"{url}/console/deliveries?address=renter@example.com"}  # fmt: skip
        paths = ("/v1/prospects?email=renter@example.com",
                 "/v1/deliveries?address=renter%40example.com&subject=tour",
                 "/console/deliveries?address=renter@example.com")  # fmt: skip
        for path in paths:
            requests.get(url + path, headers=headers, timeout=10, allow_redirects=False)
    finally:
        stop(web)
    lines = [json.loads(line) for line in (tmp_path / "web.log").read_text().splitlines()]
    access = [line["message"] for line in lines if '"GET /' in line.get("message", "")]
    assert any('"GET /v1/prospects HTTP/1.1" 200' in line for line in access), access
    assert any('"GET /console/deliveries HTTP/1.1" 302' in line for line in access), access
    for line in lines:
        text = json.dumps(line)
        assert "renter" not in text and "subject=" not in text, line
