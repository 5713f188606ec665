"""Retry and de-duplication rules that no other test pins: each test fails when its rule breaks."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from relay.app import create_app
from relay.services import Services
from relay.store import DUE_KEY
from relay.worker import RetryScheduler
from tests.conftest import Sandbox
from tests.helpers import BEARER, mime, post_mime, wait_for_status, wait_until


def knock_ready(client: Any, sandbox: Sandbox) -> None:
    sandbox.seed("P1")
    assert client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"},
                      headers=BEARER).status_code == 200  # fmt: skip


def seconds_between(first: dict[str, Any], second: dict[str, Any]) -> float:
    """The gap between two calls as the sandbox logged them."""
    moment = [datetime.fromisoformat(call["at"].rstrip("Z")) for call in (first, second)]
    return (moment[1] - moment[0]).total_seconds()


def test_the_safety_net_never_queues_a_retry_before_it_is_due(
    make_settings: Any, start_worker: Any, sandbox: Sandbox
) -> None:
    """Knock said 429, Retry-After: 3600. The stranded-delivery sweep runs every half second here
    (RELAY_REQUEUE_AFTER_SECONDS=1) and must leave the scheduled retry alone: Knock hears nothing."""
    settings = make_settings(RELAY_REQUEUE_AFTER_SECONDS="1")
    client = create_app(settings).test_client()
    start_worker(settings)
    knock_ready(client, sandbox)
    sandbox.fault(status=429, retryAfter="3600")
    (summary,) = post_mime(client, mime()).json["deliveries"]
    wait_for_status(client, summary["id"], "retrying")
    services = Services(settings, patient=True)
    assert services.redis.zscore(DUE_KEY, summary["id"]) > (time.time() + 3500) * 1000
    queued_at = services.redis.hget(services.store.record_key(summary["id"]), "queuedAt")
    time.sleep(1.6)  # past RELAY_REQUEUE_AFTER_SECONDS, and several of the worker's own sweeps
    RetryScheduler(services).requeue_stranded()
    time.sleep(0.5)  # a message queued by a sweep would have reached Knock by now
    assert services.redis.hget(services.store.record_key(summary["id"]), "queuedAt") == queued_at
    assert [call["status"] for call in sandbox.requests()] == [429]
    assert client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json["status"] == "retrying"


def test_a_retry_after_beyond_the_maximum_age_is_still_waited_for(
    make_settings: Any, start_worker: Any, sandbox: Sandbox
) -> None:
    """RELAY_RETRY_MAX_AGE_SECONDS=1, Knock asks for 3 s: the retry comes no sooner than asked; the
    delivery goes dead after it, when Knock refuses again, rather than retrying early."""
    settings = make_settings(RELAY_RETRY_MAX_AGE_SECONDS="1")
    client = create_app(settings).test_client()
    start_worker(settings)
    knock_ready(client, sandbox)
    sandbox.fault(status=429, retryAfter="3", count=2)
    (summary,) = post_mime(client, mime()).json["deliveries"]
    wait_for_status(client, summary["id"], "retrying")
    services = Services(settings, patient=True)
    (attempt,) = services.store.attempts_of(summary["id"])
    assert services.redis.zscore(DUE_KEY, summary["id"]) >= attempt["at"] + 3000
    dead = wait_for_status(client, summary["id"], "dead")
    assert dead["attempts"] == 2 and dead["lastError"] == "sandbox fault"
    first, second = sandbox.requests()
    assert seconds_between(first, second) >= 2.9


def test_the_knock_timeout_setting_is_honoured(make_settings: Any, start_worker: Any, sandbox: Sandbox) -> None:
    """RELAY_KNOCK_TIMEOUT_SECONDS=1 and Knock answering after 3 s: a timeout, retried."""
    settings = make_settings(RELAY_KNOCK_TIMEOUT_SECONDS="1")
    client = create_app(settings).test_client()
    start_worker(settings)
    knock_ready(client, sandbox)
    sandbox.fault(status=0, delay=3, count=1)  # a normal answer, three seconds late
    (summary,) = post_mime(client, mime()).json["deliveries"]
    done = wait_for_status(client, summary["id"], "delivered")
    timeline = Services(settings).store.attempts_of(summary["id"])
    assert done["attempts"] == 2
    assert [(entry["status"], entry["answer"]) for entry in timeline][0] == (None, "timeout after 1s")
    assert timeline[1]["status"] == 200


def test_a_claim_whose_delivery_expired_does_not_make_the_same_email_a_duplicate(make_settings: Any) -> None:
    """Records outlive claims unless RELAY_RECORD_TTL_SECONDS < RELAY_DEDUP_TTL_SECONDS: then the claim
    names a delivery that no longer exists, and the email arriving again is stored and queued."""
    settings = make_settings(RELAY_RECORD_TTL_SECONDS="1", RELAY_DEDUP_TTL_SECONDS="3600")
    client = create_app(settings).test_client()
    assert client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER).status_code == 200
    (first,) = post_mime(client, mime()).json["deliveries"]
    services = Services(settings)
    claim = services.store.claim_key("m1@example.com", "P1")
    assert services.redis.get(claim) == first["id"]
    wait_until(lambda: services.store.get(first["id"]) is None, timeout=10)
    assert services.redis.get(claim) == first["id"]  # the claim outlives its delivery

    again = post_mime(client, mime())
    (second,) = again.json["deliveries"]
    assert (again.json["status"], second["status"], second["prospectId"]) == ("queued", "queued", "P1")
    assert second["id"] != first["id"] and services.redis.get(claim) == second["id"]
    assert services.store.get(second["id"]) is not None and services.queue.waiting() == 2


# Replays and resolves start a new retry window ------------------------------------------------------


def test_replay_of_an_old_dead_delivery_retries_a_transient_error(
    make_settings: Any, sandbox: Sandbox, start_worker: Any
) -> None:
    settings = make_settings(RELAY_RETRY_MAX_AGE_SECONDS="2")
    client = create_app(settings).test_client()
    sandbox.seed("P1", agent="pat")
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    sandbox.fault(status=400, count=1, errorMessage="bad")
    start_worker(settings)
    delivery_id = post_mime(client, mime()).json["deliveries"][0]["id"]
    wait_for_status(client, delivery_id, "dead")
    time.sleep(2.5)  # now older than the maximum age since receipt
    sandbox.fault(status=503, count=1)
    assert client.post(f"/v1/deliveries/{delivery_id}/replay", headers=BEARER).status_code == 202
    shown = wait_for_status(client, delivery_id, "delivered")
    assert shown["attempts"] == 3


def test_resolve_of_an_old_unmatched_delivery_retries_a_transient_error(
    make_settings: Any, sandbox: Sandbox, start_worker: Any
) -> None:
    settings = make_settings(RELAY_RETRY_MAX_AGE_SECONDS="2")
    client = create_app(settings).test_client()
    sandbox.seed("P9", agent="pat")
    start_worker(settings)
    delivery_id = post_mime(client, mime(sender="stranger@example.org")).json["deliveries"][0]["id"]
    time.sleep(2.5)
    sandbox.fault(status=503, count=1)
    response = client.post(f"/v1/deliveries/{delivery_id}/resolve", json={"prospectId": "P9"}, headers=BEARER)
    assert response.status_code == 202
    shown = wait_for_status(client, delivery_id, "delivered")
    assert shown["attempts"] == 2
