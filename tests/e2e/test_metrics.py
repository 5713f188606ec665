"""/metrics of the web tier (two gunicorn processes, multiprocess mode) and of the worker, after real traffic."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Stack, spawn, stop
from tests.helpers import basic_auth, free_port, mime, wait_until

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_add_up_across_web_processes_and_the_worker_counts_its_deliveries(stack: Stack) -> None:
    stack.sandbox.call("POST", "/_sandbox/reset").raise_for_status()
    stack.sandbox.seed("P1", agent="pat")
    assert stack.api("PUT", "/v1/prospects/P1", json={"emails": ["renter@example.com"]}).ok
    before = scrape(f"{stack.url}/metrics")
    headers = {**basic_auth(), "Content-Type": "message/rfc822"}
    for n in range(12):  # a new connection each: gunicorn's two processes both take some
        response = requests.post(f"{stack.url}/webhooks/mime", data=mime(message_id=f"<m{n}@x>"), headers=headers,
                                 timeout=10)  # fmt: skip
        assert response.json()["status"] == "queued"
    for _ in range(3):
        assert requests.post(f"{stack.url}/webhooks/mime", data=b"x", timeout=10).status_code == 401
    for _ in range(2):  # refused before the view runs, still counted for its provider
        oversized = mime(body="x" * int(stack.env["RELAY_MAX_REQUEST_BYTES"]))
        assert (
            requests.post(f"{stack.url}/webhooks/mime", data=oversized, headers=headers, timeout=10).status_code == 413
        )
    after = scrape(f"{stack.url}/metrics")
    assert value(after, "relay_webhooks_total", provider="mime", outcome="queued") - value(
        before, "relay_webhooks_total", provider="mime", outcome="queued") == 12  # fmt: skip
    assert value(after, "relay_webhooks_total", provider="mime", outcome="unauthorized") - value(
        before, "relay_webhooks_total", provider="mime", outcome="unauthorized") == 3  # fmt: skip
    assert value(after, "relay_webhooks_total", provider="mime", outcome="too_large") - value(
        before, "relay_webhooks_total", provider="mime", outcome="too_large") == 2  # fmt: skip
    assert value(after, "relay_queue_depth") == 12

    port = free_port()
    worker = spawn([sys.executable, "-m", "relay", "worker"], {**stack.env, "RELAY_WORKER_PORT": str(port)},
                   stack.logs / "metrics-worker.log")  # fmt: skip
    try:
        wait_until(lambda: len(stack.sandbox.events("P1")) == 12, timeout=60, interval=0.2)
        worker_metrics = wait_until(
            lambda: (
                (m := scrape(f"http://127.0.0.1:{port}/metrics"))
                and value(m, "relay_deliveries_total", outcome="delivered") == 12
                and m
            ),
            timeout=20,
        )
    finally:
        stop(worker)
    assert value(worker_metrics, "relay_knock_responses_total", status_class="2xx") == 12
    assert value(worker_metrics, "relay_delivery_latency_seconds_count") == 12
    assert value(worker_metrics, "relay_queue_depth") == 0
    assert value(scrape(f"{stack.url}/metrics"), "relay_deliveries_dead") == 0
