"""Rules that a one-character change in the code would break, each pinned by a test that fails then."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from relay.app import create_app
from relay.knock.schema import format_sent_time
from tests.conftest import Sandbox
from tests.helpers import (
    BEARER,
    MAILGUN_SIGNING_KEY,
    basic_auth,
    delivery,
    mailgun_signature,
    mime,
    post_mime,
    signed_urlencoded,
    wait_for_status,
)

URLENCODED = "application/x-www-form-urlencoded"


def route_post(client: Any, signature: dict[str, str]) -> Any:
    body = b"subject=hi&body-plain=hello&sender=renter%40example.com&recipient=leasing%40acme-living.com"
    return client.post("/webhooks/mailgun/inbound", data=signed_urlencoded(body, signature), content_type=URLENCODED)


# Signatures ----------------------------------------------------------------------------------


def test_a_prefix_of_the_right_mailgun_signature_is_refused(client: Any) -> None:
    right = mailgun_signature()
    for wrong in (right["signature"][:-1], right["signature"][:32], right["signature"] + "0", ""):
        assert route_post(client, {**right, "signature": wrong}).status_code == 401
    assert route_post(client, right).status_code != 401


@pytest.mark.parametrize("skew", [-86400 - 120, 86400 + 120])
def test_mailgun_timestamps_beyond_the_window_either_way_are_refused(client: Any, skew: int) -> None:
    """`skew` is how far the timestamp lies in the past (positive) or the future (negative)."""
    assert route_post(client, mailgun_signature(MAILGUN_SIGNING_KEY, age=skew)).status_code == 401
    assert route_post(client, mailgun_signature(MAILGUN_SIGNING_KEY, age=skew / 2)).status_code == 406  # read, not 401


# The leasing side ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "agent@notacme-living.com",
        "agent@acme-living.com.evil.com",
        "agent@evilacme-living.com",
        "agent@sub.acme-living.com",
    ],
)
def test_lookalike_domains_stay_on_the_prospect_side(client: Any, sender: str) -> None:
    response = post_mime(client, mime(sender=sender, to="leasing@acme-living.com"))
    assert response.json["deliveries"][0]["type"] == "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
    outbound = post_mime(client, mime(sender="agent@acme-living.com", to="renter@example.com", message_id="<o@x>"))
    assert outbound.json["deliveries"][0]["type"] == "EMAIL_MESSAGE_TO_PROSPECT_SENT"


# Routing precedence ---------------------------------------------------------------------------


def test_explicit_agent_beats_the_senders_directory_agent(client: Any) -> None:
    client.put("/v1/agents/dana", json={"emails": ["dana@acme-living.com"]}, headers=BEARER)
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    body = {"from": "dana@acme-living.com", "to": ["renter@example.com"], "subject": "Tour", "text": "Friday?",
            "agentUsername": "kim"}  # fmt: skip
    response = client.post("/v1/messages", json=body, headers=BEARER)
    assert delivery(client, response.json["deliveries"][0]["id"])["agentUsername"] == "kim"
    del body["agentUsername"]
    body["messageId"] = "second@acme-living.com"
    response = client.post("/v1/messages", json=body, headers=BEARER)
    assert delivery(client, response.json["deliveries"][0]["id"])["agentUsername"] == "dana"  # sender before prospect's


@pytest.mark.parametrize("precedence", ["bulk", "Bulk", "BULK", "auto_reply", "Junk"])
def test_precedence_in_any_case_marks_an_auto_reply(client: Any, precedence: str) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    response = post_mime(client, mime(extra_headers=f"Precedence: {precedence}"))
    shown = delivery(client, response.json["deliveries"][0]["id"])
    assert (shown["status"], shown["reason"]) == ("ignored", "auto-reply")


def test_an_auto_reply_from_an_unknown_sender_is_ignored_not_unmatched(client: Any) -> None:
    response = post_mime(client, mime(sender="stranger@example.org", extra_headers="Auto-Submitted: auto-replied"))
    assert response.json["status"] == "ignored"
    assert delivery(client, response.json["deliveries"][0]["id"])["reason"] == "auto-reply"


@pytest.mark.parametrize("tag", ["prospect-PM1", "PROSPECT-PM1", "Prospect-PM1"])
def test_reply_tag_prefix_in_any_case_finds_the_prospect(client: Any, tag: str) -> None:
    response = post_mime(client, mime(sender="stranger@example.org", to=f"leasing+{tag}@acme-living.com"))
    assert (response.json["status"], response.json["deliveries"][0]["prospectId"]) == ("queued", "PM1")


def test_sent_time_truncates_to_milliseconds_never_rounding_into_the_next_second() -> None:
    moment = datetime(2020, 3, 31, 23, 22, 6, 999_500, tzinfo=UTC)
    assert format_sent_time(moment) == "2020-03-31T23:22:06.999Z"
    assert format_sent_time(moment.replace(microsecond=999_999)) == "2020-03-31T23:22:06.999Z"


# Enqueue fails after the record is stored: a real refusal by Redis --------------------------------


def test_enqueue_refused_after_the_record_is_stored_answers_503_and_keeps_nothing(
    own_redis: Any, make_settings: Any
) -> None:
    """The web side may write the relay's records but Redis refuses it the queue's keys (an ACL)."""
    url = own_redis()
    admin = redis.Redis.from_url(url)
    admin.acl_setuser("relay-web", enabled=True, passwords=["+pw"], keys=["relay:*"], commands=["+@all"])
    restricted = url.replace("redis://", "redis://relay-web:pw@")
    client = create_app(make_settings(REDIS_URL=restricted)).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    raw = mime(message_id="<refused@example.com>")
    first = post_mime(client, raw)
    assert first.status_code == 503 and first.headers["Retry-After"]
    assert admin.keys("relay:delivery:*") == [] and admin.keys("relay:dedup:*") == []
    assert admin.zcard("relay:idx:all") == 0

    admin.acl_setuser("relay-web", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    retry = post_mime(client, raw)  # the provider's retry is new, not a duplicate of a ghost
    assert retry.status_code == 200 and retry.json["status"] == "queued"
    assert len(admin.keys("relay:delivery:*")) == 1


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


def test_basic_auth_is_checked_against_each_configured_pair(client: Any) -> None:
    assert post_mime(client, mime(), headers=basic_auth("old", "rotated-out")).status_code == 200
    assert post_mime(client, mime(), headers=basic_auth("old", "s3cret")).status_code == 401
    assert post_mime(client, mime(), headers=basic_auth("relay", "rotated-out")).status_code == 401
    assert post_mime(client, mime(), headers=basic_auth("relay", "s3cre")).status_code == 401
