"""Brevo: inbound parsing (`POST /webhooks/brevo/inbound`, parsed JSON items) and transactional
events (`POST /webhooks/brevo/events`), whose `delivered` email the worker fetches from Brevo's
API; both behind basic auth or Brevo's bearer token."""

from __future__ import annotations

from typing import Any

from tests.conftest import StorageStub
from tests.helpers import BEARER, BREVO_TOKEN, basic_auth, logged_as, payload_json
from tests.webhook_cases import (
    BASIC_AUTH_CASES,
    DECODED_ATTACHMENT_NAMES,
    FETCH_PENDING,
    REPLY_TAGGED,
    CarriesAttachments,
    WebhookCases,
)

BREVO_AUTH = {**BASIC_AUTH_CASES, "bearer": {"Authorization": f"Bearer {BREVO_TOKEN}"}}


def with_attachments(names: tuple[str, ...]) -> dict[str, Any]:
    """The inbound fixture carrying `names`, a file with a Content-ID (as Apple Mail sends every
    attachment: listed) and an inline image the HTML shows (never listed)."""

    def entry(name: str, content_type: str = "application/pdf", content_id: str | None = None) -> dict[str, Any]:
        return {"Name": name, "ContentType": content_type, "ContentLength": 13, "ContentID": content_id,
                "DownloadToken": "eyJmb2xkZXIiOiIyMDIwMDMzMSJ9"}  # fmt: skip

    posted = payload_json("brevo/inbound.json")
    posted["items"][0]["Attachments"] = [*map(entry, names), entry("signed lease.pdf", content_id="lease@apple"),
                                         entry("logo.png", "image/png", "logo@acme")]  # fmt: skip
    return posted


class TestBrevoInbound(CarriesAttachments, WebhookCases):
    attachment_names = (*DECODED_ATTACHMENT_NAMES, "signed lease.pdf")
    path = "/webhooks/brevo/inbound"
    retry_status = 429  # Brevo drops a webhook answered 5xx and retries 429
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": payload_json("brevo/inbound.json"), "headers": BREVO_AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {"items": "nope"}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {"items": [], "padding": "x" * size}, "headers": basic_auth()}

    def attachment_request(self) -> dict[str, Any]:
        return {"json": with_attachments(DECODED_ATTACHMENT_NAMES), "headers": basic_auth()}

    def test_the_fixtures_attachment_is_listed(self, client: Any) -> None:
        """The fixture's own item carries one attachment, named as Brevo's sample names it."""
        response = client.post(self.path, **self.request())
        body = client.application.extensions["relay"].store.payload(response.json["deliveries"][0]["id"])["body"]
        assert "<li>pay stub.pdf (" in body and "Attachment1" not in body


class TestBrevoEvents(WebhookCases):
    path = "/webhooks/brevo/events"
    retry_status = 429
    expected = FETCH_PENDING

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": payload_json("brevo/delivered.json"), "headers": BREVO_AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {"event": "delivered", "email": "lee@example.com"}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {**payload_json("brevo/delivered.json"), "tag": "x" * size}, "headers": basic_auth()}


def test_brevo_accepts_its_bearer_token_and_refuses_a_wrong_one(client: Any) -> None:
    assert client.post("/webhooks/brevo/inbound", **TestBrevoInbound().request("bearer")).status_code == 200
    wrong = {"json": payload_json("brevo/inbound.json"), "headers": {"Authorization": "Bearer guess"}}
    assert client.post("/webhooks/brevo/inbound", **wrong).status_code == 401


def test_brevo_delivered_event_logs_the_sent_email(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    api_client.put("/v1/prospects/P8", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post("/webhooks/brevo/events", json=payload_json("brevo/delivered.json"),
                               headers=basic_auth())  # fmt: skip
    (pending,) = response.json["deliveries"]
    shown = logged_as(api_client, pending["id"])
    assert (shown["prospectId"], shown["type"]) == ("P8", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert shown["messageId"] == "202004010122.88414113127@smtp-relay.mailin.fr"
    listed, content = storage.seen
    assert listed["query"] == "messageId=%3C202004010122.88414113127%40smtp-relay.mailin.fr%3E"
    assert content["path"] == "/v3/smtp/emails/5a4d8f8c-0b6b-4a8b-9a3e-0f6c5d1e2a3b"
