"""Attribution through the real processes (gunicorn, the worker, the Knock sandbox, Redis): a reply
from an address nobody knows follows its thread onto the guest card, a signed reply address routes
and a forged one does not, an SES virus never reaches Knock, and 500 dead deliveries are replayed in
bulk and logged once each."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from relay.config import load_settings
from relay.services import Services
from tests.conftest import SnsSigner
from tests.e2e.conftest import Stack
from tests.helpers import authenticated, basic_auth, mime, payload
from tests.test_bulk_replay import store_dead

pytestmark = pytest.mark.e2e


def post_mime(stack: Stack, raw: bytes) -> dict[str, Any]:
    answer = requests.post(f"{stack.url}/webhooks/mime", data=raw, timeout=30,
                           headers={"Content-Type": "message/rfc822", **basic_auth()})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_a_reply_from_an_unknown_address_follows_its_thread(e2e: Stack) -> None:
    e2e.sandbox.seed("THREAD1", agent="kim")
    e2e.api("PUT", "/v1/prospects/THREAD1", json={"emails": ["lee.thread@example.com"], "agentUsername": "kim"})
    tour = mime(sender="Kim <kim@acme-living.com>", to="lee.thread@example.com", subject="Your tour",
                message_id="<tour-thread1@acme-living.com>", extra_headers=authenticated())  # fmt: skip
    (sent,) = post_mime(e2e, tour)["deliveries"]
    e2e.wait_for_status(sent["id"], "delivered")
    reply = mime(sender="Lee at work <lee@work.example.org>", to="kim@acme-living.com", subject="Re: Your tour",
                 message_id="<reply-thread1@work.example.org>",
                 extra_headers="In-Reply-To: <tour-thread1@acme-living.com>")  # fmt: skip
    (answer,) = post_mime(e2e, reply)["deliveries"]
    assert answer["prospectId"] == "THREAD1"
    shown = e2e.wait_for_status(answer["id"], "delivered")
    assert (shown["matchedBy"], shown["threadMessageId"]) == ("thread", "tour-thread1@acme-living.com")
    types = [event["type"] for event in e2e.sandbox.events("THREAD1")]
    assert sorted(types) == ["EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED", "EMAIL_MESSAGE_TO_PROSPECT_SENT"]


def test_a_signed_reply_address_routes_and_a_forged_one_does_not(e2e: Stack) -> None:
    e2e.sandbox.seed("SIGNED1", agent="kim")
    address = e2e.api("GET", "/v1/prospects/SIGNED1/reply-address").json()["address"]
    assert address.startswith("leasing+prospect-SIGNED1.") and address.endswith("@reply.acme-living.com")
    (routed,) = post_mime(e2e, mime(sender="new@example.net", to=address, message_id="<signed1@x>"))["deliveries"]
    e2e.wait_for_status(routed["id"], "delivered")
    signature = address.split("@")[0].rsplit(".", 1)[1]
    forged = address.replace("SIGNED1.", "SIGNED2.")  # another prospect, the first one's signature
    assert signature in forged
    (refused,) = post_mime(e2e, mime(sender="new@example.net", to=forged, message_id="<signed2@x>"))["deliveries"]
    assert refused["status"] == "unmatched"
    assert e2e.delivery(refused["id"])["reason"] == "reply tag signature wrong"
    assert len(e2e.sandbox.events("SIGNED1")) == 1 and e2e.sandbox.events("SIGNED2") == []


def test_an_ses_virus_never_reaches_knock(e2e: Stack, sns_server: SnsSigner) -> None:
    e2e.sandbox.seed("4WXU6U2J", agent="kim")
    event = json.loads(payload("ses/received-event.json"))
    event["receipt"]["virusVerdict"] = {"status": "FAIL"}
    message = {**json.loads(payload("ses/notification.json")), "Message": json.dumps(event)}
    answer = requests.post(f"{e2e.url}/webhooks/ses", data=json.dumps(sns_server.sign(message)), timeout=30,
                           headers={"Content-Type": "text/plain; charset=UTF-8",
                                    "x-amz-sns-message-type": "Notification"})  # fmt: skip
    (ignored,) = answer.json()["deliveries"]
    assert (ignored["status"], e2e.delivery(ignored["id"])["reason"]) == ("ignored", "virus")
    # A clean email sent after it is delivered: the worker has had every chance to send the virus.
    clean = mime(sender="renter@example.com", to="leasing+prospect-4WXU6U2J@reply.acme-living.com",
                 message_id="<after-virus@x>")  # fmt: skip
    (after,) = post_mime(e2e, clean)["deliveries"]
    e2e.wait_for_status(after["id"], "delivered")
    assert [event["subject"] for event in e2e.sandbox.events("4WXU6U2J")] == ["Is the 2BR still available?"]


def test_five_hundred_dead_deliveries_are_replayed_in_bulk_and_logged_once(e2e: Stack) -> None:
    e2e.sandbox.seed("P1", agent="pat")
    services = Services(load_settings(e2e.env))
    ids = store_dead(services, 500, provider="brevo", error="Knock was down", received=datetime.now(UTC))
    answer = e2e.api("POST", "/v1/deliveries/replay", json={"status": "dead", "provider": "brevo"}).json()
    assert answer["replayed"] == 500
    for delivery_id in ids:
        e2e.wait_for_status(delivery_id, "delivered", timeout=120)
    again = e2e.api("POST", "/v1/deliveries/replay", json={"status": "dead", "provider": "brevo"}).json()
    assert again["replayed"] == 0 and len(e2e.sandbox.events("P1")) == 500
