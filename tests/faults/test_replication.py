"""An email is acknowledged only once RELAY_REDIS_MIN_REPLICAS replicas hold it: a real primary and
replica, the replica paused (SIGSTOP) so that Redis WAIT times out."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis

from relay.app import create_app
from tests.helpers import mime, post_mime, wait_until

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
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    # The provider's retry: the email was stored on the primary, so it is answered as a duplicate
    # once the replica has it, and logged once.
    retried = wait_until(
        lambda: (answer := post_mime(client, mime(message_id="<r2@example.com>"))).status_code == 200 and answer,
        timeout=10,
    )
    assert [d["status"] for d in retried.json["deliveries"]] == ["duplicate"]


def test_without_a_replica_minimum_the_answer_does_not_wait(own_redis: Any, make_settings: Any) -> None:
    primary = own_redis("--appendonly", "yes")
    _, replica_pid = replica_of(own_redis, primary)
    client = create_app(make_settings(REDIS_URL=primary)).test_client()
    os.kill(replica_pid, signal.SIGSTOP)
    try:
        assert post_mime(client, mime(message_id="<r3@example.com>")).status_code == 200
    finally:
        os.kill(replica_pid, signal.SIGCONT)
