"""Worst-shaped requests for every public endpoint, built to a given size: the hostile-input
suite (tests/test_hostile_endpoints.py) and its benchmark (bench/hostile.py) share them.

A *shape* is what a stranger can make expensive: markup (nesting, unclosed tags, attributes,
entities, tables) that reaches the HTML sanitiser, or structure (form fields, JSON depth and
width, MIME parts and lines) that reaches a parser. A *carrier* puts a shape where each
endpoint reads it, signed when `authenticated`, so that the request gets as far as it can.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

from tests.helpers import (
    API_TOKEN,
    SPARKPOST_TOKEN,
    basic_auth,
    mailersend_headers,
    mailgun_signature,
    mandrill_headers,
    svix_headers,
)

PAYLOADS = Path(__file__).parent / "payloads"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MANDRILL_URL = "http://localhost/webhooks/mandrill/inbound"


def _repeat(unit: bytes, size: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    return head + unit * max(1, (size - len(head) - len(tail)) // len(unit)) + tail


# Markup that reaches the sanitiser: an email's HTML part ------------------------------------

MARKUP: dict[str, Callable[[int], bytes]] = {
    "nested-divs": lambda n: _repeat(b"<div>", n),
    "unclosed-mix": lambda n: _repeat(b"<p><b><i><a href=x><span>", n),
    "many-attributes": lambda n: _repeat(b" a=1", n, b"<div", b">x</div>"),
    "huge-attribute": lambda n: _repeat(b"x", n, b'<a title="', b'">x</a>'),
    "entity-flood": lambda n: _repeat(b"&amp;&nbsp;", n, b"<p>", b"</p>"),
    "deep-table": lambda n: _repeat(b"<table><tr><td>", n),
}

# Structure that reaches a parser --------------------------------------------------------------

STRUCTURE = ("field-flood", "percent-flood", "deep-json", "wide-json", "many-parts", "long-lines", "many-headers")


def mime_message(html: bytes = b"<p>hi</p>", *, extra_headers: bytes = b"", body: bytes | None = None) -> bytes:
    head = (
        b"From: Renter <renter@example.com>\r\nTo: leasing@acme-living.com\r\nSubject: hostile\r\n"
        b"Message-ID: <hostile@example.com>\r\nMIME-Version: 1.0\r\n" + extra_headers
    )
    if body is not None:
        return head + body
    return head + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html


def mime_structure(shape: str, size: int) -> bytes | None:
    if shape == "many-parts":
        part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
        return mime_message(
            body=b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + _repeat(part, size, tail=b"--b--\r\n")
        )
    if shape == "long-lines":
        return mime_message(body=b"Content-Type: text/plain\r\n\r\n" + _repeat(b"x", size))
    if shape == "many-headers":
        return mime_message(extra_headers=_repeat(b"X-A: b\r\n", size))
    if shape == "field-flood":  # addresses: the field a MIME message floods
        return mime_message(extra_headers=b"Cc: " + _repeat(b"a@b.c,", size) + b"\r\n")
    return None


# Carriers ---------------------------------------------------------------------------------------


def _fixture(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text())


def _form(fields: list[tuple[str, bytes]]) -> bytes:
    return b"&".join(quote_from_bytes(k.encode(), safe="").encode() + b"=" + quote_from_bytes(v, safe="").encode()
                     for k, v in fields)  # fmt: skip


def _json_structure(shape: str, size: int) -> Any:
    """A JSON value of about `size` bytes in the worst shape, as a raw fragment."""
    if shape == "deep-json":
        return _repeat(b"[", size)
    if shape == "wide-json":
        return _repeat(b"{},", size, b"[", b"{}]")
    if shape == "field-flood":
        return _repeat(b'"a",', size, b"[", b'"a"]')
    return None


@dataclass(frozen=True)
class Endpoint:
    path: str
    #: (markup or None, structure shape or None, size, authenticated) -> Flask test-client kwargs
    build: Callable[[bytes | None, str | None, int, bool], dict[str, Any] | None]
    #: Whether a signed request can be built here (SNS needs a certificate server).
    signable: bool = True


def _basic(authenticated: bool) -> dict[str, str]:
    return basic_auth() if authenticated else {}


def _json_carrier(
    path: str, fixture: str, place: Callable[[Any, str], None], sign: Callable[[bytes, bool], dict[str, str]]
) -> Endpoint:
    """A JSON provider: `place` writes the markup (as text) into the fixture; a structure shape
    replaces one field's value with the raw fragment."""

    def build(markup: bytes | None, shape: str | None, size: int, authenticated: bool) -> dict[str, Any] | None:
        document = _fixture(fixture)
        if markup is not None:
            place(document, markup.decode())
            data = json.dumps(document).encode()
        else:
            fragment = _json_structure(shape or "", size)
            if fragment is None:
                return None
            data = b'{"hostile": ' + fragment + b', "rest": ' + json.dumps(document).encode() + b"}"
        return {"data": data, "content_type": JSON, "headers": sign(data, authenticated)}

    return Endpoint(path, build)


