"""The whole relay as operators run it: gunicorn, worker, sandbox and Redis as separate processes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import BIN, ROOT, Stack, spawn, stop
from tests.helpers import basic_auth, free_port, relay_env, wait_until

pytestmark = pytest.mark.e2e
PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "mime"


def post_raw(stack: Stack, raw: bytes) -> requests.Response:
    headers = {**basic_auth(), "Content-Type": "message/rfc822"}
    return requests.post(f"{stack.url}/webhooks/mime", data=raw, headers=headers, timeout=10)


def test_raw_mime_inbound_and_outbound_reach_knock(e2e: Stack) -> None:
    e2e.sandbox.seed("4WXU6U2J", agent="kim")
    e2e.sandbox.seed("P1", agent="pat")
    e2e.sandbox.seed("P2", agent="pat")
    assert e2e.api("PUT", "/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}).ok
    assert e2e.api("PUT", "/v1/prospects/P2", json={"emails": ["second.renter@example.org"]}).ok
    assert e2e.api("PUT", "/v1/agents/dana", json={"emails": ["dana@acme-living.com"]}).ok

    inbound = post_raw(e2e, (PAYLOADS / "inbound-reply-tag.eml").read_bytes())
    outbound = post_raw(e2e, (PAYLOADS / "outbound-agent.eml").read_bytes())
    assert inbound.status_code == outbound.status_code == 200
    ids = [d["id"] for d in inbound.json()["deliveries"] + outbound.json()["deliveries"]]
    assert len(ids) == 3
    for delivery_id in ids:
        e2e.wait_for_status(delivery_id, "delivered")

    (reply,) = e2e.sandbox.events("4WXU6U2J")
    assert reply["type"] == "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
    assert reply["agent"] == {"username": "kim"}
    assert reply["subject"] == "Réservation pour la visite"
    assert reply["sentTime"] == "2020-03-31T23:22:06.000Z"
    assert reply["body"].startswith("<p>Bonjour, je voudrais réserver une visite.</p>")
    for marker in ("script", "onclick", "javascript:", "cid:"):
        assert marker not in reply["body"]
    assert "pay stub.pdf (78 B)" in reply["body"]

    for prospect_id in ("P1", "P2"):
        (sent,) = e2e.sandbox.events(prospect_id)
        assert sent["type"] == "EMAIL_MESSAGE_TO_PROSPECT_SENT"
        assert sent["agent"] == {"username": "dana"}
        assert sent["subject"] == "Your tour on Friday"
        assert sent["sentTime"] == "2020-04-01T09:00:00.000Z"
        assert sent["body"] == "Hi! Your tour is confirmed for Friday at 10am.<br>See you &lt;then&gt; &amp; bring ID."
    assert e2e.sandbox.prospect("P1")["status"] == "open"

    again = post_raw(e2e, (PAYLOADS / "outbound-agent.eml").read_bytes())
    assert again.json()["status"] == "duplicate"


def test_worker_killed_mid_delivery_loses_nothing(e2e: Stack) -> None:
    e2e.sandbox.seed("P1", agent="pat")
    e2e.api("PUT", "/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"})
    # Knock hangs on the first call, then fails it: the worker is killed while it waits.
    e2e.sandbox.fault(status=503, delay=8)
    raw = (PAYLOADS / "outbound-agent.eml").read_bytes().replace(b"dana@acme-living.com", b"leasing@acme-living.com")
    raw = raw.replace(b"Bcc: second.renter@example.org\r\n", b"")
    delivery_id = post_raw(e2e, raw).json()["deliveries"][0]["id"]
    wait_until(lambda: e2e.sandbox.started(), timeout=20)
    (victim,) = e2e.workers
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    e2e.start_worker()
    done = e2e.wait_for_status(delivery_id, "delivered", timeout=120)
    assert done["communicationId"]
    assert len(e2e.sandbox.events("P1")) == 1


def test_sigterm_finishes_the_delivery_in_flight(e2e: Stack) -> None:
    e2e.sandbox.seed("P1", agent="pat")
    e2e.api("PUT", "/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"})
    e2e.sandbox.fault(status=0, delay=3)  # slow but successful
    raw = b"From: renter@example.com\r\nTo: leasing@acme-living.com\r\nSubject: slow\r\nMessage-ID: <s@x>\r\n\r\nhi"
    delivery_id = post_raw(e2e, raw).json()["deliveries"][0]["id"]
    wait_until(lambda: e2e.sandbox.started(), timeout=20)
    (worker,) = e2e.workers
    assert stop(worker, signal.SIGTERM, timeout=30) == 0
    assert e2e.delivery(delivery_id)["status"] == "delivered"
    assert len(e2e.sandbox.events("P1")) == 1


def test_startup_fails_with_one_line_per_bad_setting(tmp_path: Path) -> None:
    env = relay_env("not-a-url", PORT=str(free_port()), RELAY_DEDUP_TTL_SECONDS="forever")
    env.pop("KNOCK_API_KEY")
    log = tmp_path / "web.log"
    web = spawn([str(BIN / "gunicorn"), "wsgi:app"], {**env, "KNOCK_API_KEY": ""}, log)
    assert web.wait(timeout=30) != 0
    errors = [line for line in log.read_text().splitlines() if line.startswith("configuration error:")]
    assert len(errors) == 3, log.read_text()
    worker = subprocess.run(
        [sys.executable, "-m", "relay", "worker"],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert worker.returncode == 1 and worker.stderr.count("configuration error:") == 3


def test_a_malformed_thread_count_stops_gunicorn_with_one_line(tmp_path: Path) -> None:
    """(A malformed WEB_CONCURRENCY fails inside gunicorn before any relay code runs; `config check` names it.)"""
    env = relay_env("http://127.0.0.1:1", PORT=str(free_port()), RELAY_WEB_THREADS="x")
    log = tmp_path / "web.log"
    web = spawn([str(BIN / "gunicorn"), "wsgi:app"], env, log)
    assert web.wait(timeout=30) != 0
    errors = [line for line in log.read_text().splitlines() if line.startswith("configuration error:")]
    assert errors == ["configuration error: RELAY_WEB_THREADS: must be a whole number, got 'x'"]
    assert "Traceback" not in log.read_text()
