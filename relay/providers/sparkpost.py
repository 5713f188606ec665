"""`POST /webhooks/sparkpost/inbound`: SparkPost relay webhooks, several messages per post."""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace

from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload, Unauthorized
from relay.message import Email, Ignored
from relay.mime import parse_mime
from relay.providers.base import (
    JSON_BODY,
    WebhookProvider,
    any_secret_matches,
    as_dict,
    as_str,
    event_batch,
    request_json_value,
    require_secrets,
)
from relay.sender_auth import from_trusted_headers

TOKEN_HEADER = "X-MessageSystems-Webhook-Token"
CHALLENGE = 'X-MessageSystems-Webhook-Token realm="knock-relay webhooks"'


class SparkPostRelayProvider(WebhookProvider):
    name = "sparkpost"
    path = "/webhooks/sparkpost/inbound"
    summary = "SparkPost relay webhook: a JSON array of `msys.relay_message` (empty `msys` pings answer 200)"
    authentication = (
        f"`{TOKEN_HEADER}` header equal to one of RELAY_SPARKPOST_WEBHOOK_TOKENS "
        "(the relay webhook's auth token; a list for rotation)."
    )
    media_types = JSON_BODY

    def verify_request(self, request: Request, settings: Settings) -> None:
        tokens = settings.sparkpost_webhook_tokens
        if not require_secrets(tokens, "RELAY_SPARKPOST_WEBHOOK_TOKENS", settings, CHALLENGE):
            return
        presented = request.headers.get(TOKEN_HEADER, "").encode()
        if not presented or not any_secret_matches(presented, [t.encode() for t in tokens]):
            raise Unauthorized(f"missing or wrong {TOKEN_HEADER}", challenge=CHALLENGE)

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        batch = event_batch(request_json_value(request), "body must be a JSON array of events")
        emails: list[Email | Ignored] = []
        for index, event in enumerate(batch):
            message = as_dict(as_dict(as_dict(event).get("msys")).get("relay_message"))
            if not message:
                continue  # `{"msys": {}}`: SparkPost's test ping
            emails.append(_relay_message(message, index, settings))
        return emails


def _relay_message(message: dict[str, object], index: int, settings: Settings) -> Email:
    content = as_dict(message.get("content"))
    rfc822 = as_str(content.get("email_rfc822"))
    if not rfc822:
        raise MalformedPayload(f"event {index}: content.email_rfc822 is required")
    if content.get("email_rfc822_is_base64") is True:
        try:
            raw = base64.b64decode(rfc822, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise MalformedPayload(f"event {index}: content.email_rfc822 is not base64") from exc
    else:
        raw = rfc822.encode("utf-8", "surrogateescape")
    recipient = as_str(message.get("rcpt_to"))
    email = parse_mime(
        raw,
        limits=settings.parse_limits,
        envelope_to=[recipient] if recipient else [],
        envelope_from=as_str(message.get("msg_from")),
    )
    # SparkPost relays the message without a verdict: only a receiving server the operator trusts can give one.
    verdict = from_trusted_headers(email.headers, email.envelope_from, email.sender, settings.trusted_authserv_ids)
    return replace(email, sender_auth=verdict)
