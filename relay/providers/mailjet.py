"""`POST /webhooks/mailjet/inbound`: Mailjet's Parse API (parsed JSON, no raw MIME) behind basic auth."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from flask import Request

from relay.addresses import mailbox_addresses
from relay.config import Settings
from relay.errors import MalformedPayload
from relay.headers import filename_of
from relay.message import Attachment, Email, Ignored, build_email
from relay.providers.base import (
    JSON_BODY,
    BasicAuthProvider,
    as_dict,
    as_list,
    as_str,
    base64_size,
    headers_from_mapping,
    inline_image,
    request_json,
)
from relay.sender_auth import from_trusted_headers
from relay.spam import from_score

#: Mailjet's own date stamp, `20171012T013104` (UTC).
_STAMP = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})$")
#: Headers the relay builds from Mailjet's top-level fields rather than copying.
_OWN = ("from", "subject")


def parse_stamp(value: str | None) -> datetime | None:
    match = _STAMP.match(value or "")
    if not match:
        return None
    try:
        year, month, day, hour, minute, second = map(int, match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


def _part_headers(part: dict[str, Any]) -> Message:
    """A part's `Headers` as a MIME header block (a value may be a string or a list of them)."""
    headers = Message()
    for name, value in list(as_dict(part.get("Headers")).items())[:50]:
        values = value if isinstance(value, list) else [value]
        for each in values[:5]:
            if isinstance(name, str) and isinstance(each, str) and "\n" not in each and "\r" not in each:
                headers[name] = each[:4096]
    return headers


def _attachments(body: dict[str, Any]) -> list[Attachment]:
    """Parts whose content is an `AttachmentN` field, sized from the base64 text."""
    found = []
    for part in map(as_dict, as_list(body.get("Parts"))):
        ref = as_str(part.get("ContentRef")) or ""
        if not ref.startswith("Attachment"):
            continue
        headers = _part_headers(part)
        content_type = headers.get_content_type() if headers.get("content-type") else None
        if inline_image(content_type, headers.get("content-id"), headers.get("content-disposition")):
            continue  # an image the HTML shows, not an attachment
        content = as_str(body.get(ref)) or ""
        found.append(
            Attachment(
                filename_of(headers) or ref,  # RFC 2231 and RFC 2047 names read as in raw MIME
                base64_size(content),
                content_type or "application/octet-stream",
            )
        )
    return found


class MailjetParseProvider(BasicAuthProvider):
    name = "mailjet"
    path = "/webhooks/mailjet/inbound"
    summary = "Mailjet Parse API (JSON: `Headers`, `Text-part`, `Html-part`, attachments in base64)"
    media_types = JSON_BODY

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        body = request_json(request)
        sender = as_str(body.get("From")) or as_str(body.get("Sender"))
        if not sender or not any(mailbox_addresses([sender])):
            raise MalformedPayload("From is required")
        headers = [("From", sender), ("Subject", as_str(body.get("Subject")) or "")]
        headers += headers_from_mapping(body.get("Headers"), skip=_OWN)
        recipient = as_str(body.get("Recipient"))
        if recipient and not any(name.lower() == "to" for name, _ in headers):
            headers.append(("To", recipient))
        email = build_email(
            limits=settings.parse_limits,
            headers=headers,
            text=as_str(body.get("Text-part")),
            html=as_str(body.get("Html-part")),
            attachments=_attachments(body),
            envelope_to=[recipient] if recipient else [],
            envelope_from=as_str(body.get("Sender")),
            provider_timestamp=parse_stamp(as_str(body.get("Date"))),
        )
        # Mailjet's Parse API gives no verdict of its own: only a receiving server the operator trusts can.
        verdict = from_trusted_headers(email.headers, email.envelope_from, email.sender, settings.trusted_authserv_ids)
        spam = from_score(body.get("SpamAssassinScore"), "mailjet SpamAssassinScore")
        return [replace(email, sender_auth=verdict, content_verdict=spam)]
