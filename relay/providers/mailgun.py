"""Mailgun: route `forward()` posts and event webhooks, both signed with the webhook signing key."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from email.message import Message
from typing import Any, ClassVar

from flask import Request

from relay.config import Settings
from relay.errors import MAILGUN_CHALLENGE, MalformedPayload, ProviderUnavailable, Unauthorized
from relay.headers import decode_header_pairs, filename_of
from relay.message import TRUNCATED_HEADERS, Attachment, Email, Ignored, Metadata, PendingFetch, build_email
from relay.mime import parse_mime
from relay.providers.base import (
    FORM_BODY,
    JSON_BODY,
    Form,
    WebhookProvider,
    any_secret_matches,
    as_dict,
    as_str,
    form_value,
    read_form,
    request_json,
    signature_fields,
)
from relay.providers.fetch import allowed_fetch_url, fetch_json
from relay.sender_auth import from_mailgun, vouched_by
from relay.spam import from_flag
from relay.untrusted_json import loads

#: Mailgun user variables that carry explicit routing metadata (SPEC §5.5).
USER_VARIABLES = {
    "knock_prospect_id": "prospect_id",
    "knock_agent_username": "agent_username",
    "knock_message_type": "message_type",
}
# Files arrive as attachment-1, attachment-2, ... next to the attachment-count field.
MAILGUN_AUTHENTICATION = (
    "Mailgun's signature in the body (`timestamp`, `token`, `signature`; under `signature` for events): "
    "HMAC-SHA256 with MAILGUN_WEBHOOK_SIGNING_KEY (a comma list, for rotation), recent, and each token accepted once."
)
ATTACHMENT_FIELD = re.compile(r"^attachment-\d+$")
#: Largest event post read: an event describes a message (headers, envelope, a few kilobytes of
#: user variables) and never carries its content. Larger bodies are refused unread (413).
EVENT_MAX_BODY_BYTES = 2 * 1024 * 1024
#: The form fields of a route forward that its signature is made of.
SIGNATURE_FIELDS = frozenset({"timestamp", "token", "signature"})
#: Digits a Unix time in seconds has (ten until the year 2286); anything longer is no timestamp.
_TIMESTAMP_DIGITS = 12


def unix_seconds(value: str) -> int | None:
    """A signed `timestamp` as a number, when it is one written in ASCII digits: `float` would
    also read `nan` (never stale), `1e3`, ` 123` and `１２３`, none of which Mailgun sends."""
    if not value or len(value) > _TIMESTAMP_DIGITS or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def check_signature(timestamp: Any, token: Any, signature: Any, settings: Settings) -> None:
    """Raise Unauthorized unless `signature` is HMAC-SHA256(signing key, timestamp + token) and recent."""
    keys = settings.mailgun_webhook_signing_keys
    if not keys:
        if settings.insecure_webhooks:
            return
        raise Unauthorized(
            "webhook signing is not configured (MAILGUN_WEBHOOK_SIGNING_KEY)", challenge=MAILGUN_CHALLENGE
        )
    timestamp, token, signature = (str(v) if v else "" for v in (timestamp, token, signature))
    if not (timestamp and token and signature):
        raise Unauthorized("missing Mailgun signature", challenge=MAILGUN_CHALLENGE)
    signed = (timestamp + token).encode()
    expected = [hmac.new(key.encode(), signed, hashlib.sha256).hexdigest().encode() for key in keys]
    if not any_secret_matches(signature.strip().lower().encode(), expected):
        raise Unauthorized("wrong Mailgun signature", challenge=MAILGUN_CHALLENGE)
    seconds = unix_seconds(timestamp)
    if seconds is None:
        raise Unauthorized("malformed Mailgun timestamp", challenge=MAILGUN_CHALLENGE)
    # Mailgun retries for 8 hours with the original signature, so the window must be generous.
    if abs(time.time() - seconds) > settings.signature_max_age_seconds:
        raise Unauthorized("stale Mailgun signature", challenge=MAILGUN_CHALLENGE)


def signed_replay_token(signature: Any) -> str | None:
    """The replay token of a signed call: its signature, not its `token`. Mailgun signs
    `timestamp + token` with nothing between, so `<ts>e0` with the token less its leading `e0`
    signs the same text with a new token; the signature (what the check compared, lowercased)
    is the same for every such split."""
    text = str(signature).strip().lower() if signature else ""
    return text or None


def metadata_from_variables(variables: Any) -> Metadata:
    if not isinstance(variables, dict):
        return Metadata()
    values = {
        field: str(variables[name]).strip()
        for name, field in USER_VARIABLES.items()
        if isinstance(variables.get(name), str | int) and str(variables[name]).strip()
    }
    return Metadata(**values)


def with_user_variables(email: Email) -> Email:
    """Route posts carry the route's user variables as an X-Mailgun-Variables JSON header, and
    Mailgun's SPF and DKIM verdicts as X-Mailgun-Spf and X-Mailgun-Dkim-Check-Result, and its spam
    filter's as X-Mailgun-Sflag and X-Mailgun-Sscore."""
    raw = email.header("x-mailgun-variables")
    try:
        variables = loads(raw) if raw else None
    except ValueError:
        variables = None
    complete = TRUNCATED_HEADERS not in email.truncated
    return replace(
        email,
        metadata=email.metadata.merged(metadata_from_variables(variables)),
        sender_auth=from_mailgun(email.headers, email.envelope_from, email.sender, complete),
        content_verdict=from_flag(email.header("x-mailgun-sflag"), email.header("x-mailgun-sscore"), "X-Mailgun-Sflag"),
    )