def _mime_build(markup: bytes | None, shape: str | None, size: int, authenticated: bool) -> dict[str, Any] | None:
    raw = mime_message(markup) if markup is not None else mime_structure(shape or "", size)
    if raw is None:
        return None
    return {"data": raw, "content_type": "message/rfc822", "headers": _basic(authenticated)}


def _multipart(fields: list[tuple[str, bytes]]) -> bytes:
    """multipart/form-data with the boundary BOUNDARY: values are sent as they are, unescaped."""
    parts = [b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="' + k.encode() + b'"\r\n\r\n' + v + b"\r\n"
             for k, v in fields]  # fmt: skip
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


BOUNDARY = b"hostile-boundary"
MULTIPART = "multipart/form-data; boundary=" + BOUNDARY.decode()


def _form_fields(
    markup: bytes | None, shape: str | None, size: int, names: tuple[str, str]
) -> list[tuple[str, bytes]] | None:
    """The provider's HTML field (`names[0]`) or text field (`names[1]`), or a flood of fields."""
    if markup is not None:
        return [(names[0], markup)]
    if shape == "field-flood":
        return [("a", b"")] * max(1, size // 3)
    if shape == "long-lines":
        return [(names[1], _repeat(b"x", size))]
    if shape == "percent-flood":  # a `%` that starts no escape, over and over, sent unescaped
        return [(names[1], _repeat(b"%", size))]
    return None


def _form_request(fields: list[tuple[str, bytes]], shape: str | None, headers: dict[str, str]) -> dict[str, Any]:
    """A field flood urlencoded (3 bytes a field), a `%` flood urlencoded as it is, anything
    else as multipart."""
    if shape == "field-flood":
        return {"data": _form(fields), "content_type": FORM, "headers": headers}
    if shape == "percent-flood":
        *rest, (name, flood) = fields
        return {"data": _form(rest) + b"&" + name.encode() + b"=" + flood, "content_type": FORM, "headers": headers}
    return {"data": _multipart(fields), "content_type": MULTIPART, "headers": headers}


def _sendgrid(markup: bytes | None, shape: str | None, size: int, authenticated: bool) -> dict[str, Any] | None:
    fields = _form_fields(markup, shape, size, ("html", "text"))
    if fields is None:
        return None
    base = [
        ("from", b"Renter <renter@example.com>"),
        ("to", b"leasing@acme-living.com"),
        ("subject", b"hi"),
        ("envelope", b'{"from":"renter@example.com","to":["leasing@acme-living.com"]}'),
        ("headers", b"From: renter@example.com\r\nTo: leasing@acme-living.com\r\nMessage-ID: <h@x.io>\r\n"),
    ]
    return _form_request(base + fields, shape, _basic(authenticated))


def _mailgun_inbound(markup: bytes | None, shape: str | None, size: int, authenticated: bool) -> dict[str, Any] | None:
    fields = _form_fields(markup, shape, size, ("body-html", "body-plain"))
    if fields is None:
        return None
    signature = mailgun_signature() if authenticated else {"timestamp": "1", "token": "t", "signature": "0" * 64}
    base = [("sender", b"renter@example.com"), ("recipient", b"leasing@acme-living.com"), ("subject", b"hostile"),
            ("from", b"renter@example.com"), ("Message-Id", b"<h@example.com>"),
            ("message-headers", b'[["From", "renter@example.com"], ["To", "leasing@acme-living.com"]]')]  # fmt: skip
    base += [(k, v.encode()) for k, v in signature.items()]
    return _form_request(base + fields, shape, {})


def _mailgun_events(markup: bytes | None, shape: str | None, size: int, authenticated: bool) -> dict[str, Any] | None:
    fragment = _json_structure(shape or "", size) if markup is None else json.dumps(markup.decode()).encode()
    if fragment is None:
        return None
    signature = mailgun_signature() if authenticated else {"timestamp": "1", "token": "t", "signature": "0" * 64}
    data = (
        b'{"signature": '
        + json.dumps(signature).encode()
        + b', "event-data": {"event": "delivered", "hostile": '
        + fragment
        + b"}}"
    )
    return {"data": data, "content_type": JSON, "headers": {}}


def _mandrill(markup: bytes | None, shape: str | None, size: int, authenticated: bool) -> dict[str, Any] | None:
    if markup is None and shape not in ("field-flood", "percent-flood"):
        fragment = _json_structure(shape or "", size)
        if fragment is None:
            return None
        events = fragment.decode()
    elif shape == "percent-flood":
        if authenticated:
            return None  # no signature covers a `%` that starts no escape: it is refused unread
        events = "[]"
    elif markup is not None:
        fixture = _fixture("mandrill/inbound-events.json")

        def events_with(html: bytes) -> str:
            fixture[0]["msg"]["html"] = html.decode()
            return json.dumps(fixture)

        # Urlencoded, "<" is sent as "%3C": as much markup as makes a post of about `size` bytes.
        sample = markup[: size // 3]
        encoded = len(_form([("mandrill_events", events_with(sample).encode())]))
        events = events_with(markup[: int(len(sample) * size / encoded)])
    else:
        data = _form([("a", b"")] * max(1, size // 3))
        return {"data": data, "content_type": FORM, "headers": {}}
    params = {"mandrill_events": events}
    if shape == "percent-flood":  # the events, then a field of unescaped `%` (no signature covers it)
        data = _form([("mandrill_events", b"[]")]) + b"&a=" + _repeat(b"%", size)
        return {"data": data, "content_type": FORM, "headers": {"X-Mandrill-Signature": "AAAA"}}
    headers = mandrill_headers(MANDRILL_URL, params) if authenticated else {"X-Mandrill-Signature": "AAAA"}
    return {"data": _form([("mandrill_events", events.encode())]), "content_type": FORM, "headers": headers}


def _ses(markup: bytes | None, shape: str | None, size: int, authenticated: bool) -> dict[str, Any] | None:
    if markup is not None:
        event = _fixture("ses/received-event.json")
        event["content"] = base64.b64encode(mime_message(markup[: size * 3 // 4 - 4096])).decode()
        event["receipt"]["action"]["encoding"] = "BASE64"
        # Signed by a certificate from a host that is not SNS's: refused without a fetch.
        notification = {**_fixture("ses/notification.json"), "SigningCertURL": "https://example.com/cert.pem"}
        data = json.dumps({**notification, "Message": json.dumps(event)}).encode()
    else:
        fragment = _json_structure(shape or "", size)
        if fragment is None:
            return None
        data = b'{"Type": "Notification", "x": ' + fragment + b"}"
    return {"data": data, "content_type": "text/plain", "headers": {"x-amz-sns-message-type": "Notification"}}


def _svix(data: bytes, authenticated: bool) -> dict[str, str]:
    return (
        svix_headers(data)
        if authenticated
        else {"svix-id": "msg_1", "svix-timestamp": "1", "svix-signature": "v1,AAAA"}
    )


def _set(*path: Any) -> Callable[[Any, str], None]:
    def place(document: Any, value: str) -> None:
        for key in path[:-1]:
            document = document[key]
        document[path[-1]] = value

    return place


def _sparkpost_place(document: Any, value: str) -> None:
    content = document[1]["msys"]["relay_message"]["content"]
    content["email_rfc822"] = base64.b64encode(mime_message(value.encode())).decode()
    content["email_rfc822_is_base64"] = True


ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in [
        Endpoint("/webhooks/sendgrid/inbound", _sendgrid),
        Endpoint("/webhooks/mailgun/inbound", _mailgun_inbound),
        Endpoint("/webhooks/mailgun/events", _mailgun_events),
        _json_carrier("/webhooks/postmark/inbound", "postmark/inbound.json", _set("HtmlBody"), lambda d, a: _basic(a)),
        _json_carrier("/webhooks/postmark/outbound", "postmark/delivery.json", _set("Details"), lambda d, a: _basic(a)),
        Endpoint("/webhooks/ses", _ses, signable=False),
        _json_carrier(
            "/webhooks/sparkpost/inbound",
            "sparkpost/relay.json",
            _sparkpost_place,
            lambda d, a: {"X-MessageSystems-Webhook-Token": SPARKPOST_TOKEN} if a else {},
        ),  # fmt: skip
        Endpoint("/webhooks/mandrill/inbound", _mandrill),
        _json_carrier("/webhooks/mailjet/inbound", "mailjet/parse.json", _set("Html-part"), lambda d, a: _basic(a)),
        _json_carrier(
            "/webhooks/brevo/inbound", "brevo/inbound.json", _set("items", 0, "RawHtmlBody"), lambda d, a: _basic(a)
        ),  # fmt: skip
        _json_carrier("/webhooks/brevo/events", "brevo/delivered.json", _set("subject"), lambda d, a: _basic(a)),
        _json_carrier("/webhooks/resend", "resend/received.json", _set("data", "subject"), _svix),
        _json_carrier(
            "/webhooks/mailersend/inbound",
            "mailersend/inbound.json",
            _set("data", "html"),
            lambda d, a: mailersend_headers(d) if a else {"Signature": "0" * 64},
        ),  # fmt: skip
        Endpoint("/webhooks/mime", _mime_build),
    ]
}


def api_request(shape: str, size: int, authenticated: bool) -> dict[str, Any] | None:
    """`/v1/messages` (the partner API) with a hostile body."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"} if authenticated else {}
    fragment = _json_structure(shape, size)
    if fragment is None:
        return None
    return {"data": b'{"prospectId": "P1", "hostile": ' + fragment + b"}", "content_type": JSON, "headers": headers}


def sign_in_request(shape: str, size: int) -> dict[str, Any] | None:
    """The console's sign-in form, flooded (it is open to everyone)."""
    fields = _form_fields(None, shape, size, ("html", "text"))
    if fields is None:
        return None
    if shape == "percent-flood":
        return {"data": _form([("name", b"x"), ("password", b"y")]) + b"&text=" + fields[0][1],
                "content_type": FORM, "headers": {}}  # fmt: skip
    return {"data": _form([("name", b"x"), ("password", b"y"), *fields]), "content_type": FORM, "headers": {}}


def cases(size: int) -> list[tuple[str, str, bool, Callable[[], dict[str, Any] | None]]]:
    """Every (endpoint, shape, authenticated, build) that applies, for `size`-byte shapes."""
    found = []
    for path, endpoint in ENDPOINTS.items():
        for authenticated in (False, True) if endpoint.signable else (False,):
            for name, markup in MARKUP.items():
                found.append(
                    (
                        path,
                        name,
                        authenticated,
                        lambda e=endpoint, m=markup, a=authenticated: e.build(m(size), None, size, a),
                    )
                )
            for shape in STRUCTURE:
                found.append(
                    (path, shape, authenticated, lambda e=endpoint, s=shape, a=authenticated: e.build(None, s, size, a))
                )
    for authenticated in (False, True):
        for shape in STRUCTURE:
            found.append(
                ("/v1/messages", shape, authenticated, lambda s=shape, a=authenticated: api_request(s, size, a))
            )
    for shape in STRUCTURE:
        found.append(("/console/sign-in", shape, False, lambda s=shape: sign_in_request(s, size)))
    return found
