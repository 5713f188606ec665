"""Postmark: the inbound webhook and the Delivery webhook (sent mail, whose content the worker
fetches from Postmark's API), both JSON behind basic auth in the webhook URL."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import Request

from relay.addresses import format_address
from relay.config import Settings
from relay.errors import MalformedPayload, ProviderUnavailable
from relay.message import Email, Ignored, ParseLimits, PendingFetch, build_email
from relay.mime import parse_mime
from relay.providers.base import (
    JSON_BODY,
    BasicAuthProvider,
    as_dict,
    as_list,
    as_str,
    body_digest,
    listed_attachments,
    request_json,
)
from relay.providers.fetch import api_url, fetch_json
from relay.sender_auth import NONE, from_authentication_results, from_received_spf, vouched_by

#: The kind of PendingFetch a Delivery webhook leaves for the worker.
SENT_MESSAGE = "postmark-sent-message"


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

        attachments = listed_attachments(body.get("Attachments"))
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


class PostmarkDeliveryProvider(BasicAuthProvider):
    name = "postmark"
    path = "/webhooks/postmark/outbound"
    summary = "Postmark Delivery webhook: logs the sent message, fetched from Postmark's API"
    media_types = JSON_BODY

    def replay_token(self, request: Request) -> str | None:
        # The content is fetched later, so the Message-ID cannot catch a retry here: the post itself does.
        return body_digest(request)

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored | PendingFetch]:
        body = request_json(request)
        record_type = as_str(body.get("RecordType"))
        if not record_type:
            raise MalformedPayload("RecordType is required")
        if record_type != "Delivery":
            return [Ignored(f"postmark {record_type[:40]} webhook")]
        message_id = as_str(body.get("MessageID"))
        if not message_id:
            raise MalformedPayload("a Delivery webhook needs its MessageID")
        # Postmark's MessageID is its own id, not the RFC Message-ID: that one comes with the details.
        spec: dict[str, object] = {"postmarkId": message_id, "recipient": as_str(body.get("Recipient"))}
        return [PendingFetch(SENT_MESSAGE, spec, None, "")]


def email_from_postmark(spec: dict[str, Any], settings: Settings) -> Email:
    """The worker's half of a Delivery webhook: the outbound message's details."""
    if not settings.postmark_server_token:
        raise ProviderUnavailable("POSTMARK_SERVER_TOKEN is not configured; cannot fetch the sent message")
    postmark_id = str(spec.get("postmarkId") or "")
    found = fetch_json(
        api_url(settings.postmark_api_url, "messages", "outbound", postmark_id, "details"),
        what="Postmark outbound message",
        limit=settings.max_request_bytes,
        headers={"X-Postmark-Server-Token": settings.postmark_server_token, "Accept": "application/json"},
    )
    email = email_from_details(found, postmark_id, settings.parse_limits)
    return replace(email, sender_auth=vouched_by("sent through Postmark"))


#: Headers the details give as fields of their own, which win over the raw source's.
_DETAIL_FIELDS = ("from", "to", "cc", "bcc", "subject")


def email_from_details(found: dict[str, Any], postmark_id: str, limits: ParseLimits) -> Email:
    """An outbound message's details (`GET /messages/outbound/{id}/details`) as the email. Pure.

    The details give From, To, Cc, Bcc, Subject and the bodies as fields, and the message's raw
    source in `Body`: its header block carries the Date and the Message-ID the recipient saw,
    which the details have no field for. So the email is sent when its Date says, as any other is,
    and `ReceivedAt` (when Postmark took it) counts only where the message has no Date."""
    sender = as_str(found.get("From"))
    if not sender:
        raise MalformedPayload("Postmark's message has no From")
    headers: list[tuple[str, str]] = [("From", sender), ("Subject", as_str(found.get("Subject")) or "")]
    for name, field in (("To", "To"), ("Cc", "Cc"), ("Bcc", "Bcc")):
        value = _addresses(found.get(field))
        if value:
            headers.append((name, value))
    for header in map(as_dict, as_list(found.get("Headers"))):
        if as_str(header.get("Name")) and isinstance(header.get("Value"), str):
            if header["Name"].lower() not in _DETAIL_FIELDS:
                headers.append((header["Name"], header["Value"]))
    source = _raw_source(as_str(found.get("Body")), limits)
    if source is not None:
        given = {name.lower() for name, _ in headers} | set(_DETAIL_FIELDS)
        headers += [(name, value) for name, value in source.headers if name not in given]
    has_message_id = any(name.lower() == "message-id" for name, _ in headers)
    attachments = listed_attachments(found.get("Attachments"))
    return build_email(
        limits=limits,
        headers=headers,
        text=as_str(found.get("TextBody")) or (source.text if source else None),
        html=as_str(found.get("HtmlBody")) or (source.html if source else None),
        attachments=attachments or (source.attachments if source else ()),
        # Without the header, Postmark's id stands in, so repeated webhooks are still one email.
        message_id=None if has_message_id else f"{postmark_id}@postmark.sent",
        provider_timestamp=_received_at(as_str(found.get("ReceivedAt"))),
    )


def _raw_source(raw: str | None, limits: ParseLimits) -> Email | None:
    """The details' `Body` (the raw message) read as MIME; None when there is none or it is no email."""
    if not raw or not raw.strip():
        return None
    try:
        return parse_mime(raw.encode("utf-8", "surrogateescape"), limits=limits)
    except MalformedPayload:
        return None


def _received_at(value: str | None) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value or "")
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None
