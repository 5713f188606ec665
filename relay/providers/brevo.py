"""Brevo: inbound parsing (`POST /webhooks/brevo/inbound`) and transactional `delivered` events
(`POST /webhooks/brevo/events`), whose sent message the worker fetches from Brevo's API."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from flask import Request

from relay.addresses import format_address
from relay.config import Settings
from relay.errors import MalformedPayload, ProviderUnavailable, Unauthorized
from relay.message import Email, Ignored, PendingFetch, build_email
from relay.providers.base import (
    JSON_BODY,
    BasicAuthProvider,
    any_secret_matches,
    as_dict,
    as_list,
    as_str,
    bearer_token,
    body_digest,
    event_batch,
    headers_from_mapping,
    listed_attachments,
    request_json,
)
from relay.providers.fetch import api_url, fetch_json
from relay.sender_auth import from_trusted_headers, vouched_by
from relay.spam import from_score

#: The kind of PendingFetch a `delivered` event leaves for the worker.
SENT_EMAIL = "brevo-sent-email"
_ADDRESS_HEADERS = ("from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id")


def _address(entry: Any) -> str | None:
    entry = as_dict(entry)
    address = as_str(entry.get("Address"))
    return format_address(as_str(entry.get("Name")), address) if address else None


def _addresses(entries: Any) -> str:
    return ", ".join(a for a in map(_address, as_list(entries)) if a)


class BrevoAuth(BasicAuthProvider):
    """Brevo calls a webhook with basic auth in its URL or with a bearer token it is given."""

    security: ClassVar[tuple[str, ...]] = ("basic", "bearer")
    # Brevo discards a webhook answered with any 5xx (or a 4xx but 429) and retries 429: four more
    # tries, 10 min, 1 h, 2 h and 8 h later.
    retry_status: ClassVar[int] = 429
    authentication: ClassVar[str] = (
        "HTTP basic auth (RELAY_WEBHOOK_BASIC_AUTH) in the URL, or `Authorization: Bearer` with one of "
        "RELAY_BREVO_WEBHOOK_TOKENS."
    )

    def verify_request(self, request: Request, settings: Settings) -> None:
        presented = bearer_token(request.headers.get("Authorization"))
        if presented is not None and settings.brevo_webhook_tokens:
            if not any_secret_matches(presented.encode(), [t.encode() for t in settings.brevo_webhook_tokens]):
                raise Unauthorized("wrong bearer token")
            return
        super().verify_request(request, settings)


class BrevoInboundProvider(BrevoAuth):
    name = "brevo"
    path = "/webhooks/brevo/inbound"
    summary = 'Brevo inbound parsing webhook (`{"items": [...]}`, several messages per post)'
    media_types = JSON_BODY

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        items = event_batch(request_json(request).get("items"), "items must be a list")
        return [_inbound_item(as_dict(item), index, settings) for index, item in enumerate(items)]


def _inbound_item(item: dict[str, Any], index: int, settings: Settings) -> Email:
    sender = _address(item.get("From"))
    if not sender:
        raise MalformedPayload(f"items[{index}].From.Address is required")
    headers = [("From", sender), ("Subject", as_str(item.get("Subject")) or "")]
    for name, field in (("To", "To"), ("Cc", "Cc"), ("Bcc", "Bcc")):
        value = _addresses(item.get(field))
        if value:
            headers.append((name, value))
    reply_to = _address(item.get("ReplyTo"))
    if reply_to:
        headers.append(("Reply-To", reply_to))
    if as_str(item.get("SentAtDate")):
        headers.append(("Date", item["SentAtDate"]))
    headers += headers_from_mapping(item.get("Headers"), skip=_ADDRESS_HEADERS)
    if as_str(item.get("InReplyTo")) and not any(name.lower() == "in-reply-to" for name, _ in headers):
        headers.append(("In-Reply-To", item["InReplyTo"]))  # its own field, for threads
    attachments = listed_attachments(item.get("Attachments"))
    email = build_email(
        limits=settings.parse_limits,
        headers=headers,
        text=as_str(item.get("RawTextBody")),
        html=as_str(item.get("RawHtmlBody")),
        attachments=attachments,
        message_id=as_str(item.get("MessageId")),
        envelope_to=[r for r in map(as_str, as_list(item.get("Recipients"))) if r],
    )
    # Brevo's inbound parsing gives no verdict of its own: only a receiving server the operator trusts can.
    verdict = from_trusted_headers(email.headers, email.envelope_from, email.sender, settings.trusted_authserv_ids)
    return replace(email, sender_auth=verdict, content_verdict=from_score(item.get("SpamScore"), "brevo SpamScore"))


class BrevoEventProvider(BrevoAuth):
    name = "brevo"
    path = "/webhooks/brevo/events"
    summary = "Brevo transactional webhook: `delivered` logs the sent message, fetched from Brevo's API"
    media_types = JSON_BODY

    def replay_token(self, request: Request) -> str | None:
        # The content is fetched later, so the Message-ID cannot catch a retry here: the post itself does.
        return body_digest(request)

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored | PendingFetch]:
        event = request_json(request)
        name = as_str(event.get("event"))
        if not name:
            raise MalformedPayload("event is required")
        message_id = as_str(event.get("message-id"))
        subject = as_str(event.get("subject")) or ""
        if name != "delivered":
            return [Ignored(f"brevo event {name[:40]}", message_id, subject)]
        if not message_id:
            raise MalformedPayload("a delivered event needs its message-id")
        spec = {
            "messageId": message_id,
            "recipient": as_str(event.get("email")),
            "timestamp": event.get("ts_epoch") if isinstance(event.get("ts_epoch"), int) else None,
        }
        return [PendingFetch(SENT_EMAIL, spec, message_id, subject)]


def email_from_brevo(spec: dict[str, Any], settings: Settings) -> Email:
    """The worker's half of a `delivered` event: find the email's uuid by Message-ID, then its content."""
    if not settings.brevo_api_key:
        raise ProviderUnavailable("BREVO_API_KEY is not configured; cannot fetch the sent message")
    message_id = str(spec.get("messageId") or "")
    headers = {"api-key": settings.brevo_api_key, "Accept": "application/json"}
    limit = settings.max_request_bytes
    listed = fetch_json(
        api_url(settings.brevo_api_url, "v3", "smtp", "emails") + "?messageId=" + quote(message_id, safe=""),
        what="Brevo email list",
        limit=limit,
        headers=headers,
    )
    found = [e for e in as_list(listed.get("transactionalEmails")) if as_str(as_dict(e).get("uuid"))]
    if not found:
        raise MalformedPayload("Brevo has no sent email with that message-id")
    summary = as_dict(found[0])
    content = fetch_json(
        api_url(settings.brevo_api_url, "v3", "smtp", "emails", summary["uuid"]),
        what="Brevo email content",
        limit=limit,
        headers=headers,
    )
    sender = as_str(summary.get("from")) or as_str(content.get("from"))
    if not sender:
        raise MalformedPayload("Brevo did not say who sent the email")
    recipient = as_str(content.get("email")) or as_str(spec.get("recipient"))
    sent = as_str(content.get("date")) or as_str(summary.get("date"))
    timestamp = spec.get("timestamp")
    return replace(
        build_email(
            limits=settings.parse_limits,
            headers=[("From", sender), ("To", recipient or ""), ("Subject", as_str(content.get("subject")) or "")],
            html=as_str(content.get("body")),
            message_id=message_id,
            provider_timestamp=_parse_iso(sent)
            or (datetime.fromtimestamp(timestamp / 1000, tz=UTC) if isinstance(timestamp, int) else None),
        ),
        sender_auth=vouched_by("sent through Brevo"),
    )


def _parse_iso(value: str | None) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value or "")
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None
