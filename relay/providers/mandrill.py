"""`POST /webhooks/mandrill/inbound`: Mandrill (Mailchimp Transactional) inbound routes and message events.

Both post `mandrill_events`, a JSON array of up to 1,000 events, signed with the
webhook's key over the exact URL Mandrill was given. `inbound` events carry the
raw message; `send` events name a sent message whose content the worker fetches.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from flask import Request

from relay.addresses import format_address
from relay.config import Settings
from relay.errors import MalformedPayload, ProviderUnavailable, Unauthorized
from relay.message import TRUNCATED_HEADERS, Email, Ignored, PendingFetch, build_email
from relay.mime import parse_mime
from relay.providers.base import (
    FormPart,
    WebhookProvider,
    any_secret_matches,
    as_dict,
    as_str,
    body_digest,
    event_batch,
    headers_from_mapping,
    read_form,
    require_secrets,
    unquoted_pieces,
    urlencoded_spans,
)
from relay.providers.fetch import api_url, fetch_answer
from relay.sender_auth import SenderAuth, from_mandrill, from_trusted_headers, strongest, vouched_by
from relay.spam import from_score
from relay.untrusted_json import check_shape, loads, loads_checked

CHALLENGE = 'Mandrill-HMAC-SHA1 realm="knock-relay webhooks"'
SENT_MESSAGE = "mandrill-sent-message"
_OWN_HEADERS = ("from", "to", "cc", "subject", "message-id")


def mandrill_signatures(keys: Iterable[str], url: str, fields: Iterable[tuple[str, Iterable[bytes]]]) -> list[bytes]:
    """For each key, the base64 HMAC-SHA1 of the URL followed by every POST key and value, sorted by
    key (Mandrill sorts them so; the order they arrive in is not what it signed). A value comes as
    pieces of its bytes and is signed as its UTF-8 text (undecodable bytes as U+FFFD), a piece at a
    time: a value of many megabytes is never held twice to check a signature."""
    macs = [hmac.new(key.encode(), url.encode(), hashlib.sha1) for key in keys]

    def feed(data: bytes) -> None:
        for mac in macs:
            mac.update(data)

    for name, pieces in sorted(fields, key=lambda field: field[0]):
        feed(name.encode())
        text = codecs.getincrementaldecoder("utf-8")("replace")
        for piece in pieces:
            feed(text.decode(piece).encode())
        feed(text.decode(b"", final=True).encode())
    return [base64.b64encode(mac.digest()) for mac in macs]


def signed_fields(request: Request) -> list[tuple[str, Iterable[bytes]]]:
    """The post's fields as `mandrill_signatures` reads them, without copying their values: Mandrill
    posts a urlencoded form and nothing else (MalformedPayload otherwise)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise MalformedPayload(f"Mandrill posts urlencoded forms, not {request.mimetype or 'no content type'}")
    body = request.get_data(cache=True)
    return [(span.name, unquoted_pieces(body, span)) for span in urlencoded_spans(body)]


def signed_url(request: Request, settings: Settings) -> str:
    """The URL Mandrill was given: RELAY_PUBLIC_URL plus the path when the relay is behind a proxy
    that rewrites scheme or host, else the URL as this request names it."""
    base = settings.public_url or request.host_url
    return base.rstrip("/") + request.full_path.rstrip("?")


class MandrillProvider(WebhookProvider):
    name = "mandrill"
    path = "/webhooks/mandrill/inbound"
    summary = "Mandrill inbound route and message webhook (`mandrill_events`); HEAD answers 200 for Mandrill's check"
    authentication = (
        "`X-Mandrill-Signature`: base64 HMAC-SHA1, with one of RELAY_MANDRILL_WEBHOOK_KEYS, of the exact URL "
        "given to Mandrill (RELAY_PUBLIC_URL + path behind a proxy) followed by each POST key and value."
    )
    media_types: ClassVar[dict[str, dict[str, Any]]] = {
        "application/x-www-form-urlencoded": {"type": "object", "required": ["mandrill_events"]}
    }
    answers_head: ClassVar[bool] = True

    def verify_request(self, request: Request, settings: Settings) -> None:
        keys = settings.mandrill_webhook_keys
        if not require_secrets(keys, "RELAY_MANDRILL_WEBHOOK_KEYS", settings, CHALLENGE):
            return
        presented = request.headers.get("X-Mandrill-Signature", "").strip().encode()
        if not presented:
            raise Unauthorized("missing or wrong X-Mandrill-Signature", challenge=CHALLENGE)
        try:
            expected = mandrill_signatures(keys, signed_url(request, settings), signed_fields(request))
        except MalformedPayload as exc:
            raise Unauthorized("unsigned or unreadable Mandrill post", challenge=CHALLENGE) from exc
        if not presented or not any_secret_matches(presented, expected):
            raise Unauthorized("missing or wrong X-Mandrill-Signature", challenge=CHALLENGE)

    def replay_token(self, request: Request) -> str | None:
        """The signature, when there is one: Mandrill retries a batch as it was (and `send` events
        name content fetched later), but the body's bytes are not what was signed: `%41` for `A`
        re-encodes the same fields into a new body. The signature (compared exactly, in the one
        base64 spelling) is the same for every spelling of the same fields."""
        presented = request.headers.get("X-Mandrill-Signature", "").strip()
        return f"signature:{presented}" if presented else body_digest(request)

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored | PendingFetch]:
        try:
            events = _events_of(request)
        except ValueError as exc:
            raise MalformedPayload("mandrill_events is not valid JSON") from exc
        events = event_batch(events, "mandrill_events must be a JSON array")
        return [_event(as_dict(event), index, settings) for index, event in enumerate(events)]


