"""`POST /webhooks/mailjet/inbound`: Mailjet's Parse API (parsed JSON, no raw MIME) behind basic auth."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import BEARER, basic_auth, payload_json
from tests.webhook_cases import BASIC_AUTH_CASES, REPLY_TAGGED, CarriesAttachments, WebhookCases


class TestMailjet(CarriesAttachments, WebhookCases):
    attachment_names = ("pay stub.pdf",)
    path = "/webhooks/mailjet/inbound"
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": payload_json("mailjet/parse.json"), "headers": BASIC_AUTH_CASES[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {**payload_json("mailjet/parse.json"), "From": "", "Sender": ""}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {**payload_json("mailjet/parse.json"), "Text-part": "x" * size}, "headers": basic_auth()}


def test_mailjet_fields_headers_and_attachments(client: Any, services: Any) -> None:
    (summary,) = client.post("/webhooks/mailjet/inbound", **TestMailjet().request()).json["deliveries"]
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    body = services.store.payload(summary["id"])
    assert shown["messageId"] == "CAF=visit-4711@mail.example.com"
    assert shown["sentTime"] == "2020-03-31T23:22:06.000Z"
    assert "pay stub.pdf" in body["body"] and "<script" not in body["body"]


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({"Content-Disposition": "attachment; filename*=UTF-8''bail%20sign%C3%A9.pdf"}, "bail signé.pdf"),
        ({"Content-Disposition": ["attachment; filename=lease.pdf"]}, "lease.pdf"),
        ({"Content-Type": 'application/pdf; name="=?utf-8?q?fiche_d=C3=A9p=C3=B4t.pdf?="'}, "fiche dépôt.pdf"),
        ({"Content-Disposition": 'attachment; filename="reçu — loyer.pdf"'}, "reçu — loyer.pdf"),
        # Apple Mail gives every attachment a Content-ID: only an image the HTML shows is left out.
        (
            {"Content-Disposition": 'attachment; filename="signed lease.pdf"', "Content-ID": "<lease@apple>"},
            "signed lease.pdf",
        ),
    ],
)
def test_mailjet_attachment_names_are_read_as_in_raw_mime(
    client: Any, services: Any, headers: dict[str, Any], name: str
) -> None:
    """Mailjet names an attachment only in its part's headers (ContentRef is `AttachmentN`)."""
    posted = payload_json("mailjet/parse.json")
    posted["Parts"][2]["Headers"] = {"Content-Type": "application/pdf", **headers}
    posted["Headers"]["Message-ID"] = f"<names-{abs(hash(name))}@example.com>"
    (summary,) = client.post("/webhooks/mailjet/inbound", json=posted, headers=basic_auth()).json["deliveries"]
    body = services.store.payload(summary["id"])["body"]
    assert name in body and "Attachment1" not in body


def test_mailjet_leaves_out_an_inline_image(client: Any, services: Any) -> None:
    posted = payload_json("mailjet/parse.json")
    posted["Parts"][2]["Headers"] = {"Content-Type": 'image/png; name="logo.png"', "Content-ID": "<logo@acme>",
                                     "Content-Disposition": 'inline; filename="logo.png"'}  # fmt: skip
    (summary,) = client.post("/webhooks/mailjet/inbound", json=posted, headers=basic_auth()).json["deliveries"]
    assert "logo.png" not in services.store.payload(summary["id"])["body"]
