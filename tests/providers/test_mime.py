"""`POST /webhooks/mime`: raw RFC 5322 behind basic auth."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from relay.app import create_app
from tests.helpers import basic_auth, delivery, mime, post_mime
from tests.webhook_cases import CarriesMimeAttachments, WebhookCases

AUTH = {"valid": basic_auth(), "missing": {}, "wrong": basic_auth(password="guess")}


class TestRawMimeWebhook(CarriesMimeAttachments, WebhookCases):
    path = "/webhooks/mime"
    expected = ("unmatched", None, "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"data": mime(), "content_type": "message/rfc822", "headers": AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"data": b"\x00\x01 not an email", "content_type": "message/rfc822", "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"data": mime(body="x" * size), "content_type": "message/rfc822", "headers": basic_auth()}

    def carrying(self, raw: bytes) -> dict[str, Any]:
        return {"data": raw, "content_type": "message/rfc822", "headers": basic_auth()}


def test_rotated_credentials_both_work_during_rotation(client: Any) -> None:
    first = client.post(
        "/webhooks/mime",
        data=mime(message_id="<a@x>"),
        content_type="message/rfc822",
        headers=basic_auth("old", "rotated-out"),
    )
    second = client.post(
        "/webhooks/mime", data=mime(message_id="<b@x>"), content_type="message/rfc822", headers=basic_auth()
    )
    assert (first.status_code, second.status_code) == (200, 200)


def test_unconfigured_authentication_refuses_everyone(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_WEBHOOK_BASIC_AUTH="")).test_client()
    response = client.post("/webhooks/mime", data=mime(), content_type="message/rfc822", headers=basic_auth())
    assert response.status_code == 401
    assert "not configured" in response.json["error"]


def test_insecure_mode_accepts_unauthenticated_posts(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_WEBHOOK_BASIC_AUTH="", RELAY_INSECURE_WEBHOOKS="true")).test_client()
    assert client.post("/webhooks/mime", data=mime(), content_type="message/rfc822").status_code == 200


def test_wrong_content_type_is_400(client: Any) -> None:
    response = client.post("/webhooks/mime", json={"email": "x"}, headers=basic_auth())
    assert response.status_code == 400


def test_body_without_length_is_cut_at_the_cap(client: Any, settings: Any) -> None:
    """A chunked upload carries no Content-Length; reading stops at the cap with a 413."""
    big = mime(body="x" * (settings.max_request_bytes + 10))
    response = client.post(
        "/webhooks/mime",
        input_stream=io.BytesIO(big),
        content_type="message/rfc822",
        headers={**basic_auth(), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=st.one_of(
        st.binary(max_size=2000),
        st.text(max_size=500).map(
            lambda t: ("From: a@b.c\r\nSubject: " + t + "\r\n\r\n" + t).encode("utf-8", "surrogatepass")
        ),
    )
)
def test_no_body_produces_a_5xx(client: Any, raw: bytes) -> None:
    response = client.post("/webhooks/mime", data=raw, content_type="message/rfc822", headers=basic_auth())
    assert response.status_code < 500, response.json


def test_dedup_claim_lasts_the_configured_window(make_settings: Any, redis_client: Any) -> None:
    client = create_app(make_settings(RELAY_DEDUP_TTL_SECONDS="120")).test_client()
    client.post("/webhooks/mime", data=mime(), content_type="message/rfc822", headers=basic_auth())
    (claim,) = redis_client.keys("relay:dedup:*")
    assert 110 < redis_client.ttl(claim) <= 120


def test_remote_images_are_listed_on_the_record(client: Any) -> None:
    raw = (
        mime(body="x")
        .replace(b"text/plain", b"text/html")
        .replace(b"\r\n\r\nx", b'\r\n\r\n<p>Hi</p><img src="https://cdn.example.com/banner.png"><img src="cid:logo">')
    )
    response = post_mime(client, raw)
    shown = delivery(client, response.json["deliveries"][0]["id"])
    assert shown["remoteImages"] == ["https://cdn.example.com/banner.png"]


def test_a_utf8_envelope_recipient_is_read_as_utf8(client: Any) -> None:
    """An MTA passes `jörg+prospect-…` as its UTF-8 bytes (RFC 6531); the server reads header bytes
    as Latin-1, and the relay reads them back as UTF-8: the reply tag routes the email."""
    recipient = "jörg+prospect-4WXU6U2J@reply.acme-living.com"
    as_sent = recipient.encode("utf-8").decode("latin-1")  # what the WSGI server hands the app
    headers = {**basic_auth(), "X-Envelope-To": as_sent}
    answer = post_mime(client, mime(sender="new@example.com", message_id="<utf8-envelope@example.com>"), headers)
    assert answer.status_code == 200, answer.json
    (first,) = answer.json["deliveries"]
    assert first["prospectId"] == "4WXU6U2J"
    assert recipient in delivery(client, first["id"])["recipients"]
