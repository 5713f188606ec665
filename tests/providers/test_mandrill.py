"""`POST /webhooks/mandrill/inbound`: Mandrill's inbound route and message webhook
(`mandrill_events`), signed over the URL and the fields; `send` events name a sent message the
worker fetches from Mandrill's API."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from relay.app import create_app
from tests.conftest import StorageStub
from tests.helpers import BEARER, logged_as, mandrill_headers, payload_json, wait_for_status
from tests.webhook_cases import FETCH_PENDING, REPLY_TAGGED, CarriesMimeAttachments, WebhookCases

FORM = "application/x-www-form-urlencoded"
MANDRILL = "/webhooks/mandrill/inbound"


def mandrill(auth: str = "valid", events: Any = None, url: str = "http://localhost" + MANDRILL) -> dict[str, Any]:
    params = {"mandrill_events": events if isinstance(events, str) else json.dumps(
        payload_json("mandrill/inbound-events.json") if events is None else events)}  # fmt: skip
    headers = {"valid": mandrill_headers(url, params), "missing": {}, "wrong": mandrill_headers(url, params, "guess")}
    return {"data": urlencode(params), "content_type": FORM, "headers": headers[auth]}


class TestMandrill(CarriesMimeAttachments, WebhookCases):
    path = MANDRILL
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return mandrill(auth)

    def malformed_request(self) -> dict[str, Any]:
        return mandrill(events="[not json")

    def oversized_request(self, size: int) -> dict[str, Any]:
        return mandrill(events=json.dumps([{"event": "inbound", "padding": "x" * size}]))

    def carrying(self, raw: bytes) -> dict[str, Any]:
        (event,) = payload_json("mandrill/inbound-events.json")
        return mandrill(events=[{**event, "msg": {**event["msg"], "raw_msg": raw.decode()}}])

    def test_the_fixtures_attachment_is_listed(self, client: Any) -> None:
        """The fixture's own message carries one attachment, named as Mandrill's sample names it."""
        response = client.post(self.path, **self.request())
        body = client.application.extensions["relay"].store.payload(response.json["deliveries"][0]["id"])["body"]
        assert "<li>pay stub.pdf (" in body and "Attachment1" not in body


class TestMandrillSends(TestMandrill):
    expected = FETCH_PENDING
    # Send events only name the message: its attachments are listed once the worker fetched it.
    test_attachments_are_listed_by_their_file_names = None  # type: ignore[assignment]
    test_a_file_name_in_raw_utf8_is_listed = None  # type: ignore[assignment]
    test_the_fixtures_attachment_is_listed = None  # type: ignore[assignment]

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return mandrill(auth, events=payload_json("mandrill/send-events.json")[:1])


def test_mandrill_head_check_answers_200_and_is_no_webhook_call(client: Any) -> None:
    from prometheus_client import REGISTRY

    def counted() -> float:
        return sum(
            s.value for m in REGISTRY.collect() if m.name == "relay_webhooks" for s in m.samples
            if s.name == "relay_webhooks_total" and s.labels["provider"] == "mandrill"
        )  # fmt: skip

    before = counted()
    assert client.head(MANDRILL).status_code == 200
    assert counted() == before
    client.post(MANDRILL, **mandrill(auth="missing"))
    assert counted() == before + 1


def test_mandrill_signs_the_public_url_behind_a_proxy(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_PUBLIC_URL="https://relay.example.com")).test_client()
    as_given = mandrill(url="https://relay.example.com" + MANDRILL)
    assert client.post(MANDRILL, **as_given).status_code == 200
    assert client.post(MANDRILL, **mandrill()).status_code == 401  # signed for the URL the proxy rewrote


def test_mandrill_answers_each_event_of_a_batch(client: Any) -> None:
    inbound = payload_json("mandrill/inbound-events.json")[0]
    events = [inbound, {"event": "inbound", "msg": {"subject": "no raw"}}, {"event": "reject", "msg": {}}]
    response = client.post(MANDRILL, **mandrill(events=events))
    assert response.status_code == 200
    assert [d["status"] for d in response.json["deliveries"]] == ["queued", "ignored", "ignored"]


def test_mandrill_send_event_logs_the_sent_message(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    api_client.put("/v1/prospects/P7", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post(MANDRILL, **mandrill(events=payload_json("mandrill/send-events.json")))
    send, opened = response.json["deliveries"]
    assert (send["status"], send["prospectId"], send["type"]) == FETCH_PENDING and opened["status"] == "ignored"
    shown = logged_as(api_client, send["id"])
    assert (shown["prospectId"], shown["type"]) == ("P7", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert shown["senderAuth"] == "pass: sent through Mandrill"
    assert [r["path"] for r in storage.seen] == ["/api/1.0/messages/content.json"]


def test_mandrill_unknown_message_is_dead_not_retried(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    events = payload_json("mandrill/send-events.json")[:1]
    events[0]["_id"] = "unknown"
    (pending,) = api_client.post(MANDRILL, **mandrill(events=events)).json["deliveries"]
    dead = wait_for_status(api_client, pending["id"], "dead")
    assert "Unknown_Message" in dead["lastError"] and len(storage.seen) == 1


def test_mandrill_sent_message_keeps_its_own_message_id(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    events = payload_json("mandrill/send-events.json")[:1]
    (send,) = api_client.post(MANDRILL, **mandrill(events=events)).json["deliveries"]
    assert logged_as(api_client, send["id"])["messageId"] == "tour-friday-77@acme-living.com"
