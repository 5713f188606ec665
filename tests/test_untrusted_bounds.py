"""What is read before a request is verified is bounded before a Python object is made: JSON by
nesting and value count, forms by field count, both in linear time."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pytest

from relay.errors import MalformedPayload
from relay.providers.base import MAX_FORM_FIELDS
from relay.untrusted_json import MAX_DEPTH, MAX_VALUES, JSONTooComplex, check_shape, loads
from tests.helpers import cpu_seconds, grows_linearly, mailgun_signature, signed_urlencoded

#: The URL Mandrill signs, as the test client names it.
MANDRILL_URL = "http://localhost/webhooks/mandrill/inbound"


def test_json_within_the_bounds_is_read() -> None:
    document = {"a": ["x" * 100_000, {"b": [1, 2, 3]}], "c": "[[[[{{{{,,,,"}
    assert loads(json.dumps(document)) == document
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(nested) == json.loads(nested)
    wide = "[" + ",".join(["0"] * (MAX_VALUES - 1)) + "]"
    assert len(loads(wide)) == MAX_VALUES - 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "nested deeper"),
        ('{"x": [' + "{}," * MAX_VALUES + "{}]}", "more than"),
        ("[" + '"a",' * (MAX_VALUES + 10) + '"a"]', "more than"),
        ("[" + "0," * (MAX_VALUES + 10) + "0]", "more than"),
    ],
)
def test_json_past_the_bounds_is_refused_before_it_is_parsed(raw: str, reason: str) -> None:
    with pytest.raises(JSONTooComplex, match=reason):
        loads(raw)


def test_brackets_and_commas_inside_strings_do_not_count() -> None:
    text = json.dumps(["[" * 1000 + "," * (MAX_VALUES + 1) + '\\"[' * 100])
    assert loads(text) == json.loads(text)


def test_escaped_quotes_cannot_hide_structure() -> None:
    # `\\"` closes the string (an escaped backslash, then the quote): the brackets after it count.
    raw = '["\\\\", ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "]"
    with pytest.raises(JSONTooComplex):
        check_shape(raw.encode())


def test_utf16_json_is_refused() -> None:
    with pytest.raises(JSONTooComplex, match="UTF-8"):
        check_shape('{"a": 1}'.encode("utf-16-le"))


@pytest.mark.parametrize(
    "unit",
    [b"[", b"{},", b'"a",', b'"\\\\",', b'"x\\"y",', b"1,"],
    ids=["deep", "objects", "strings", "escapes", "quotes", "numbers"],
)
def test_the_shape_check_is_linear(unit: bytes) -> None:
    def check(size: int) -> None:
        try:
            check_shape(b"[" + unit * (size // len(unit)) + b"]")
        except JSONTooComplex:
            pass

    assert grows_linearly(check, 2_000_000)


@pytest.mark.parametrize("unit", [b"{},", b'"a",', b"0,"], ids=["objects", "strings", "numbers"])
def test_a_flood_is_refused_for_the_price_of_counting_its_bytes(unit: bytes) -> None:
    """Refused by byte counts alone (a few passes of memchr speed), never value by value."""
    flood = b'{"x": [' + unit * 3_000_000 + b"{}]}"
    refused = cpu_seconds(lambda: pytest.raises(JSONTooComplex, check_shape, flood))
    counted = cpu_seconds(lambda: (flood.count(b'"'), flood.count(b"[")))
    assert refused < 20 * counted


def test_a_form_with_more_fields_than_any_provider_sends_is_refused_unread(make_settings: Any) -> None:
    from relay.app import create_app

    client = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=str(4 * 1024 * 1024))).test_client()
    fields = b"&".join([b"a="] * MAX_FORM_FIELDS)
    response = client.post("/webhooks/mailgun/inbound", data=signed_urlencoded(fields, mailgun_signature()),
                           content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == 401  # Mailgun's signature is in the form: unreadable is unsigned
    boundary = b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n"
    multipart = boundary * (MAX_FORM_FIELDS + 2) + b"--b--\r\n"
    response = client.post("/webhooks/sendgrid/inbound", data=multipart,
                           content_type="multipart/form-data; boundary=b", headers=_basic())  # fmt: skip
    assert response.status_code == 400 and "form fields" in response.json["error"]


def test_a_multipart_form_is_read_a_slice_at_a_time_whatever_its_size(make_settings: Any) -> None:
    from relay.app import create_app
    from relay.providers import base

    app = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=str(8 * base._MULTIPART_SLICE)))
    big = b"x" * (3 * base._MULTIPART_SLICE + 17)
    body = (
        b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\n"
        + big
        + b"\r\n--b\r\nContent-Disposition: form-data; name=c\r\n\r\nd\r\n--b--\r\n"
    )
    with app.test_request_context("/", method="POST", data=body, content_type="multipart/form-data; boundary=b"):
        from flask import request

        form = base.read_form(request)
    assert form["a"][0].data == big and form["c"][0].data == b"d"


def _basic() -> dict[str, str]:
    from tests.helpers import basic_auth

    return basic_auth()


def test_a_console_form_past_its_size_is_refused_before_it_is_read(make_settings: Any) -> None:
    from relay.app import create_app
    from relay.console import FORM_BYTES

    client = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=str(4 * 1024 * 1024))).test_client()
    flood = b"&".join([b"a="] * (FORM_BYTES // 2))
    response = client.post("/console/sign-in", data=flood, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 413
    small = client.post("/console/sign-in", data=b"name=x&password=y", content_type="application/x-www-form-urlencoded")
    assert small.status_code == 400  # read, and refused for its missing CSRF token


# A `%` that starts no escape: urllib's slowest case, refused before the form is read -------------


@pytest.mark.parametrize("unit", [b"%", b"%4", b"%zz"])
def test_form_values_decode_in_linear_time_whatever_their_escapes(unit: bytes) -> None:
    from relay.providers.base import form_unquote

    # At a million units the input and its copies are past the CPU caches at both sizes: smaller,
    # the larger run alone spills out of them and reads as superlinear on a busy machine.
    assert grows_linearly(lambda n: form_unquote(b"x" + unit * n), 1_000_000)
    assert grows_linearly(lambda n: form_unquote(b"%41" * n, strict=True), 200_000)
    with pytest.raises(MalformedPayload):
        form_unquote(b"a" + unit, strict=True)


@pytest.mark.parametrize("path", ["/webhooks/mailgun/inbound", "/webhooks/mandrill/inbound"])
def test_an_unsigned_percent_flood_is_refused_for_the_price_of_a_scan(make_settings: Any, path: str) -> None:
    from relay.app import create_app

    client = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=str(8 * 1024 * 1024))).test_client()

    def post(n: int) -> None:
        body = b"timestamp=1&token=2&signature=3&mandrill_events=%5B%5D&a=" + b"%" * n
        response = client.post(path, data=body, content_type="application/x-www-form-urlencoded",
                               headers={"X-Mandrill-Signature": "AAAA"})  # fmt: skip
        assert response.status_code == 401

    assert grows_linearly(post, 1024 * 1024)
    assert cpu_seconds(lambda: post(6 * 1024 * 1024), repeat=1) < 2  # generous: a scan takes milliseconds


def test_a_signed_mandrill_post_is_checked_a_piece_at_a_time(make_settings: Any) -> None:
    """The signature over a value of several megabytes, non-ASCII and cut across pieces, is the
    one Mandrill makes over the whole text; one changed byte anywhere makes it another."""
    from relay.app import create_app
    from relay.providers import base
    from tests.helpers import mandrill_headers

    client = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=str(16 * 1024 * 1024))).test_client()
    events = json.dumps([{"event": "inbound", "msg": {"text": "é€😀" * (base._UNQUOTE_PIECE // 3)}}])
    data = urlencode({"mandrill_events": events}).encode()
    headers = mandrill_headers(MANDRILL_URL, {"mandrill_events": events})
    posted = client.post("/webhooks/mandrill/inbound", data=data, headers=headers,
                         content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert posted.status_code == 200, posted.json
    tampered = data[:-40] + (b"A" if data[-40:-39] != b"A" else b"B") + data[-39:]
    refused = client.post("/webhooks/mandrill/inbound", data=tampered, headers=headers,
                          content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert refused.status_code == 401


def test_a_batch_of_more_events_than_any_provider_sends_is_refused(make_settings: Any) -> None:
    from relay.app import create_app
    from relay.providers.base import MAX_EVENTS_PER_POST
    from tests.helpers import mandrill_headers

    client = create_app(make_settings()).test_client()
    for count, status in ((MAX_EVENTS_PER_POST + 1, 400), (3, 200)):
        events = json.dumps([{}] * count)
        response = client.post("/webhooks/mandrill/inbound", data=urlencode({"mandrill_events": events}),
                               headers=mandrill_headers(MANDRILL_URL, {"mandrill_events": events}),
                               content_type="application/x-www-form-urlencoded")  # fmt: skip
        assert response.status_code == status, response.json
    assert (
        "events in one post"
        in client.post("/webhooks/sparkpost/inbound", json=[{}] * (MAX_EVENTS_PER_POST + 1), headers=_sparkpost()).json[
            "error"
        ]
    )


def _sparkpost() -> dict[str, str]:
    from tests.helpers import SPARKPOST_TOKEN

    return {"X-MessageSystems-Webhook-Token": SPARKPOST_TOKEN}


@pytest.mark.parametrize(
    "header",
    [b"To: " + b"(" * 1100 + b"\r\n", b"To: " + b"g:" * 1100 + b"renter@example.com;\r\n",
     b"Cc: " + b"(" * 1100 + b"x@y.z\r\n"],
)  # fmt: skip
def test_address_headers_nested_past_the_parsers_recursion_are_read_not_a_500(
    make_settings: Any, header: bytes
) -> None:
    from relay.app import create_app

    client = create_app(make_settings()).test_client()
    message = b"From: renter@example.com\r\n" + header + b"Subject: s\r\n\r\nhi\r\n"
    response = client.post("/webhooks/mime", data=message, content_type="message/rfc822", headers=_basic())
    assert response.status_code == 200, response.json
