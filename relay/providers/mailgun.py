"""Mailgun: route `forward()` posts and event webhooks, both signed with the webhook signing key."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload, ProviderUnavailable, Unauthorized
from relay.message import Attachment, Email, Ignored, Metadata, build_email, decode_header_pairs, parse_mime
from relay.providers.base import (
    Form,
    WebhookProvider,
    as_dict,
    as_str,
    form_value,
    json_object,
    read_form,
    request_json,
)

#: Mailgun user variables that carry explicit routing metadata (SPEC §5.5).
USER_VARIABLES = {
    "knock_prospect_id": "prospect_id",
    "knock_agent_username": "agent_username",
    "knock_message_type": "message_type",
}
STORAGE_FETCH_TIMEOUT_SECONDS = 10
# Files arrive as attachment-1, attachment-2, ... next to the attachment-count field.
ATTACHMENT_FIELD = re.compile(r"^attachment-\d+$")


def signature_problem(timestamp: str, token: str, signature: str, settings: Settings) -> str | None:
    """Why a Mailgun signature is not acceptable, or None when it is."""
    key = settings.mailgun_webhook_signing_key
    if not key:
        return None if settings.insecure_webhooks else "webhook signing is not configured (MAILGUN_WEBHOOK_SIGNING_KEY)"
    if not (timestamp and token and signature):
        return "missing Mailgun signature"
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        return "wrong Mailgun signature"
    try:
        age = time.time() - float(timestamp)
    except ValueError:
        return "malformed Mailgun timestamp"
    # Mailgun retries for 8 hours with the original signature, so the window must be generous.
    if abs(age) > settings.signature_max_age_seconds:
        return "stale Mailgun signature"
    return None


def metadata_from_variables(variables: Any) -> Metadata:
    if not isinstance(variables, dict):
        return Metadata()
    values = {
        field: str(variables[name]).strip()
        for name, field in USER_VARIABLES.items()
        if isinstance(variables.get(name), str | int) and str(variables[name]).strip()
    }
    return Metadata(**values)


def timestamp_of(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def origin_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """`scheme://host[:port]` of `url` against the allow-list, where `*.` matches any subdomain."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if not host or parts.username or parts.password:
        return False
    for origin in allowed:
        scheme, _, rest = origin.partition("://")
        pattern, _, allowed_port = rest.partition(":")
        if parts.scheme != scheme or (str(port or "") != allowed_port):
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


class MailgunRouteProvider(WebhookProvider):
    """`forward("https://…/webhooks/mailgun/inbound")` from a Mailgun route."""

    name = "mailgun"
    path = "/webhooks/mailgun/inbound"
    # Mailgun stops retrying only on 200 or 406: a signed but unreadable post must not come back for 8 hours.
    malformed_status: ClassVar[int] = 406

    def _form(self, request: Request) -> Form:
        try:
            return read_form(request)
        except MalformedPayload:
            return {}

    def verify_request(self, request: Request, settings: Settings) -> None:
        form = self._form(request)
        problem = signature_problem(
            form_value(form, "timestamp") or "",
            form_value(form, "token") or "",
            form_value(form, "signature") or "",
            settings,
        )
        if problem:
            raise Unauthorized(problem)

    def replay_token(self, request: Request) -> str | None:
        return form_value(self._form(request), "token")

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
            email = parse_mime(mime[0].data, **common)
            user_metadata = metadata_from_variables(_loads(email.header("x-mailgun-variables")))
            return [replace(email, metadata=email.metadata.merged(user_metadata))]

        raw_headers = form_value(form, "message-headers")
        if raw_headers is None:
            raise MalformedPayload("neither message-headers nor body-mime in the post")
        try:
            listed = json.loads(raw_headers)
            pairs = [(str(name), str(value)) for name, value in listed]
        except (ValueError, TypeError) as exc:
            raise MalformedPayload("message-headers must be a JSON list of [name, value] pairs") from exc
        headers = decode_header_pairs(pairs)
        variables = next((v for n, v in headers if n.lower() == "x-mailgun-variables"), None)
        attachments = [
            Attachment(part.filename or name, len(part.data), part.content_type or "application/octet-stream")
            for name, parts in form.items()
            if ATTACHMENT_FIELD.match(name)
            for part in parts
        ]
        return [
            build_email(
                headers=headers,
                text=form_value(form, "body-plain"),
                html=form_value(form, "body-html"),
                attachments=attachments,
                message_id=form_value(form, "Message-Id"),
                metadata=metadata_from_variables(_loads(variables)),
                **common,
            )
        ]