def timestamp_of(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def file_name(filename: str | None) -> str | None:
    """An `attachment-N` part's file name as raw MIME reads one: the form parser read RFC 2231
    (`filename*=UTF-8''…`) and UTF-8 already, and a name that arrives as the message wrote it in
    RFC 2047 words (`=?UTF-8?B?…?=`, as many mailers write names) is decoded here."""
    if not filename or "=?" not in filename:
        return filename
    part = Message()
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return filename_of(part) or filename


class MailgunRouteProvider(WebhookProvider):
    """`forward("https://…/webhooks/mailgun/inbound")` from a Mailgun route."""

    name = "mailgun"
    path = "/webhooks/mailgun/inbound"
    summary = "Mailgun route forward: parsed fields, or `body-mime` when the URL ends in `mime`"
    authentication = MAILGUN_AUTHENTICATION
    media_types = FORM_BODY
    # Mailgun stops retrying only on 200 or 406: a signed but unreadable post must not come back for 8 hours.
    malformed_status: ClassVar[int] = 406

    def _signature(self, request: Request) -> Form:
        """The signature's fields alone: the rest of the form is read once the post is verified."""
        try:
            return signature_fields(request, SIGNATURE_FIELDS)
        except MalformedPayload:
            return {}

    def verify_request(self, request: Request, settings: Settings) -> None:
        form = self._signature(request)
        check_signature(
            form_value(form, "timestamp"), form_value(form, "token"), form_value(form, "signature"), settings
        )

    def replay_token(self, request: Request) -> str | None:
        return signed_replay_token(form_value(self._signature(request), "signature"))

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        form = read_form(request)
        envelope_to = [a.strip() for a in (form_value(form, "recipient") or "").split(",") if a.strip()]
        common: dict[str, Any] = {
            "envelope_to": envelope_to,
            "envelope_from": form_value(form, "sender"),
            "provider_timestamp": timestamp_of(form_value(form, "timestamp")),
        }
        mime = form.get("body-mime")
        if mime:
            return [with_user_variables(parse_mime(mime[0].data, limits=settings.parse_limits, **common))]

        raw_headers = form_value(form, "message-headers")
        if raw_headers is None:
            raise MalformedPayload("neither message-headers nor body-mime in the post")
        try:
            listed = loads(raw_headers)
            pairs = [(str(name), str(value)) for name, value in listed]
        except (ValueError, TypeError) as exc:
            raise MalformedPayload("message-headers must be a JSON list of [name, value] pairs") from exc
        attachments = [
            Attachment(
                file_name(part.filename) or name, len(part.data), part.content_type or "application/octet-stream"
            )
            for name, parts in form.items()
            if ATTACHMENT_FIELD.match(name)
            for part in parts
        ]
        email = build_email(
            limits=settings.parse_limits,
            headers=decode_header_pairs(pairs),
            text=form_value(form, "body-plain"),
            html=form_value(form, "body-html"),
            attachments=attachments,
            message_id=form_value(form, "Message-Id"),
            **common,
        )
        return [with_user_variables(email)]


class MailgunEventProvider(WebhookProvider):
    """Mailgun's event webhook: `delivered` logs the stored message as outbound; other events are ignored."""

    name = "mailgun"
    path = "/webhooks/mailgun/events"
    summary = "Mailgun event webhook: `delivered` logs the sent message, fetched from Mailgun's storage"
    authentication = MAILGUN_AUTHENTICATION
    media_types = JSON_BODY
    malformed_status: ClassVar[int] = 406
    # An event names the message (headers, envelope, user variables), never its content.
    max_body_bytes: ClassVar[int | None] = EVENT_MAX_BODY_BYTES

    def _signature(self, request: Request) -> dict[str, Any]:
        # Flask caches the parsed body, so verify, replay check and parse read it once.
        return as_dict(as_dict(request.get_json(force=True, silent=True)).get("signature"))

    def verify_request(self, request: Request, settings: Settings) -> None:
        signature = self._signature(request)
        check_signature(signature.get("timestamp"), signature.get("token"), signature.get("signature"), settings)

    def replay_token(self, request: Request) -> str | None:
        return signed_replay_token(self._signature(request).get("signature"))

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored | PendingFetch]:
        event = as_dict(request_json(request).get("event-data"))
        if not as_str(event.get("event")):
            raise MalformedPayload("event-data with an event name is required")
        headers = as_dict(as_dict(event.get("message")).get("headers"))
        message_id = as_str(headers.get("message-id"))
        subject = as_str(headers.get("subject")) or ""
        if event["event"] != "delivered":
            return [Ignored(f"mailgun event {event['event'][:40]}", message_id, subject)]

        stated_url = as_str(as_dict(event.get("storage")).get("url"))
        if not stated_url:
            raise MalformedPayload("delivered event without storage.url")
        url = allowed_fetch_url(stated_url, settings.mailgun_storage_origins)
        if url is None:
            raise MalformedPayload("storage.url is outside RELAY_MAILGUN_STORAGE_ORIGINS")
        # Mailgun does not retry delivery notifications: the event is stored now and the message
        # fetched by the worker, with retries (Mailgun keeps stored messages for days).
        recipient = as_str(event.get("recipient"))
        spec = {
            "url": url,
            "recipient": recipient,
            "timestamp": event.get("timestamp") if isinstance(event.get("timestamp"), int | float) else None,
            "variables": as_dict(event.get("user-variables")),
            "messageId": message_id,
        }
        return [PendingFetch(STORED_MESSAGE, spec, message_id, subject)]


