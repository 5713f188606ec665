"""`POST /webhooks/mailersend/inbound`: MailerSend inbound routes (`inbound.message`), signed per route.

The sender is judged by MailerSend's `spf_check` (its `code` an SPF qualifier, for the envelope
sender `data.sender.email`) and `dkim_check`, or a trusted receiving server's headers.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload, Unauthorized
from relay.message import TRUNCATED_HEADERS, Email, Ignored
from relay.mime import parse_mime
from relay.providers.base import (
    JSON_BODY,
    WebhookProvider,
    any_secret_matches,
    as_dict,
    as_list,
    as_str,
    request_json,
    require_secrets,
)
from relay.sender_auth import from_mailersend, from_trusted_headers, strongest
from relay.spam import NO_VERDICT, ContentVerdict

CHALLENGE = 'MailerSend-HMAC-SHA256 realm="knock-relay webhooks"'


class MailerSendInboundProvider(WebhookProvider):
    name = "mailersend"
    path = "/webhooks/mailersend/inbound"
    summary = "MailerSend inbound route (`inbound.message`, the raw message in `data.raw`)"
    authentication = (
        "`Signature` header: hex HMAC-SHA256 of the exact body with the route's signing secret "
        "(RELAY_MAILERSEND_SIGNING_SECRETS, a list for rotation)."
    )
    media_types = JSON_BODY

    def verify_request(self, request: Request, settings: Settings) -> None:
        secrets = settings.mailersend_signing_secrets
        if not require_secrets(secrets, "RELAY_MAILERSEND_SIGNING_SECRETS", settings, CHALLENGE):
            return
        presented = request.headers.get("Signature", "").strip().lower().encode()
        # The bytes as received: re-serialised JSON would not match what MailerSend signed.
        body = request.get_data(cache=True)
        expected = [hmac.new(s.encode(), body, hashlib.sha256).hexdigest().encode() for s in secrets]
        if not presented or not any_secret_matches(presented, expected):
            raise Unauthorized("missing or wrong MailerSend signature", challenge=CHALLENGE)

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        body = request_json(request)
        kind = as_str(body.get("type"))
        if not kind:
            raise MalformedPayload("type is required")
        data = as_dict(body.get("data"))
        if kind != "inbound.message":
            return [Ignored(f"mailersend event {kind[:40]}", None, as_str(data.get("subject")) or "")]
        raw = as_str(data.get("raw"))
        if not raw:
            raise MalformedPayload("data.raw (the message) is required")
        recipients = as_dict(data.get("recipients"))
        envelope_to = [
            address
            for entry in map(as_dict, as_list(recipients.get("rcptTo")))
            if (address := as_str(entry.get("email")))
        ]
        email = parse_mime(
            raw.encode("utf-8", "surrogateescape"),
            limits=settings.parse_limits,
            envelope_to=envelope_to,
            envelope_from=as_str(as_dict(data.get("sender")).get("email")),
        )
        complete = TRUNCATED_HEADERS not in email.truncated
        own = from_mailersend(as_str(as_dict(data.get("spf_check")).get("code")), data.get("dkim_check"),
                              email.envelope_from, email.sender, email.headers, complete)  # fmt: skip
        trusted = from_trusted_headers(email.headers, email.envelope_from, email.sender, settings.trusted_authserv_ids)
        flagged = data.get("is_spam")
        spam = ContentVerdict(spam=flagged, source=f"mailersend is_spam {str(flagged).lower()}")
        return [
            replace(
                email,
                sender_auth=strongest(own, trusted),
                content_verdict=spam if isinstance(flagged, bool) else NO_VERDICT,
            )
        ]
