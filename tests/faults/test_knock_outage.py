"""A Knock outage of any length loses nothing: Knock cut off (a TCP proxy in front of the sandbox)
for three times RELAY_RETRY_MAX_AGE_SECONDS, with real gunicorn, worker and Redis. The circuit
opens, only probes reach for Knock, no delivery goes dead, and once Knock is back everything
is logged once."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.e2e.conftest import stop
from tests.faults.conftest import RedisServer, TcpProxy, start_fault_stack
from tests.faults.test_load_faults import knock_subjects, seeded
from tests.helpers import mime, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

MAX_AGE = 4


def gauge(web_url: str, name: str) -> float | None:
    for line in requests.get(f"{web_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_knock_down_longer_than_the_max_age_kills_nothing(tmp_path: Path, fault_redis: RedisServer) -> None:
    stack = start_fault_stack(
        tmp_path,
        fault_redis.url,
        RELAY_RETRY_MAX_AGE_SECONDS=str(MAX_AGE),
        RELAY_KNOCK_PROBE_SECONDS="1",
        RELAY_KNOCK_CIRCUIT_FAILURES="3",
        RELAY_KNOCK_TIMEOUT_SECONDS="1",
        RELAY_KNOCK_RATE_LIMIT="50",
    )
    knock = TcpProxy(urlsplit(stack.sandbox.url).port or 0)
    try:
        seeded(stack)
        stack.env["KNOCK_BASE_URL"] = f"http://127.0.0.1:{knock.port}"  # the worker reaches Knock through it
        knock.cut()
        stack.start_worker()
        outage_began = time.monotonic()
        ids = [f"outage-{n}@example.com" for n in range(40)]
        for message_id in ids[:20]:
            assert stack.post(_email(message_id)).status_code == 200
        wait_until(lambda: gauge(stack.web_url, "relay_knock_circuit_open") == 1.0, timeout=30, interval=0.2)
        for message_id in ids[20:]:
            assert stack.post(_email(message_id)).status_code == 200
        # Knock stays away for three times the maximum age.
        while time.monotonic() - outage_began < 3 * MAX_AGE:
            time.sleep(0.5)
        dead = stack.api("GET", "/v1/deliveries", params={"status": "dead"}).json()["deliveries"]
        assert dead == [], f"dead during an outage: {[d['lastError'] for d in dead][:3]}"
        assert knock_subjects(stack) == {}
        knock.mend()

        wait_until(lambda: set(ids) <= set(knock_subjects(stack)), timeout=60, interval=0.5)
        logged = knock_subjects(stack)
        assert all(logged[message_id] == 1 for message_id in ids), logged
        assert stack.api("GET", "/v1/deliveries", params={"status": "dead"}).json()["deliveries"] == []
        wait_until(lambda: gauge(stack.web_url, "relay_knock_circuit_open") == 0.0, timeout=10)
        worker_log = (tmp_path / "worker-0.log").read_text()
        assert "Knock circuit opened" in worker_log and "Knock circuit closed" in worker_log
    finally:
        knock.close()
        for process in [*stack.workers, *stack.processes]:
            if process.poll() is None:
                stop(process, timeout=15)


def _email(message_id: str) -> bytes:
    return mime(message_id=f"<{message_id}>", subject=message_id)