#: The kind of PendingFetch a `delivered` event leaves for the worker.
STORED_MESSAGE = "mailgun-stored-message"


def email_from_storage(spec: dict[str, Any], settings: Settings) -> Email:
    """The worker's half of a `delivered` event: fetch the stored message and read it.

    Raises ProviderUnavailable (retry later) or MalformedPayload (gone or unreadable: give up).
    """
    url = allowed_fetch_url(str(spec.get("url") or ""), settings.mailgun_storage_origins)
    if url is None:  # the allow-list changed since the event was accepted
        raise MalformedPayload("storage.url is outside RELAY_MAILGUN_STORAGE_ORIGINS")
    recipient = as_str(spec.get("recipient"))
    email = parse_mime(
        fetch_stored_message(url, settings),
        limits=settings.parse_limits,
        envelope_to=[recipient] if recipient else [],
        provider_timestamp=timestamp_of(spec.get("timestamp")),
        metadata=metadata_from_variables(spec.get("variables")),
        message_id=as_str(spec.get("messageId")),
    )
    # Mail the account sent through Mailgun's API: Mailgun's record of it vouches for its sender.
    return replace(email, sender_auth=vouched_by("sent through Mailgun"))


def fetch_stored_message(url: str, settings: Settings) -> bytes:
    """The stored message's MIME; ProviderUnavailable when Mailgun should retry the event later."""
    if not settings.mailgun_api_key:
        raise ProviderUnavailable("MAILGUN_API_KEY is not configured; cannot fetch the stored message")
    stored = fetch_json(
        url,
        what="stored message",
        limit=settings.max_request_bytes,
        auth=("api", settings.mailgun_api_key),
        headers={"Accept": "message/rfc2822"},
    )
    mime = stored.get("body-mime")
    if not isinstance(mime, str) or not mime:
        raise MalformedPayload("stored message has no body-mime")
    return mime.encode("utf-8", "surrogateescape")
