"""`POST /webhooks/mime`: one raw RFC 5322 message (Postfix/Exim pipes, Cloudflare Email Workers, ...)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload
from relay.message import Email, Ignored
from relay.mime import parse_mime
from relay.providers.base import BasicAuthProvider
from relay.sender_auth import from_authentication_results
from relay.spam import from_spam_headers

ACCEPTED_CONTENT_TYPES = ("message/rfc822", "application/octet-stream", "text/plain")


def utf8_header(value: str) -> str:
    """A header value as the UTF-8 its client sent; as read when it is not UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


class RawMimeProvider(BasicAuthProvider):
    name = "mime"
    path = "/webhooks/mime"
    summary = "One raw RFC 5322 message from your own MTA or an email worker"
    media_types: ClassVar[dict[str, dict[str, Any]]] = {
        media_type: {"type": "string", "format": "binary"} for media_type in ACCEPTED_CONTENT_TYPES
    }

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored]:
        if request.mimetype and request.mimetype not in ACCEPTED_CONTENT_TYPES:
            raise MalformedPayload(f"expected Content-Type message/rfc822, got {request.mimetype}")
        # Envelope recipients, when the MTA passes them (e.g. Postfix's ${recipient}), as headers;
        # UTF-8 addresses (RFC 6531) arrive as their bytes, which the server reads as Latin-1.
        envelope_to = [utf8_header(v) for v in request.headers.getlist("X-Envelope-To") if v]
        envelope_from = request.headers.get("X-Envelope-From")
        envelope_from = utf8_header(envelope_from) if envelope_from else None
        email = parse_mime(
            request.get_data(cache=True),
            limits=settings.parse_limits,
            envelope_to=envelope_to,
            envelope_from=envelope_from,
        )
        # Only the operator's own MTA can vouch for the sender, through Authentication-Results.
        verdict = from_authentication_results(email.headers, email.sender, settings.trusted_authserv_ids)
        # Your MTA's spam filter (SpamAssassin, rspamd in its SpamAssassin-style headers) writes its
        # verdict at the top, over any a sender wrote (SpamAssassin removes those): the first counts.
        spam = from_spam_headers(email.header("x-spam-flag"), email.header("x-spam-status"))
        return [replace(email, sender_auth=verdict, content_verdict=spam)]
