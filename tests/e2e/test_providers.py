"""Each provider's webhook through real gunicorn, worker, sandbox and Redis."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.conftest import StorageStub
from tests.e2e.conftest import Stack
from tests.helpers import (
    SENDGRID_FORM,
    basic_auth,
    mailgun_event,
    mailgun_signature,
    payload,
    signed_multipart,
    signed_urlencoded,
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
