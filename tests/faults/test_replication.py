"""An email is acknowledged only once RELAY_REDIS_MIN_REPLICAS replicas hold it: a real primary and
replica, the replica paused (SIGSTOP) so that Redis WAIT times out."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

from relay.app import create_app
from relay.services import Services
from relay.worker import build_forwarder
from tests.helpers import API_TOKEN, mime, post_mime, wait_until


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_TOKEN}"}


pytestmark = pytest.mark.fault


def replica_of(own_redis: Callable[..., str], primary: str) -> tuple[str, int]:
    """A replica of `primary`, once its link is up; its URL and process id."""
    port = primary.rsplit(":", 1)[1].split("/")[0]
    url = own_redis("--replicaof", "127.0.0.1", port)
    client = redis.Redis.from_url(url)
    wait_until(lambda: client.info("replication").get("master_link_status") == "up", timeout=20)
    return url, int(client.info("server")["process_id"])


def test_an_email_is_acknowledged_only_once_a_replica_holds_it(own_redis: Any, make_settings: Any) -> None:
    primary = own_redis("--appendonly", "yes")
    _, replica_pid = replica_of(own_redis, primary)
    settings = make_settings(REDIS_URL=primary, RELAY_REDIS_MIN_REPLICAS="1", RELAY_REDIS_REPLICA_TIMEOUT_MS="300")
    client = create_app(settings).test_client()

    first = post_mime(client, mime(message_id="<r1@example.com>"))
    assert first.status_code == 200, first.json

    os.kill(replica_pid, signal.SIGSTOP)  # the replica stops acknowledging
    try:
        waiting = post_mime(client, mime(message_id="<r2@example.com>"))
        assert waiting.status_code == 503 and waiting.headers["Retry-After"]
        assert "stored, but on 0 of the 1 Redis replicas required" in waiting.json["error"]
        metrics = client.get("/metrics").text
        assert "relay_replication_timeouts_total 1.0" in metrics
        # A provider's retry of an email stored before is not acknowledged either until a replica
        # confirms everything the primary holds: it could be the one write the replica lacks.
        assert post_mime(client, mime(message_id="<r1@example.com>")).status_code == 503
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    # The provider's retry: the email was stored on the primary, so it is answered as a duplicate
    # once the replica has it, and logged once.
    retried = wait_until(
        lambda: (answer := post_mime(client, mime(message_id="<r2@example.com>"))).status_code == 200 and answer,
        timeout=10,
    )
    assert [d["status"] for d in retried.json["deliveries"]] == ["duplicate"]


def test_readiness_fails_while_fewer_replicas_are_online_than_required(own_redis: Any, make_settings: Any) -> None:
    primary = own_redis("--appendonly", "yes")
    settings = make_settings(REDIS_URL=primary, RELAY_REDIS_MIN_REPLICAS="1")
    client = create_app(settings).test_client()
    alone = client.get("/readyz")
    assert alone.status_code == 503 and alone.json["redis"] == "fewer than 1 replicas online"
    replica_url, _ = replica_of(own_redis, primary)
    # The primary counts the replica online once it has sent its copy (a moment after the link is up).
    ready = wait_until(lambda: (answer := client.get("/readyz").json)["status"] == "ok" and answer, timeout=20)
    assert ready["topology"]["replicas"][0]["state"] == "online"
    assert ready["topology"]["replicas"][0]["address"].endswith(replica_url.rsplit(":", 1)[1].split("/")[0])


def test_without_a_replica_minimum_the_answer_does_not_wait(own_redis: Any, make_settings: Any) -> None:
    primary = own_redis("--appendonly", "yes")
    _, replica_pid = replica_of(own_redis, primary)
    client = create_app(make_settings(REDIS_URL=primary)).test_client()
    os.kill(replica_pid, signal.SIGSTOP)
    try:
        assert post_mime(client, mime(message_id="<r3@example.com>")).status_code == 200
    finally:
        os.kill(replica_pid, signal.SIGCONT)


def test_the_worker_records_an_outcome_only_once_a_replica_holds_it(
    own_redis: Any, make_settings: Any, sandbox: Any
) -> None:
    """The worker's outcome write waits for RELAY_REDIS_MIN_REPLICAS replicas; with the replica
    paused it keeps the delivery (and waits) instead of calling it done, and finishes when the
    replica resumes."""
    primary = own_redis("--appendonly", "yes")
    _, replica_pid = replica_of(own_redis, primary)
    settings = make_settings(REDIS_URL=primary, RELAY_REDIS_MIN_REPLICAS="1", RELAY_REDIS_REPLICA_TIMEOUT_MS="200")
    sandbox.seed("P1", agent="pat")
    client = create_app(settings).test_client()
    known = client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=bearer())
    assert known.status_code in (200, 201), known.json
    (queued,) = post_mime(client, mime(message_id="<w1@example.com>")).json["deliveries"]
    worker = Services(settings, patient=True)
    forwarder = build_forwarder(worker)
    assert worker.store.outcome_replicas == 1
    waits_before = REGISTRY.get_sample_value("relay_outcome_replication_waits_total") or 0.0

    os.kill(replica_pid, signal.SIGSTOP)
    outcome: list[str | None] = []
    forwarding = threading.Thread(target=lambda: outcome.append(forwarder.forward(queued["id"])))
    try:
        forwarding.start()
        wait_until(lambda: len(sandbox.events("P1")) == 1, timeout=10)  # Knock has it
        forwarding.join(timeout=2)
        assert forwarding.is_alive(), "the outcome is not on a replica yet: the worker must still hold it"
        assert (REGISTRY.get_sample_value("relay_outcome_replication_waits_total") or 0.0) > waits_before
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    forwarding.join(timeout=30)
    assert outcome == ["delivered"]
