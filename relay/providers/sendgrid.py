"""SendGrid Inbound Parse, parsed mode and raw mode ("POST the raw, full MIME message")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload
from relay.headers import parse_header_block
from relay.message import TRUNCATED_HEADERS, Attachment, Email, Ignored, build_email
from relay.mime import parse_mime
from relay.providers.base import FORM_BODY, BasicAuthProvider, Form, as_dict, form_value, json_object, read_form
from relay.sender_auth import from_sendgrid
from relay.spam import from_score


def envelope_of(form: Form) -> dict[str, Any]:
    """`envelope` is JSON: {"to": [...], "from": "..."}; the SMTP recipients include Bcc."""
    envelope = json_object(form_value(form, "envelope"), "envelope")
    recipients = envelope.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    sender = envelope.get("from")
    return {
        "envelope_to": [r for r in recipients or [] if isinstance(r, str)],
        "envelope_from": sender if isinstance(sender, str) else None,
    }


def attachments_of(form: Form) -> list[Attachment]:
    """Files listed in `attachment-info`; inline images (with a content-id) are not attachments."""
    info = json_object(form_value(form, "attachment-info"), "attachment-info")
    found = []
    for field, details in info.items():
        details = as_dict(details)
        if details.get("content-id"):
            continue
        parts = form.get(field, [])
        filename = details.get("filename") or details.get("name") or (parts[0].filename if parts else None) or field
        content_type = details.get("type") or "application/octet-stream"
        found.append(Attachment(str(filename), len(parts[0].data) if parts else 0, str(content_type)))
    return found


class SendGridInboundProvider(BasicAuthProvider):
    name = "sendgrid"
    path = "/webhooks/sendgrid/inbound"
    summary = "SendGrid Inbound Parse (parsed fields or, with 'POST the raw, full MIME message', `email`)"
    media_types = FORM_BODY

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        form = read_form(request)
        envelope = envelope_of(form)
        raw = form.get("email")
        if raw:
            return [with_verdict(parse_mime(raw[0].data, limits=settings.parse_limits, **envelope), form)]
        if "headers" not in form:
            raise MalformedPayload("neither headers (parsed mode) nor email (raw mode) in the post")

        charsets = {k: str(v) for k, v in json_object(form_value(form, "charsets"), "charsets").items()}
        # The raw header block keeps RFC 2047 encoded words, so it is the reliable source of
        # headers; SendGrid's own from/to/subject fields are conveniences in unnamed charsets.
        headers = parse_header_block(form_value(form, "headers", charsets.get("headers", "utf-8")) or "")
        if not any(name.lower() == "subject" for name, _ in headers) and "subject" in form:
            headers.append(("Subject", form_value(form, "subject", charsets.get("subject")) or ""))
        email = build_email(
            limits=settings.parse_limits,
            headers=headers,
            text=form_value(form, "text", charsets.get("text")),
            html=form_value(form, "html", charsets.get("html")),
            attachments=attachments_of(form),
            **envelope,
        )
        return [with_verdict(email, form)]


def with_verdict(email: Email, form: Form) -> Email:
    """SendGrid posts its SPF and DKIM verdicts beside the email, in both modes, and with spam
    checking on, a SpamAssassin score (`spam_score`)."""
    verdict = from_sendgrid(form_value(form, "SPF"), form_value(form, "dkim"), email.envelope_from, email.sender,
                            email.headers, TRUNCATED_HEADERS not in email.truncated)  # fmt: skip
    spam = from_score(form_value(form, "spam_score"), "sendgrid spam_score")
    return replace(email, sender_auth=verdict, content_verdict=spam)
