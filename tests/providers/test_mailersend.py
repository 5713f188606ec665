"""`POST /webhooks/mailersend/inbound`: MailerSend inbound routes (`inbound.message`, the raw
message in `data.raw`), signed with the route's secret over the exact body."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import mailersend_headers, payload
from tests.webhook_cases import REPLY_TAGGED, CarriesMimeAttachments, WebhookCases

JSON = "application/json"


def mailersend(auth: str = "valid", body: bytes | None = None) -> dict[str, Any]:
    data = payload("mailersend/inbound.json") if body is None else body
    headers = {"valid": mailersend_headers(data), "missing": {}, "wrong": mailersend_headers(data, "guess")}[auth]
    return {"data": data, "content_type": JSON, "headers": headers}


class TestMailerSend(CarriesMimeAttachments, WebhookCases):
    path = "/webhooks/mailersend/inbound"
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return mailersend(auth)

    def malformed_request(self) -> dict[str, Any]:
        return mailersend(body=b'{"type": "inbound.message", "data": {"raw": 7}}')

    def oversized_request(self, size: int) -> dict[str, Any]:
        return mailersend(body=b'{"padding": "' + b"x" * size + b'"}')

    def carrying(self, raw: bytes) -> dict[str, Any]:
        event = json.loads(payload("mailersend/inbound.json"))
        event["data"]["raw"] = raw.decode()
        return mailersend(body=json.dumps(event).encode())

    def test_the_fixtures_attachment_is_listed(self, client: Any) -> None:
        """The fixture's own message carries one attachment, named as MailerSend's sample names it."""
        response = client.post(self.path, **self.request())
        body = client.application.extensions["relay"].store.payload(response.json["deliveries"][0]["id"])["body"]
        assert "<li>pay stub.pdf (" in body and "Attachment1" not in body


def test_mailersend_signature_covers_the_exact_bytes(client: Any) -> None:
    """The same JSON spaced differently is not what MailerSend signed."""
    data = payload("mailersend/inbound.json")
    respaced = json.dumps(json.loads(data)).encode()
    assert respaced != data
    response = client.post("/webhooks/mailersend/inbound", data=respaced, content_type=JSON,
                           headers=mailersend_headers(data))  # fmt: skip
    assert response.status_code == 401