class MailgunEventProvider(WebhookProvider):
    """Mailgun's event webhook: `delivered` logs the stored message as outbound; other events are ignored."""

    name = "mailgun"
    path = "/webhooks/mailgun/events"
    malformed_status: ClassVar[int] = 406

    def _signature(self, request: Request) -> dict[str, Any]:
        # Flask caches the parsed body, so verify, replay check and parse read it once.
        return as_dict(as_dict(request.get_json(force=True, silent=True)).get("signature"))

    def verify_request(self, request: Request, settings: Settings) -> None:
        signature = self._signature(request)
        problem = signature_problem(
            str(signature.get("timestamp") or ""),
            str(signature.get("token") or ""),
            str(signature.get("signature") or ""),
            settings,
        )
        if problem:
            raise Unauthorized(problem)

    def replay_token(self, request: Request) -> str | None:
        token = self._signature(request).get("token")
        return str(token) if token else None

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        event = as_dict(request_json(request).get("event-data"))
        if not as_str(event.get("event")):
            raise MalformedPayload("event-data with an event name is required")
        headers = as_dict(as_dict(event.get("message")).get("headers"))
        message_id = as_str(headers.get("message-id"))
        subject = as_str(headers.get("subject")) or ""
        if event["event"] != "delivered":
            return [Ignored(f"mailgun event {event['event'][:40]}", message_id, subject)]

        url = as_str(as_dict(event.get("storage")).get("url"))
        if not url:
            raise MalformedPayload("delivered event without storage.url")
        if not origin_allowed(url, settings.mailgun_storage_origins):
            raise MalformedPayload("storage.url is outside RELAY_MAILGUN_STORAGE_ORIGINS")
        raw = fetch_stored_message(url, settings)
        recipient = as_str(event.get("recipient"))
        email = parse_mime(
            raw,
            envelope_to=[recipient] if recipient else [],
            provider_timestamp=timestamp_of(event.get("timestamp")),
            metadata=metadata_from_variables(event.get("user-variables")),
            message_id=message_id,
        )
        return [email]


def fetch_stored_message(url: str, settings: Settings) -> bytes:
    """The stored message's MIME; ProviderUnavailable when Mailgun should retry the event later."""
    if not settings.mailgun_api_key:
        raise ProviderUnavailable("MAILGUN_API_KEY is not configured; cannot fetch the stored message")
    try:
        response = requests.get(
            url,
            auth=("api", settings.mailgun_api_key),
            headers={"Accept": "message/rfc2822"},
            timeout=STORAGE_FETCH_TIMEOUT_SECONDS,
            allow_redirects=False,  # a redirect could lead outside the allow-list
            stream=True,
        )
        body = response.raw.read(settings.max_request_bytes + 1, decode_content=True)
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"stored message fetch failed: {type(exc).__name__}") from exc
    if response.status_code in (404, 410):
        raise MalformedPayload(f"stored message is gone (HTTP {response.status_code})")
    if response.status_code != 200:
        raise ProviderUnavailable(f"stored message fetch answered HTTP {response.status_code}")
    if len(body) > settings.max_request_bytes:
        raise MalformedPayload("stored message is larger than RELAY_MAX_REQUEST_BYTES")
    stored = json_object(body, "stored message")
    mime = stored.get("body-mime")
    if not isinstance(mime, str) or not mime:
        raise MalformedPayload("stored message has no body-mime")
    return mime.encode("utf-8", "surrogateescape")


def _loads(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None
