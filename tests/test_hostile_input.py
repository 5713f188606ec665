"""Hostile and odd input gets a clear 4xx, never a 500, and HTTP's required headers."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.providers.base import form_unquote
from tests.helpers import BEARER, basic_auth, mailgun_signature, post_mime, signed_urlencoded

DEEP = b"[" * 5_000 + b"]" * 5_000  # far past the parser's recursion limit, within the size cap


@pytest.mark.parametrize(
    ("path", "headers", "content_type", "expected"),
    [
        ("/webhooks/mailgun/events", {}, "application/json", 401),  # no signature can be read
        ("/webhooks/postmark/inbound", basic_auth(), "application/json", 400),
        ("/v1/messages", BEARER, "application/json", 400),
        ("/v1/prospects/P1", BEARER, "application/json", 400),
    ],
)
def test_deeply_nested_json_is_refused_not_a_500(
    client: Any, path: str, headers: dict[str, str], content_type: str, expected: int
) -> None:
    method = client.put if path.startswith("/v1/prospects") else client.post
    response = method(path, data=DEEP, content_type=content_type, headers=headers)
    assert response.status_code == expected, response.json
    assert response.json["error"]


def test_deep_json_inside_a_mailgun_route_field_is_a_406(client: Any) -> None:
    body = signed_urlencoded(b"message-headers=" + DEEP, mailgun_signature())
    response = client.post("/webhooks/mailgun/inbound", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 406


def test_deep_json_in_mailgun_user_variables_is_ignored(client: Any) -> None:
    headers = json.dumps([["From", "renter@example.com"], ["To", "leasing@acme-living.com"], ["Subject", "Hi"],
                          ["Message-Id", "<deep@example.com>"], ["X-Mailgun-Variables", DEEP.decode()]])  # fmt: skip
    body = urlencode({"message-headers": headers, "body-plain": "hello"}).encode()
    response = client.post(
        "/webhooks/mailgun/inbound",
        data=signed_urlencoded(body, mailgun_signature()),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200 and response.json["status"] == "unmatched"


@pytest.mark.parametrize("parameter", ["name*=utf-8''a.pdf; name*0=a", "charset*=utf-8''x; charset*0=y"])
def test_parameters_the_standard_library_cannot_decode_are_read_as_absent(
    client: Any, services: Any, parameter: str
) -> None:
    # email.utils.decode_params raises TypeError when a parameter comes both encoded and continued.
    raw = (
        b"From: renter@example.com\r\nTo: leasing@acme-living.com\r\nSubject: x\r\nMessage-ID: <odd@x>\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; "
        + parameter.encode()
        + b"\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf; "
        + parameter.encode()
        + b"\r\n\r\n%PDF\r\n--b--\r\n"
    )
    response = post_mime(client, raw)
    assert response.status_code == 200, response.json
    body = services.store.payload(response.json["deliveries"][0]["id"])["body"]
    assert body.startswith("hi") and "<li>attachment (4 B)</li>" in body


def test_405_names_the_allowed_methods(client: Any) -> None:
    response = client.get("/webhooks/mime")
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"OPTIONS", "POST"}
    assert response.json["error"]


@pytest.mark.parametrize(
    ("path", "headers", "scheme"),
    [
        ("/webhooks/mime", {}, "Basic"),
        ("/webhooks/sendgrid/inbound", basic_auth("relay", "wrong"), "Basic"),
        ("/webhooks/postmark/inbound", {}, "Basic"),
        ("/webhooks/mailgun/inbound", {}, "Mailgun-HMAC-SHA256"),
        ("/webhooks/mailgun/events", {}, "Mailgun-HMAC-SHA256"),
        ("/v1/deliveries", {"Authorization": "Bearer wrong"}, "Bearer"),
    ],
)
def test_401_carries_a_challenge(client: Any, path: str, headers: dict[str, str], scheme: str) -> None:
    method = client.get if path.startswith("/v1") else client.post
    response = method(path, data=b"x", content_type="message/rfc822", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].split(" ")[0] == scheme
    assert 'realm="' in response.headers["WWW-Authenticate"]


def test_503_says_when_to_retry(make_settings: Any) -> None:
    from relay.app import create_app

    down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    response = down.post("/webhooks/mime", data=b"From: a@b.c\r\n\r\nx", content_type="message/rfc822",
                         headers=basic_auth())  # fmt: skip
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


@settings(max_examples=3000, deadline=None)
@given(
    st.binary(max_size=40)
    | st.lists(
        st.sampled_from([b"%", b"%4", b"%41", b"%e9", b"%zz", b"+", b"=", b"\r", b"\n", b"a", b" ", b"\x00", b"\xff"]),
        max_size=20,
    ).map(b"".join)
)
def test_form_values_decode_exactly_like_the_standard_library(value: bytes) -> None:  # fmt: skip
    """The fast urlencoded decoder agrees with urllib on every input, valid or not."""
    assert form_unquote(value) == unquote_to_bytes(value.replace(b"+", b" "))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=65_536 - 8, max_value=65_536 + 4),
    st.lists(st.sampled_from([b"%", b"%4", b"%41", b"%e9", b"%zz", b"=", b"\n", b"a"]), min_size=1, max_size=12).map(
        b"".join
    ),
)
def test_form_values_with_lone_escapes_decode_alike_across_the_decoders_pieces(padding: int, tail: bytes) -> None:
    """Past 64 KiB a value with a lone `%` is decoded a piece at a time; no escape is cut in two."""
    value = b"a" * padding + tail + b"%" + b"b" * 70_000 + tail
    assert form_unquote(value) == unquote_to_bytes(value)
