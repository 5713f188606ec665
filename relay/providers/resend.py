"""`POST /webhooks/resend`: Resend's Svix-signed events. `email.received` (inbound) and
`email.sent` / `email.delivered` (outbound) carry metadata only; the worker fetches the content."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload, ProviderUnavailable, Unauthorized
from relay.message import Attachment, Email, Ignored, PendingFetch, build_email
from relay.providers.base import (
    JSON_BODY,
    WebhookProvider,
    any_secret_matches,
    as_dict,
    as_list,
    as_str,
    headers_from_mapping,
    inline_image,
    request_json,
    require_secrets,
)
from relay.providers.fetch import api_url, fetch_json
from relay.sender_auth import from_trusted_headers, vouched_by

CHALLENGE = 'Svix realm="knock-relay webhooks"'
#: Svix refuses timestamps further than this from now, either way.
TOLERANCE_SECONDS = 5 * 60
#: Digits a Unix time in seconds has (ten until the year 2286); anything longer is no timestamp.
_TIMESTAMP_DIGITS = 12
RECEIVED_EMAIL = "resend-received-email"
SENT_EMAIL = "resend-sent-email"
_SENT_EVENTS = ("email.sent", "email.delivered")
_OWN_HEADERS = ("from", "to", "cc", "bcc", "subject", "message-id", "reply-to")


def svix_secret(configured: str) -> bytes | None:
    """The key inside `whsec_<base64>`; None when it is not one."""
    encoded = configured.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def unix_seconds(value: str) -> int | None:
    """`svix-timestamp` as a number, when it is one written in ASCII digits. `str.isdigit` also
    says yes to `²` and `１２３`, which `int` then refuses or reads: neither is what Svix signs."""
    if not value or len(value) > _TIMESTAMP_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def svix_signatures(secret: bytes, message_id: str, timestamp: str, body: bytes) -> bytes:
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest())


class ResendProvider(WebhookProvider):
    name = "resend"
    path = "/webhooks/resend"
    summary = "Resend webhook: `email.received`, `email.sent` and `email.delivered` (content fetched by the worker)"
    authentication = (
        "Svix signature: `svix-id`, `svix-timestamp` (within 5 minutes) and `svix-signature` "
        "(`v1,<base64>` list), HMAC-SHA256 of `id.timestamp.body` with RESEND_WEBHOOK_SECRETS (`whsec_…`)."
    )
    media_types = JSON_BODY

    def verify_request(self, request: Request, settings: Settings) -> None:
        secrets = settings.resend_webhook_secrets
        if not require_secrets(secrets, "RESEND_WEBHOOK_SECRETS", settings, CHALLENGE):
            return
        message_id = request.headers.get("svix-id", "")
        timestamp = request.headers.get("svix-timestamp", "")
        seconds = unix_seconds(timestamp)
        if not message_id or seconds is None:
            raise Unauthorized("missing Svix headers, or svix-timestamp not in digits", challenge=CHALLENGE)
        if abs(time.time() - seconds) > TOLERANCE_SECONDS:
            raise Unauthorized("stale or future svix-timestamp", challenge=CHALLENGE)
        presented = [
            sig.encode()
            for version, _, sig in (p.partition(",") for p in request.headers.get("svix-signature", "").split())
            if version == "v1" and sig
        ]
        body = request.get_data(cache=True)
        keys = [key for key in map(svix_secret, secrets) if key]
        expected = [svix_signatures(key, message_id, timestamp, body) for key in keys]
        matched = False
        for signature in presented[:8]:
            matched |= any_secret_matches(signature, expected)
        if not matched:
            raise Unauthorized("missing or wrong Svix signature", challenge=CHALLENGE)

    def replay_token(self, request: Request) -> str | None:
        # Svix repeats the id when it retries a message.
        return request.headers.get("svix-id") or None

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored | PendingFetch]:
        event = request_json(request)
        kind = as_str(event.get("type"))
        data = as_dict(event.get("data"))
        if not kind:
            raise MalformedPayload("type is required")
        subject = as_str(data.get("subject")) or ""
        message_id = as_str(data.get("message_id"))
        if kind != "email.received" and kind not in _SENT_EVENTS:
            return [Ignored(f"resend event {kind[:40]}", message_id, subject)]
        email_id = as_str(data.get("email_id"))
        if not email_id:
            raise MalformedPayload("data.email_id is required")
        spec: dict[str, object] = {"emailId": email_id, "createdAt": as_str(data.get("created_at"))}
        if kind == "email.received":
            return [PendingFetch(RECEIVED_EMAIL, spec, message_id, subject)]
        # Sent mail: Resend's id stands in for the Message-ID, so `sent` and `delivered` are one email.
        return [PendingFetch(SENT_EMAIL, spec, sent_message_id(email_id), subject)]


def sent_message_id(email_id: str) -> str:
    return f"{email_id}@resend.sent"


def _get(settings: Settings, *path: str) -> dict[str, Any]:
    if not settings.resend_api_key:
        raise ProviderUnavailable("RESEND_API_KEY is not configured; cannot fetch the email")
    return fetch_json(
        api_url(settings.resend_api_url, *path),
        what="Resend email",
        limit=settings.max_request_bytes,
        headers={"Authorization": f"Bearer {settings.resend_api_key}", "Accept": "application/json"},
    )


def _attachments(entries: Any) -> list[Attachment]:
    """`attachments` ([{"filename", "content_type", "content_disposition", "content_id", "size"}])
    less the inline images the HTML shows."""
    found = []
    for a in map(as_dict, as_list(entries)):
        content_type = as_str(a.get("content_type"))
        if inline_image(content_type, as_str(a.get("content_id")), as_str(a.get("content_disposition"))):
            continue
        size = a["size"] if isinstance(a.get("size"), int) else 0
        found.append(Attachment(as_str(a.get("filename")) or "attachment", size,
                                content_type or "application/octet-stream"))  # fmt: skip
    return found


def _email_from(found: dict[str, Any], settings: Settings, message_id: str | None) -> Email:
    sender = as_str(found.get("from"))
    if not sender:
        raise MalformedPayload("Resend's email has no from")
    headers = [("From", sender), ("Subject", as_str(found.get("subject")) or "")]
    for name, field in (("To", "to"), ("Cc", "cc"), ("Bcc", "bcc")):
        addresses = [a for a in map(as_str, as_list(found.get(field))) if a]
        if addresses:
            headers.append((name, ", ".join(addresses)))
    headers += headers_from_mapping(found.get("headers"), skip=_OWN_HEADERS)
    created = as_str(found.get("created_at"))
    try:
        timestamp = datetime.fromisoformat(created.replace(" ", "T")) if created else None
    except ValueError:
        timestamp = None
    return build_email(
        limits=settings.parse_limits,
        headers=headers,
        text=as_str(found.get("text")),
        html=as_str(found.get("html")),
        attachments=_attachments(found.get("attachments")),
        message_id=message_id,
        provider_timestamp=timestamp if timestamp and timestamp.tzinfo else None,
    )


def email_from_resend_received(spec: dict[str, Any], settings: Settings) -> Email:
    found = _get(settings, "emails", "receiving", str(spec.get("emailId") or ""))
    email = _email_from(found, settings, as_str(found.get("message_id")))
    # Resend gives no verdict on received mail: only a receiving server the operator trusts can.
    verdict = from_trusted_headers(email.headers, email.envelope_from, email.sender, settings.trusted_authserv_ids)
    return replace(email, sender_auth=verdict)


def email_from_resend_sent(spec: dict[str, Any], settings: Settings) -> Email:
    email_id = str(spec.get("emailId") or "")
    email = _email_from(_get(settings, "emails", email_id), settings, sent_message_id(email_id))
    return replace(email, sender_auth=vouched_by("sent through Resend"))
