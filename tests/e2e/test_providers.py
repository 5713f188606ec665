"""Each provider's webhook through real gunicorn, worker, sandbox and Redis."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from tests.conftest import SnsSigner, StorageStub
from tests.e2e.conftest import Stack
from tests.helpers import (
    SENDGRID_FORM,
    SPARKPOST_TOKEN,
    basic_auth,
    mailersend_headers,
    mailgun_event,
    mailgun_signature,
    mandrill_headers,
    payload,
    signed_multipart,
    signed_urlencoded,
    svix_headers,
)

pytestmark = pytest.mark.e2e


def post(stack: Stack, path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> Any:
    response = requests.post(
        stack.url + path, data=body, headers={"Content-Type": content_type, **(headers or {})}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def delivered_event(stack: Stack, answer: dict[str, Any]) -> dict[str, Any]:
    (summary,) = answer["deliveries"]
    stack.wait_for_status(summary["id"], "delivered")
    (event,) = stack.sandbox.events(summary["prospectId"])
    return event  # type: ignore[no-any-return]


def test_sendgrid_parsed_mode_end_to_end(e2e: Stack) -> None:
    e2e.sandbox.seed("SG777", agent="kim")
    answer = post(
        e2e, "/webhooks/sendgrid/inbound", payload("sendgrid/parsed-three-charsets.form"), SENDGRID_FORM, basic_auth()
    )
    event = delivered_event(e2e, answer)
    assert event["type"] == "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
    assert event["agent"] == {"username": "kim"}
    assert event["subject"] == "Café – tour on Friday"
    assert event["sentTime"] == "2016-07-27T20:53:03.000Z"
    assert "Здравствуйте! Квартира свободна?" in event["body"] and "payslip.pdf" in event["body"]


def test_mailgun_route_end_to_end(e2e: Stack) -> None:
    e2e.sandbox.seed("P7", agent="pat")
    e2e.api("PUT", "/v1/prospects/P7", json={"emails": ["zoe@example.com"]})
    body = signed_urlencoded(payload("mailgun/route-parsed.urlencoded"), mailgun_signature())
    event = delivered_event(e2e, post(e2e, "/webhooks/mailgun/inbound", body, "application/x-www-form-urlencoded"))
    # The prospect's X-Mailgun-Variables (knock_agent_username) are not trusted: Knock names the agent.
    assert (event["type"], event["agent"]["username"]) == ("EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED", "pat")
    assert (event["subject"], event["sentTime"]) == ("Pets allowed? 🐶", "2020-04-03T10:00:00.000Z")


def test_mailgun_mime_route_end_to_end(e2e: Stack) -> None:
    e2e.sandbox.seed("MG123", agent="pat")
    e2e.api("PUT", "/v1/prospects/MG123", json={"emails": ["sam@example.net"]})
    body = signed_multipart(payload("mailgun/route-mime.form"), mailgun_signature())
    event = delivered_event(e2e, post(e2e, "/webhooks/mailgun/inbound", body, SENDGRID_FORM))
    assert (event["subject"], event["body"]) == ("Parking spots", "Is there covered parking?")


def test_mailgun_delivered_event_end_to_end(e2e: Stack, storage_stub: StorageStub) -> None:
    e2e.sandbox.seed("P1", agent="pat")
    e2e.api("PUT", "/v1/prospects/P1", json={"emails": ["renter@example.com"]})
    url = storage_stub.url + "/v3/domains/mg.acme-living.com/messages/message_key"
    body = mailgun_event("event-delivered.json", mailgun_signature(), url)
    (pending,) = post(e2e, "/webhooks/mailgun/events", body, "application/json")["deliveries"]
    fetched = e2e.wait_for_status(pending["id"], "fetched")  # the worker fetched the stored message
    (created,) = fetched["reason"].removeprefix("logged as ").split(", ")
    e2e.wait_for_status(created, "delivered")
    (event,) = e2e.sandbox.events("P1")
    assert (event["type"], event["agent"]["username"]) == ("EMAIL_MESSAGE_TO_PROSPECT_SENT", "dana.from.variables")
    assert event["subject"] == "Your application – next steps"
    assert event["sentTime"] == "2020-04-02T15:30:00.000Z"
    assert "Please sign the lease" in event["body"]
    assert e2e.sandbox.prospect("P1")["status"] == "open"


def test_postmark_end_to_end(e2e: Stack) -> None:
    e2e.sandbox.seed("PM555", agent="kim")
    event = delivered_event(
        e2e, post(e2e, "/webhooks/postmark/inbound", payload("postmark/inbound.json"), "application/json", basic_auth())
    )
    assert (event["type"], event["agent"]["username"]) == ("EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED", "kim")
    assert (event["subject"], event["sentTime"]) == ("Move-in date — flexible?", "2020-04-05T22:45:12.000Z")


# The providers that sign their own way or only name the email, through the real processes.


def sns_post(stack: Stack, sns: SnsSigner) -> tuple[bytes, str, dict[str, str]]:
    message = {**json.loads(payload("ses/notification.json")), "Message": payload("ses/received-event.json").decode()}
    return (
        json.dumps(sns.sign(message)).encode(),
        "text/plain; charset=UTF-8",
        {"x-amz-sns-message-type": "Notification"},
    )


def sns_s3_post(stack: Stack, sns: SnsSigner) -> tuple[bytes, str, dict[str, str]]:
    """SES's S3 action: the message goes to the bucket, the notification names it."""
    import boto3

    event = json.loads(payload("ses/received-event.json"))
    raw = base64.b64decode(event.pop("content"))
    key = "inbound/e2e-" + hashlib.sha256(raw).hexdigest()[:12]
    boto3.client("s3", endpoint_url=stack.env["RELAY_SES_S3_ENDPOINT_URL"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").put_object(
        Bucket=stack.env["RELAY_SES_S3_BUCKETS"], Key=key, Body=raw)  # fmt: skip
    event["receipt"]["action"] = {"type": "S3", "bucketName": stack.env["RELAY_SES_S3_BUCKETS"], "objectKey": key}
    message = {**json.loads(payload("ses/notification.json")), "Message": json.dumps(event)}
    return (
        json.dumps(sns.sign(message)).encode(),
        "text/plain; charset=UTF-8",
        {"x-amz-sns-message-type": "Notification"},
    )


def mandrill_post(events: bytes, url: str) -> tuple[bytes, str, dict[str, str]]:
    params = {"mandrill_events": events.decode()}
    return urlencode(params).encode(), "application/x-www-form-urlencoded", mandrill_headers(url, params)


SPARKPOST = SPARKPOST_TOKEN
MANDRILL = "/webhooks/mandrill/inbound"  # inbound routes and message events alike


def json_post(name: str, headers: dict[str, str]) -> tuple[bytes, str, dict[str, str]]:
    return payload(name), "application/json", headers


INBOUND = {
    "sparkpost": ("/webhooks/sparkpost/inbound",
                  lambda s, sns: json_post("sparkpost/relay.json", {"X-MessageSystems-Webhook-Token": SPARKPOST})),
    "mailersend": ("/webhooks/mailersend/inbound",
                   lambda s, sns: json_post("mailersend/inbound.json",
                                            mailersend_headers(payload("mailersend/inbound.json")))),
    "mandrill": (MANDRILL, lambda s, sns: mandrill_post(payload("mandrill/inbound-events.json"), s.url + MANDRILL)),
    "mailjet": ("/webhooks/mailjet/inbound", lambda s, sns: json_post("mailjet/parse.json", basic_auth())),
    "brevo": ("/webhooks/brevo/inbound", lambda s, sns: json_post("brevo/inbound.json", basic_auth())),
    "resend": ("/webhooks/resend",
               lambda s, sns: json_post("resend/received.json", svix_headers(payload("resend/received.json")))),
    "ses": ("/webhooks/ses", sns_post),
    "ses-s3": ("/webhooks/ses", sns_s3_post),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(INBOUND))
def test_inbound_end_to_end(e2e: Stack, sns_server: SnsSigner, provider: str) -> None:
    """The same email (a renter writing to a reply-tagged address) through each provider's wire format."""
    e2e.sandbox.seed("4WXU6U2J", agent="kim")
    path, build = INBOUND[provider]
    request = build(e2e, sns_server)
    answer = post(e2e, path, *request)
    created = [d for d in answer["deliveries"] if d["status"] == "queued"]
    if provider in ("resend", "ses-s3"):  # the email is elsewhere: the worker fetches it first
        fetched = e2e.wait_for_status(created[0]["id"], "fetched")
        created = [{"id": fetched["reason"].removeprefix("logged as "), "prospectId": "4WXU6U2J"}]
    (summary,) = created
    e2e.wait_for_status(summary["id"], "delivered")
    (event,) = e2e.sandbox.events("4WXU6U2J")
    assert (event["type"], event["agent"]["username"]) == ("EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED", "kim")
    assert event["subject"] == "Réservation pour la visite"
    assert event["sentTime"] == "2020-03-31T23:22:06.000Z"
    assert "je voudrais r" in event["body"] and "<script" not in event["body"]
    retried = post(e2e, path, *request)  # the provider retries the very same call
    assert retried["status"] == "duplicate", retried
    assert len(e2e.sandbox.events("4WXU6U2J")) == 1  # a provider retry is never logged twice


OUTBOUND = {
    "postmark": ("/webhooks/postmark/outbound", lambda s: json_post("postmark/delivery.json", basic_auth())),
    "resend": ("/webhooks/resend", lambda s: json_post("resend/sent.json", svix_headers(payload("resend/sent.json")))),
    "mandrill": (MANDRILL, lambda s: mandrill_post(payload("mandrill/send-events.json"), s.url + MANDRILL)),
    "brevo": ("/webhooks/brevo/events", lambda s: json_post("brevo/delivered.json", basic_auth())),
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(OUTBOUND))
def test_outbound_send_end_to_end(e2e: Stack, provider: str) -> None:
    """A sent-event names the email; the worker fetches it from the provider's API and logs it as sent."""
    e2e.sandbox.seed("OUT1", agent="pat")
    e2e.api("PUT", "/v1/prospects/OUT1", json={"emails": ["lee@example.com"]})
    path, build = OUTBOUND[provider]
    answer = post(e2e, path, *build(e2e))
    pending = next(d for d in answer["deliveries"] if d["status"] == "queued")
    fetched = e2e.wait_for_status(pending["id"], "fetched")
    e2e.wait_for_status(fetched["reason"].removeprefix("logged as "), "delivered")
    (event,) = e2e.sandbox.events("OUT1")
    assert (event["type"], event["agent"]["username"]) == ("EMAIL_MESSAGE_TO_PROSPECT_SENT", "pat")
    assert event["subject"] == "Your tour on Friday"
    assert "Friday" in event["body"]