def _events_of(request: Request) -> Any:
    """`mandrill_events` parsed: its shape checked on the posted bytes, then the bytes let go (the
    form is read for nothing else) before the text is parsed, so that the bytes, the text and the
    events are never all held at once. ValueError when it is not JSON."""
    parts = read_form(request).get("mandrill_events") or [FormPart(b"")]
    request.environ.pop("relay.form", None)
    check_shape(parts[0].data)
    text = parts[0].text()
    del parts
    return loads_checked(text)


def _event(event: dict[str, Any], index: int, settings: Settings) -> Email | Ignored | PendingFetch:
    """Each event on its own: one unreadable event is recorded as ignored, not the whole batch refused."""
    kind = as_str(event.get("event")) or ""
    msg = as_dict(event.get("msg"))
    subject = as_str(msg.get("subject")) or ""
    if kind == "inbound":
        raw = as_str(msg.get("raw_msg"))
        if not raw:
            return Ignored(f"mandrill event {index}: inbound without msg.raw_msg", None, subject)
        email_to = as_str(msg.get("email"))
        email = parse_mime(
            raw.encode("utf-8", "surrogateescape"),
            limits=settings.parse_limits,
            envelope_to=[email_to] if email_to else [],
        )
        spam = from_score(as_dict(msg.get("spam_report")).get("score"), "mandrill spam_report.score")
        return replace(email, sender_auth=_inbound_verdict(email, msg, settings), content_verdict=spam)
    if kind == "send":
        message_key = as_str(event.get("_id")) or as_str(msg.get("_id"))
        if not message_key:
            return Ignored(f"mandrill event {index}: send without _id", None, subject)
        spec = {"id": message_key, "ts": msg.get("ts") if isinstance(msg.get("ts"), int) else None}
        return PendingFetch(SENT_MESSAGE, spec, sent_message_id(message_key), subject)
    return Ignored(f"mandrill event {kind[:40] or 'without a name'}", None, subject)


def _inbound_verdict(email: Email, msg: dict[str, Any], settings: Settings) -> SenderAuth:
    """Mandrill's own `msg.dkim` and `msg.spf`, or what a receiving server the operator trusts wrote."""
    dkim, spf = as_dict(msg.get("dkim")), as_dict(msg.get("spf"))
    complete = TRUNCATED_HEADERS not in email.truncated
    own = from_mandrill(as_str(spf.get("result")), dkim.get("signed"), dkim.get("valid"), email.sender,
                        email.headers, complete)  # fmt: skip
    trusted = from_trusted_headers(email.headers, email.envelope_from, email.sender, settings.trusted_authserv_ids)
    return strongest(own, trusted)


def sent_message_id(message_key: str) -> str:
    return f"{message_key}@mandrill.sent"


def email_from_mandrill(spec: dict[str, Any], settings: Settings) -> Email:
    """The worker's half of a `send` event: `messages/content.json` for the sent message."""
    if not settings.mandrill_api_key:
        raise ProviderUnavailable("MANDRILL_API_KEY is not configured; cannot fetch the sent message")
    message_key = str(spec.get("id") or "")
    status, body = fetch_answer(
        api_url(settings.mandrill_api_url, "messages", "content.json"),
        what="Mandrill message content",
        limit=settings.max_request_bytes,
        method="POST",
        json_body={"key": settings.mandrill_api_key, "id": message_key},
    )
    try:
        found = as_dict(loads(body))
    except ValueError as exc:
        raise ProviderUnavailable(f"Mandrill answered HTTP {status} with something that is not JSON") from exc
    if status != 200:
        # Mandrill answers errors with 500 and names them: an unknown or expired message will never come.
        if found.get("name") in ("Unknown_Message", "Invalid_Key"):
            raise MalformedPayload(f"Mandrill: {found['name']}")
        raise ProviderUnavailable(f"Mandrill message content answered HTTP {status}")
    sender = as_str(found.get("from_email"))
    if not sender:
        raise MalformedPayload("Mandrill's message has no from_email")
    to = as_dict(found.get("to"))
    headers = [
        ("From", format_address(as_str(found.get("from_name")), sender)),
        ("Subject", as_str(found.get("subject")) or ""),
    ]
    if as_str(to.get("email")):
        headers.append(("To", format_address(as_str(to.get("name")), to["email"])))
    headers += headers_from_mapping(found.get("headers"), skip=_OWN_HEADERS)
    stated = next(
        (value for name, value in headers_from_mapping(found.get("headers")) if name.lower() == "message-id"), None
    )
    ts = found.get("ts") if isinstance(found.get("ts"), int) else spec.get("ts")
    email = build_email(
        limits=settings.parse_limits,
        headers=headers,
        text=as_str(found.get("text")),
        html=as_str(found.get("html")),
        # The Message-ID Mandrill sent with, so a copy that reached the relay another way is the same email.
        message_id=stated or sent_message_id(message_key),
        provider_timestamp=datetime.fromtimestamp(ts, tz=UTC) if isinstance(ts, int) else None,
    )
    return replace(email, sender_auth=vouched_by("sent through Mandrill"))
