"""From webhook to Knock through the real queue and forward actor (SPEC §5, §6)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import dramatiq
import pytest

from relay.app import create_app
from relay.queue import ACTOR_NAME, QUEUE_NAME
from relay.store import DELIVERY_FIELDS, Delivery
from tests.conftest import Sandbox
from tests.helpers import BEARER, authenticated, delivery, mime, post_mime, wait_for_status


def register(client: Any, prospect_id: str, *emails: str, agent: str | None = None) -> None:
    body: dict[str, Any] = {"emails": list(emails)}
    if agent:
        body["agentUsername"] = agent
    assert client.put(f"/v1/prospects/{prospect_id}", json=body, headers=BEARER).status_code == 200


def only_delivery(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.json
    (summary,) = response.json["deliveries"]
    return summary  # type: ignore[no-any-return]


def test_inbound_email_is_logged_with_every_field(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1", agent="pat")
    register(client, "P1", "renter@example.com", agent="pat")
    summary = only_delivery(post_mime(client, mime()))
    assert summary["status"] == "queued" and summary["prospectId"] == "P1"
    done = wait_for_status(client, summary["id"], "delivered")
    (event,) = sandbox.events("P1")
    assert event["type"] == "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
    assert event["agent"] == {"username": "pat"}
    assert event["subject"] == "Is the 2BR still available?"
    assert event["body"] == "Hi, is the two bedroom still available?<br>Thanks"
    assert event["sentTime"] == "2020-03-31T23:22:06.000Z"
    assert done["communicationId"] == event["communicationId"]
    assert done["attempts"] == 1 and done["deliveredAt"] and done["messageId"] == "m1@example.com"


def test_delivered_records_drop_the_body(client: Any, services: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    summary = only_delivery(post_mime(client, mime()))
    assert services.store.payload(summary["id"]) is not None
    wait_for_status(client, summary["id"], "delivered")
    assert services.store.payload(summary["id"]) is None
    assert 0 < services.redis.ttl(services.store.record_key(summary["id"])) <= services.settings.record_ttl_seconds
    # A copy of what Knock received stays readable for a day, then goes.
    sent = services.store.sent_payload(summary["id"])
    assert sent is not None and sent["agent"] == {"username": "pat"} and sent["body"]
    assert 86000 < services.redis.ttl(f"relay:sent:{summary['id']}") <= 86400


def test_no_copy_of_the_sent_body_when_told(make_settings: Any, sandbox: Sandbox, start_worker: Any) -> None:
    settings = make_settings(RELAY_SENT_BODY_TTL_SECONDS="0")
    client = create_app(settings).test_client()
    start_worker(settings)
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    summary = only_delivery(post_mime(client, mime()))
    wait_for_status(client, summary["id"], "delivered")
    assert client.application.extensions["relay"].store.sent_payload(summary["id"]) is None


def test_same_message_twice_is_logged_once(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    first = only_delivery(post_mime(client, mime()))
    second = post_mime(client, mime())
    assert second.json["status"] == "duplicate" and second.json["deliveries"][0]["id"] == first["id"]
    wait_for_status(client, first["id"], "delivered")
    time.sleep(0.5)
    assert len(sandbox.requests()) == 1


def test_message_without_id_twice_is_logged_once(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    first = only_delivery(post_mime(client, mime(message_id=None)))
    second = post_mime(client, mime(message_id=None))
    assert second.json["status"] == "duplicate"
    wait_for_status(client, first["id"], "delivered")
    time.sleep(0.5)
    assert len(sandbox.requests()) == 1


def test_outbound_fans_out_one_delivery_per_prospect(client: Any, sandbox: Sandbox, worker: Any) -> None:
    for pid, address in (("P1", "renter@example.com"), ("P2", "roommate@example.com")):
        sandbox.seed(pid)
        register(client, pid, address)
    assert client.put("/v1/agents/dana", json={"emails": ["dana@acme-living.com"]}, headers=BEARER).status_code == 200
    raw = mime(
        sender="Dana <dana@acme-living.com>",
        to="renter@example.com, roommate@example.com",
        message_id="<out@acme>",
        extra_headers=authenticated(),
    )
    response = post_mime(client, raw)
    assert [d["prospectId"] for d in response.json["deliveries"]] == ["P1", "P2"]
    for summary in response.json["deliveries"]:
        wait_for_status(client, summary["id"], "delivered")
    for pid in ("P1", "P2"):
        (event,) = sandbox.events(pid)
        assert (event["type"], event["agent"]["username"]) == ("EMAIL_MESSAGE_TO_PROSPECT_SENT", "dana")
    assert sandbox.prospect("P1")["status"] == "open"


def test_automated_outbound_is_logged_as_automated(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1", agent="pat")
    register(client, "P1", "renter@example.com", agent="pat")
    automated = mime(sender="noreply@acme-living.com", to="renter@example.com", extra_headers=authenticated())
    summary = only_delivery(post_mime(client, automated))
    wait_for_status(client, summary["id"], "delivered")
    assert sandbox.events("P1")[0]["type"] == "EMAIL_AUTOMATED_MESSAGE_SENT"


def test_auto_reply_is_recorded_as_ignored_and_not_sent(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    summary = only_delivery(post_mime(client, mime(extra_headers="Auto-Submitted: auto-replied")))
    assert summary["status"] == "ignored"
    assert delivery(client, summary["id"])["reason"] == "auto-reply"
    time.sleep(0.5)
    assert sandbox.requests() == []


def test_reply_tag_finds_the_prospect(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("4WXU6U2J", agent="kim")
    raw = mime(sender="unknown@example.com", to="leasing+prospect-4WXU6U2J@reply.acme-living.com")
    summary = only_delivery(post_mime(client, raw))
    assert summary["prospectId"] == "4WXU6U2J"
    wait_for_status(client, summary["id"], "delivered")
    # No directory agent: the worker asked Knock for the prospect's agent.
    assert sandbox.events("4WXU6U2J")[0]["agent"]["username"] == "kim"


METADATA_HEADERS = "\n".join(
    [
        "X-Knock-Prospect-Id: PX",
        "X-Knock-Agent-Username: meta.agent",
        "X-Knock-Message-Type: EMAIL_AUTOMATED_MESSAGE_SENT",
    ]
)


def test_metadata_headers_choose_prospect_agent_and_type(client: Any, sandbox: Sandbox, worker: Any) -> None:
    """On leasing-side mail whose sender the receiving MTA authenticated."""
    sandbox.seed("PX")
    extra = METADATA_HEADERS + "\n" + authenticated()
    summary = only_delivery(post_mime(client, mime(sender="dana@acme-living.com", extra_headers=extra)))
    wait_for_status(client, summary["id"], "delivered")
    event = sandbox.events("PX")[0]
    assert (event["agent"]["username"], event["type"]) == ("meta.agent", "EMAIL_AUTOMATED_MESSAGE_SENT")


@pytest.mark.parametrize(
    ("sender", "authentication"),
    [
        ("stranger@example.com", ""),  # a prospect's mail cannot steer itself
        ("stranger@example.com", authenticated("example.com")),
        ("dana@acme-living.com", ""),  # no verdict
        ("dana@acme-living.com", authenticated(result="fail")),
        ("dana@acme-living.com", authenticated("evil.com")),  # passes, but for another domain
    ],
)
def test_metadata_headers_are_ignored_unless_the_leasing_sender_is_authenticated(
    client: Any, sender: str, authentication: str
) -> None:
    response = post_mime(client, mime(sender=sender, extra_headers=METADATA_HEADERS + "\n" + authentication))
    summary = only_delivery(response)
    assert summary["prospectId"] != "PX" and summary["type"] != "EMAIL_AUTOMATED_MESSAGE_SENT"


def test_knock_agent_lookup_is_cached(client: Any, services: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1", agent="kim")
    register(client, "P1", "renter@example.com")
    first = only_delivery(post_mime(client, mime(message_id="<1@x>")))
    wait_for_status(client, first["id"], "delivered")
    assert services.directory.known_knock_agent("P1") == "kim"
    sandbox.seed("P1", agent="someone.else")  # Knock changed its mind; the cache still answers
    second = only_delivery(post_mime(client, mime(message_id="<2@x>")))
    wait_for_status(client, second["id"], "delivered")
    assert [e["agent"]["username"] for e in sandbox.events("P1")] == ["kim"]
    assert delivery(client, second["id"])["agentUsername"] == "kim"


def test_default_agent_is_the_last_resort(make_settings: Any, sandbox: Sandbox, start_worker: Any) -> None:
    settings = make_settings(KNOCK_DEFAULT_AGENT_USERNAME="fallback.agent")
    client = create_app(settings).test_client()
    start_worker(settings)
    raw = mime(sender="unknown@example.com", to="leasing+prospect-GONE@reply.acme-living.com")
    summary = only_delivery(post_mime(client, raw))
    # Knock does not know GONE (404 on GET /prospect), so the default agent is used; the log then fails 404.
    done = wait_for_status(client, summary["id"], "dead")
    assert done["agentUsername"] == "fallback.agent" and done["lastError"] == "prospect not found"


def test_no_agent_anywhere_is_unmatched(client: Any, sandbox: Sandbox, worker: Any) -> None:
    raw = mime(sender="unknown@example.com", to="leasing+prospect-GONE@reply.acme-living.com")
    summary = only_delivery(post_mime(client, raw))
    done = wait_for_status(client, summary["id"], "unmatched")
    assert done["reason"] == "no agent"


def test_unmatched_then_resolved_is_delivered(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P9", agent="pat")
    summary = only_delivery(post_mime(client, mime(sender="stranger@example.com")))
    assert summary["status"] == "unmatched" and summary["prospectId"] is None
    assert "not a known prospect" in delivery(client, summary["id"])["reason"]
    resolved = client.post(
        f"/v1/deliveries/{summary['id']}/resolve", json={"prospectId": "P9", "agentUsername": "pat"}, headers=BEARER
    )
    assert resolved.status_code == 202, resolved.json
    done = wait_for_status(client, summary["id"], "delivered")
    assert done["prospectId"] == "P9" and done["reason"] is None
    assert sandbox.events("P9")[0]["agent"]["username"] == "pat"
    listed = client.get("/v1/deliveries?prospectId=P9", headers=BEARER).json["deliveries"]
    assert [d["id"] for d in listed] == [summary["id"]]


def test_knock_503_is_retried_until_delivered(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    sandbox.fault(status=503, count=2)
    summary = only_delivery(post_mime(client, mime()))
    done = wait_for_status(client, summary["id"], "delivered")
    assert done["attempts"] == 3 and done["communicationId"]
    assert [r["status"] for r in sandbox.requests()] == [503, 503, 200]


def test_a_send_that_timed_out_after_knock_stored_it_is_found_there_not_sent_again(
    client: Any, sandbox: Sandbox, start_worker: Any, make_settings: Any
) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    sandbox.fault(status=0, delay=1.5)  # Knock stores it, but answers after the worker gave up
    sandbox.fault(status=503, count=1, path="events")  # and the first look at its events fails
    start_worker(make_settings(RELAY_KNOCK_TIMEOUT_SECONDS="1"))
    summary = only_delivery(post_mime(client, mime()))
    done = wait_for_status(client, summary["id"], "delivered", timeout=30)
    (logged,) = sandbox.events("P1")
    assert done["possibleDuplicate"] is False and done["communicationId"] == logged["communicationId"]


def test_429_waits_at_least_retry_after(client: Any, sandbox: Sandbox, worker: Any) -> None:
    """Backoff here is at most 1 s, so a gap of 2 s can only come from Retry-After."""
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    sandbox.fault(status=429, retryAfter="2")
    summary = only_delivery(post_mime(client, mime()))
    retrying = wait_for_status(client, summary["id"], "retrying")
    assert retrying["lastError"] == "sandbox fault"
    wait_for_status(client, summary["id"], "delivered")
    first, second = sandbox.requests()
    gap = datetime.fromisoformat(second["at"].rstrip("Z")) - datetime.fromisoformat(first["at"].rstrip("Z"))
    assert gap.total_seconds() >= 1.9


def test_400_is_dead_at_once_then_replayed(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    sandbox.fault(status=400, errorMessage="agent is not assigned to this property")
    summary = only_delivery(post_mime(client, mime()))
    dead = wait_for_status(client, summary["id"], "dead")
    assert dead["lastError"] == "agent is not assigned to this property" and dead["attempts"] == 1
    assert client.post(f"/v1/deliveries/{summary['id']}/replay", headers=BEARER).status_code == 202
    done = wait_for_status(client, summary["id"], "delivered")
    assert done["attempts"] == 2 and len(sandbox.events("P1")) == 1


def test_bulk_replay_requeues_every_dead_delivery(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    sandbox.fault(status=422, count=2)
    ids = [only_delivery(post_mime(client, mime(message_id=f"<{i}@x>")))["id"] for i in range(2)]
    for delivery_id in ids:
        wait_for_status(client, delivery_id, "dead")
    response = client.post("/v1/deliveries/replay", json={"status": "dead"}, headers=BEARER)
    assert response.status_code == 202 and sorted(response.json["ids"]) == sorted(ids)
    for delivery_id in ids:
        wait_for_status(client, delivery_id, "delivered")


def test_transient_failures_past_the_max_age_go_dead(make_settings: Any, sandbox: Sandbox, start_worker: Any) -> None:
    settings = make_settings(RELAY_RETRY_MAX_AGE_SECONDS="1.5")
    client = create_app(settings).test_client()
    start_worker(settings)
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    sandbox.fault(status=500, count=100)
    summary = only_delivery(post_mime(client, mime()))
    dead = wait_for_status(client, summary["id"], "dead")
    assert dead["attempts"] >= 2 and dead["lastError"] == "sandbox fault"
    assert len(sandbox.requests()) == dead["attempts"]


def test_rate_limit_spreads_requests_across_seconds(make_settings: Any, sandbox: Sandbox, start_worker: Any) -> None:
    settings = make_settings(RELAY_KNOCK_RATE_LIMIT="2")
    client = create_app(settings).test_client()
    start_worker(settings)
    start_worker(settings)  # two workers share the limit through Redis
    sandbox.seed("P1")
    register(client, "P1", "renter@example.com", agent="pat")
    ids = [only_delivery(post_mime(client, mime(message_id=f"<r{i}@x>")))["id"] for i in range(6)]
    for delivery_id in ids:
        wait_for_status(client, delivery_id, "delivered")
    # Two requests per one-second window: six of them cannot fit in less than one window boundary
    # past the first (four worker threads would otherwise send all six at once).
    moments = sorted(datetime.fromisoformat(r["at"].rstrip("Z")) for r in sandbox.requests())
    assert len(moments) == 6
    assert (moments[-1] - moments[0]).total_seconds() >= 1.0
    assert (moments[4] - moments[0]).total_seconds() >= 1.0  # the fifth request waited for a later window


def test_message_api_uses_the_same_pipeline(client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1", agent="pat")
    register(client, "P1", "renter@example.com", agent="pat")
    body = {"from": "dana@acme-living.com", "to": ["renter@example.com"], "subject": "Tour", "text": "See you",
            "sentTime": "2026-01-02T03:04:05.678+00:00", "messageId": "<api-1@acme>"}  # fmt: skip
    response = client.post("/v1/messages", json=body, headers=BEARER)
    assert response.status_code == 202 and response.json["status"] == "queued"
    wait_for_status(client, response.json["deliveries"][0]["id"], "delivered")
    event = sandbox.events("P1")[0]
    assert (event["type"], event["sentTime"], event["body"]) == (
        "EMAIL_MESSAGE_TO_PROSPECT_SENT",
        "2026-01-02T03:04:05.000Z",
        "See you",
    )
    again = client.post("/v1/messages", json=body, headers=BEARER)
    assert again.json["status"] == "duplicate"


def test_a_delivery_whose_message_was_lost_is_queued_again(
    make_settings: Any, sandbox: Sandbox, start_worker: Any, redis_client: Any
) -> None:
    """What a Redis fault can do: a worker's fetch ran in Redis but its reply never came back, so the
    message sits in that worker's acknowledgement set and nobody will send it. The sweep finds it."""
    settings = make_settings(RELAY_REQUEUE_AFTER_SECONDS="1")
    client = create_app(settings).test_client()
    sandbox.seed("P1", agent="pat")
    register(client, "P1", "renter@example.com")
    delivery_id = only_delivery(post_mime(client, mime()))["id"]
    # The fetch a lost worker made: the message leaves the queue for that worker's ack set.
    (message,) = redis_client.lrange("relay-queue:deliveries", 0, -1)
    redis_client.lrem("relay-queue:deliveries", 1, message)
    redis_client.sadd("relay-queue:__acks__.lost-worker.deliveries", message)
    start_worker(settings)
    shown = wait_for_status(client, delivery_id, "delivered", timeout=20)
    assert shown["attempts"] == 1
    assert len(sandbox.events("P1")) == 1


