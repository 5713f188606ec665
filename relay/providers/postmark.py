"""Postmark inbound webhook (JSON), behind basic auth in the webhook URL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload
from relay.message import Attachment, Email, Ignored, build_email, format_address
from relay.providers.base import JSON_BODY, BasicAuthProvider, as_dict, as_list, as_str, request_json
from relay.sender_auth import NONE, from_authentication_results, from_received_spf


def _addresses(entries: Any) -> str:
    """`ToFull`/`CcFull` ([{"Email", "Name"}]) as one header value."""
    return ", ".join(
        format_address(as_str(e.get("Name")), e["Email"])
        for e in map(as_dict, as_list(entries))
        if as_str(e.get("Email"))
    )


class PostmarkInboundProvider(BasicAuthProvider):
    name = "postmark"
    path = "/webhooks/postmark/inbound"
    summary = "Postmark inbound webhook (JSON)"
    media_types = JSON_BODY

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        body = request_json(request)
        sender = as_dict(body.get("FromFull"))
        if not as_str(sender.get("Email")):
            raise MalformedPayload("FromFull.Email is required")

        headers: list[tuple[str, str]] = [("From", format_address(as_str(sender.get("Name")), sender["Email"]))]
        for name, field in (("To", "ToFull"), ("Cc", "CcFull"), ("Bcc", "BccFull")):
            value = _addresses(body.get(field))
            if value:
                headers.append((name, value))
        headers.append(("Subject", as_str(body.get("Subject")) or ""))
        if as_str(body.get("Date")):
            headers.append(("Date", body["Date"]))
        # `Headers` carries Message-ID; Postmark's own `MessageID` is a UUID that differs per copy,
        # so it would defeat de-duplication and is not used.
        for header in map(as_dict, as_list(body.get("Headers"))):
            if as_str(header.get("Name")) and isinstance(header.get("Value"), str):
                if header["Name"].lower() not in ("from", "to", "cc", "bcc", "subject", "date"):
                    headers.append((header["Name"], header["Value"]))

        attachments = [
            Attachment(
                as_str(a.get("Name")) or "attachment",
                a["ContentLength"] if isinstance(a.get("ContentLength"), int) else 0,
                as_str(a.get("ContentType")) or "application/octet-stream",
            )
            for a in map(as_dict, as_list(body.get("Attachments")))
            if not as_str(a.get("ContentID"))
        ]
        original = as_str(body.get("OriginalRecipient"))
        email = build_email(
            limits=settings.parse_limits,
            headers=headers,
            text=as_str(body.get("TextBody")),
            html=as_str(body.get("HtmlBody")),
            attachments=attachments,
            envelope_to=[original] if original else [],
        )
        # Postmark adds Received-SPF on receipt; a trusted Authentication-Results says more (DKIM, DMARC).
        verdict = from_authentication_results(email.headers, email.sender, settings.trusted_authserv_ids)
        if verdict.status == NONE:
            verdict = from_received_spf(email.header("received-spf"), None, email.sender)
        return [replace(email, sender_auth=verdict)]
