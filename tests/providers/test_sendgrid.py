"""`POST /webhooks/sendgrid/inbound`: Inbound Parse, parsed and raw modes, behind basic auth."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import BEARER, SENDGRID_FORM, basic_auth, payload
from tests.webhook_cases import CarriesAttachments, CarriesMimeAttachments, WebhookCases

AUTH = {"valid": basic_auth(), "missing": {}, "wrong": basic_auth(password="guess")}
PARSED = "sendgrid/parsed-three-charsets.form"
RAW = "sendgrid/raw-mode.form"


def post(client: Any, name: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/webhooks/sendgrid/inbound", data=payload(name), content_type=SENDGRID_FORM, headers=headers or basic_auth()
    )


def stored(client: Any, services: Any, response: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    assert response.status_code == 200, response.json
    delivery_id = response.json["deliveries"][0]["id"]
    shown = client.get(f"/v1/deliveries/{delivery_id}", headers=BEARER).json
    return shown, services.store.payload(delivery_id)


class TestSendGridWebhook(CarriesAttachments, WebhookCases):
    attachment_names = ("payslip.pdf",)
    path = "/webhooks/sendgrid/inbound"
    expected = ("queued", "SG777", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"data": payload(PARSED), "content_type": SENDGRID_FORM, "headers": AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"data": b"--xYzZY\r\nnot a form", "content_type": SENDGRID_FORM, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"data": payload(PARSED) + b"x" * size, "content_type": SENDGRID_FORM, "headers": basic_auth()}


def raw_mode_form(raw: bytes) -> bytes:
    """A raw-mode post ('POST the raw, full MIME message') carrying `raw`."""
    envelope = {"to": ["leasing+prospect-4WXU6U2J@reply.acme-living.com"], "from": "renter@example.com"}
    fields = {"email": raw, "envelope": json.dumps(envelope).encode(), "SPF": b"pass"}
    parts = [b'--xYzZY\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
             for name, value in fields.items()]  # fmt: skip
    return b"".join(parts) + b"--xYzZY--\r\n"


class TestSendGridRawModeAttachments(CarriesMimeAttachments):
    path = "/webhooks/sendgrid/inbound"

    def carrying(self, raw: bytes) -> dict[str, Any]:
        return {"data": raw_mode_form(raw), "content_type": SENDGRID_FORM, "headers": basic_auth()}


def test_parsed_mode_decodes_each_part_with_its_own_charset(client: Any, services: Any) -> None:
    shown, body = stored(client, services, post(client, PARSED))
    assert body["subject"] == "Café – tour on Friday"  # windows-1252, from the RFC 2047 header
    assert body["body"].startswith('<div dir="ltr"><p>Здравствуйте! Квартира свободна?</p>')  # koi8-r html
    assert "<script" not in body["body"]
    assert shown["messageId"] == "CAN8Ek2sgPK1ZyTz2sMtxdDt3VnqTf9yXfjdF=ZDC_gjvSWanwQ@mail.gmail.com"
    assert shown["sentTime"] == "2016-07-27T20:53:03.000Z"
    # The reply tag of the recipient names the prospect; the sender is unknown.
    assert (shown["prospectId"], shown["type"]) == ("SG777", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")


def test_parsed_mode_text_part_in_its_charset(client: Any, services: Any) -> None:
    form = payload(PARSED)
    without_html = form.replace(b'name="html"', b'name="html-ignored"')
    response = client.post(
        "/webhooks/sendgrid/inbound", data=without_html, content_type=SENDGRID_FORM, headers=basic_auth()
    )
    _, body = stored(client, services, response)
    assert body["body"].startswith("Dzień dobry, czy mieszkanie jest dostępne? Źródło: ogłoszenie.")  # iso-8859-2


def test_parsed_mode_lists_attachments_but_not_inline_images(client: Any, services: Any) -> None:
    _, body = stored(client, services, post(client, PARSED))
    assert "payslip.pdf (75 B)" in body["body"]
    assert "logo.png" not in body["body"]


def test_raw_mode_reads_the_full_mime_message(client: Any, services: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    shown, body = stored(client, services, post(client, RAW))
    assert (shown["prospectId"], shown["type"]) == ("P1", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert body["subject"] == "Your application – next steps"
    # Quoted-printable HTML decoded, soft line break joined, cid: image gone.
    assert "Please sign the lease – it’s attached." in body["body"]
    assert "cid:" not in body["body"] and 'href="https://acme-living.com/sign"' in body["body"]
    assert "lease.pdf (78 B)" in body["body"]


def test_envelope_recipients_count(client: Any) -> None:
    """The BCC'd relay address appears only in the envelope; it is on the leasing side, not a prospect."""
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    response = post(client, RAW)
    assert [d["prospectId"] for d in response.json["deliveries"]] == ["P1"]


def test_post_with_neither_headers_nor_email_is_400(client: Any) -> None:
    form = payload(RAW).replace(b'name="email"', b'name="emale"')
    response = client.post("/webhooks/sendgrid/inbound", data=form, content_type=SENDGRID_FORM, headers=basic_auth())
    assert response.status_code == 400 and "neither headers" in response.json["error"]


def test_urlencoded_post_is_read_too(client: Any, services: Any) -> None:
    data = {"headers": "From: a@example.com\nTo: leasing@acme-living.com\nSubject: hi\n", "text": "hello"}
    response = client.post("/webhooks/sendgrid/inbound", data=data, headers=basic_auth())
    _, body = stored(client, services, response)
    assert body["body"] == "hello"