def test_the_webhooks_queue_message_is_what_dramatiq_writes(services: Any) -> None:
    """The webhook writes the queue message itself (in its one Redis script): byte for byte what
    Dramatiq's Message encodes for the same ids and time, and decoded by Dramatiq as that message."""
    write = services.queue.write_for("0123456789abcdef0123456789abcdef")
    decoded = dramatiq.Message.decode(write.data)
    assert decoded.options == {"redis_message_id": write.message_id}
    assert (decoded.queue_name, decoded.actor_name, decoded.args) == (
        QUEUE_NAME,
        ACTOR_NAME,
        ("0123456789abcdef0123456789abcdef",),
    )
    standard = dramatiq.Message(
        queue_name=QUEUE_NAME,
        actor_name=ACTOR_NAME,
        args=("0123456789abcdef0123456789abcdef",),
        kwargs={},
        options={"redis_message_id": write.message_id},
        message_id=decoded.message_id,
        message_timestamp=decoded.message_timestamp,
    )
    assert standard.encode() == write.data
    assert abs(decoded.message_timestamp - time.time() * 1000) < 5_000


def test_a_record_hash_holds_set_fields_only_and_reads_back_the_same() -> None:
    record = Delivery(
        id="0123456789abcdef0123456789abcdef",
        status="queued",
        type="EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED",
        messageId="m@x",
        provider="mime",
        subject="Hi",
        sentTime="2026-01-02T03:04:05.000Z",
        receivedAt=1767322000000,
        prospectId="P1",
        attempts=2,
        remoteImages=[],
        recipients=["a@x.com"],
        possibleDuplicate=True,
        enqueued=True,
        inFlight=0,
    )
    written = record.to_hash()
    assert written == {
        "id": "0123456789abcdef0123456789abcdef",
        "status": "queued",
        "type": "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED",
        "messageId": "m@x",
        "provider": "mime",
        "subject": "Hi",
        "sentTime": "2026-01-02T03:04:05.000Z",
        "receivedAt": "1767322000000",
        "direction": "",
        "prospectId": "P1",
        "attempts": "2",
        "possibleDuplicate": "1",
        "recipients": '["a@x.com"]',
        "inFlight": "0",
    }
    assert list(written) == [name for name in DELIVERY_FIELDS if name in written]  # declared order
    assert Delivery.from_hash({**written, "enqueued": "1"}) == record
