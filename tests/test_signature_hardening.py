"""Signed webhooks: timestamps are ASCII digits and recent, replay keys come from what was signed,
and Mandrill's signature is over the fields sorted by name."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest

from relay.app import create_app
from relay.providers import PROVIDERS
from relay.queue import QUEUE_KEY
from tests.conftest import SnsSigner
from tests.helpers import (
    MAILGUN_SIGNING_KEY,
    MANDRILL_KEY,
    RESEND_SECRET,
    mandrill_headers,
    payload,
    signed_urlencoded,
    svix_headers,
)

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
RESEND = "/webhooks/resend"
ROUTE = "/webhooks/mailgun/inbound"
EVENTS = "/webhooks/mailgun/events"
MANDRILL = "/webhooks/mandrill/inbound"
MANDRILL_URL = "http://localhost" + MANDRILL
#: Timestamps that are no Unix time in ASCII digits, though `str.isdigit`, `int` or `float` take some.
NOT_DIGITS = ["²", "１２３", "nan", "inf", "1e3", " 123", "123 ", "+123", "-123", "12.5", "0x10", "1_000", "9" * 13]


def svix_signed(body: bytes, timestamp: str, msg_id: str = "msg_hardening") -> dict[str, str]:
    """Svix headers with a valid signature over whatever `timestamp` says."""
    key = base64.b64decode(RESEND_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {"svix-id": msg_id, "svix-timestamp": timestamp, "svix-signature": "v1," + base64.b64encode(digest).decode()}


def mailgun_signed(timestamp: str, token: str | None = None) -> dict[str, str]:
    """Mailgun's fields with a valid HMAC over `timestamp + token`, whatever the timestamp says."""
    token = token if token is not None else uuid.uuid4().hex
    digest = hmac.new(MAILGUN_SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def mailgun_event(name: str, signature: dict[str, str]) -> bytes:
    event = json.loads(payload(f"mailgun/{name}"))
    event["signature"] = signature
    event["event-data"]["storage"] = {"url": "https://storage-us-east4.api.mailgun.net/v3/domains/d/messages/k"}
    return json.dumps(event).encode()


def provider_at(path: str) -> Any:
    return next(p for p in PROVIDERS if p.path == path)


# Timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("timestamp", NOT_DIGITS)
def test_svix_timestamp_not_in_ascii_digits_is_401(client: Any, redis_client: Any, timestamp: str) -> None:
    body = payload("resend/received.json")
    unsigned = {"svix-id": "msg_1", "svix-timestamp": timestamp}
    for headers in (unsigned, svix_signed(body, timestamp)):
        response = client.post(RESEND, data=body, content_type=JSON, headers=headers)
        assert response.status_code == 401, (timestamp, response.json)
    assert redis_client.dbsize() == 0


def test_svix_timestamp_in_the_future_is_401_even_when_signed(client: Any, redis_client: Any) -> None:
    body = payload("resend/received.json")
    ahead = client.post(RESEND, data=body, content_type=JSON, headers=svix_headers(body, age=-(5 * 60 + 60)))
    assert ahead.status_code == 401 and redis_client.dbsize() == 0
    within = client.post(RESEND, data=body, content_type=JSON, headers=svix_headers(body, age=-120))
    assert within.status_code == 200, within.json  # a clock a little ahead is Svix's tolerance, not a refusal


@pytest.mark.parametrize("timestamp", NOT_DIGITS)
def test_mailgun_timestamp_not_in_ascii_digits_is_401(client: Any, redis_client: Any, timestamp: str) -> None:
    route = signed_urlencoded(payload("mailgun/route-parsed.urlencoded"), mailgun_signed(timestamp))
    assert client.post(ROUTE, data=route, content_type=FORM).status_code == 401, timestamp
    event = mailgun_event("event-delivered.json", mailgun_signed(timestamp))
    assert client.post(EVENTS, data=event, content_type=JSON).status_code == 401, timestamp
    assert redis_client.dbsize() == 0


# Replay keys --------------------------------------------------------------------------------


def test_a_mailgun_signature_re_split_at_e0_is_refused_and_nothing_more_is_queued(
    client: Any, redis_client: Any
) -> None:
    """`<ts>` + `e0…` and `<ts>e0` + `…` are the same HMAC input; `float` reads `<ts>e0` as `<ts>`."""
    captured = mailgun_signed(str(int(time.time())), "e0" + uuid.uuid4().hex)
    first = client.post(EVENTS, data=mailgun_event("event-delivered.json", captured), content_type=JSON)
    assert first.status_code == 200 and first.json["status"] == "queued"
    queued = redis_client.llen(QUEUE_KEY)
    re_split = {**captured, "timestamp": captured["timestamp"] + "e0", "token": captured["token"][2:]}
    again = client.post(EVENTS, data=mailgun_event("event-delivered.json", re_split), content_type=JSON)
    assert again.status_code == 401 or again.json["status"] == "duplicate", again.json
    assert redis_client.llen(QUEUE_KEY) == queued


def test_a_re_split_mailgun_signature_is_answered_as_the_replay_it_is(make_settings: Any, redis_client: Any) -> None:
    """Digits moved from the token to the timestamp sign the same text too; with a window wide
    enough to let the new timestamp through, the call is still the one already answered."""
    client = create_app(make_settings(RELAY_SIGNATURE_MAX_AGE_SECONDS=str(10**12))).test_client()
    captured = mailgun_signed(str(int(time.time())), "12" + uuid.uuid4().hex)
    first = client.post(EVENTS, data=mailgun_event("event-delivered.json", captured), content_type=JSON)
    assert first.json["status"] == "queued"
    queued = redis_client.llen(QUEUE_KEY)
    re_split = {**captured, "timestamp": captured["timestamp"] + "12", "token": captured["token"][2:]}
    again = client.post(EVENTS, data=mailgun_event("event-delivered.json", re_split), content_type=JSON)
    assert again.status_code == 200 and again.json["status"] == "duplicate", again.json
    assert again.json["deliveries"][0]["id"] == first.json["deliveries"][0]["id"]
    assert redis_client.llen(QUEUE_KEY) == queued


@pytest.mark.parametrize("path", [ROUTE, EVENTS])
def test_mailgun_replay_key_is_the_same_for_every_split_of_the_signed_text(app: Any, path: str) -> None:
    captured = mailgun_signed("1700000000", "e0" + uuid.uuid4().hex)
    re_split = {**captured, "timestamp": "1700000000e0", "token": captured["token"][2:]}
    other = mailgun_signed("1700000000", "e0" + uuid.uuid4().hex)

    def key(signature: dict[str, str]) -> str | None:
        if path == ROUTE:
            body = signed_urlencoded(payload("mailgun/route-parsed.urlencoded"), signature)
            context = app.test_request_context(path, method="POST", data=body, content_type=FORM)
        else:
            context = app.test_request_context(path, method="POST", data=json.dumps({"signature": signature}),
                                               content_type=JSON)  # fmt: skip
        with context as ctx:
            return provider_at(path).replay_token(ctx.request)  # type: ignore[no-any-return]

    assert key(captured) is not None
    assert key(captured) == key(re_split) != key(other)


def test_mandrill_post_spelled_differently_is_the_replay_it_is(client: Any, redis_client: Any) -> None:
    """`%72` for `r` is the same field to Mandrill's signature, not a new call."""
    events = json.dumps([{"event": "reject", "msg": {"subject": "bounced"}}])
    body = urlencode({"mandrill_events": events})
    headers = mandrill_headers(MANDRILL_URL, {"mandrill_events": events})
    first = client.post(MANDRILL, data=body, content_type=FORM, headers=headers)
    assert first.status_code == 200 and first.json["status"] == "ignored"
    respelled = body.replace("reject", "%72eject")
    again = client.post(MANDRILL, data=respelled, content_type=FORM, headers=headers)
    assert again.status_code == 200 and again.json["status"] == "duplicate", again.json
    assert again.json["deliveries"][0]["id"] == first.json["deliveries"][0]["id"]


def test_sns_message_id_re_split_from_the_subject_is_the_replay_it_is(make_settings: Any, sns: SnsSigner) -> None:
    """SNS joins `Name\\nvalue\\n`: a MessageId holding `\\nSubject\\n…` without a Subject signs the same."""
    client = create_app(make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin)).test_client()
    bounce = json.dumps({"notificationType": "Bounce", "mail": {"commonHeaders": {"subject": "tour"}}})
    message = sns.sign({**json.loads(payload("ses/notification.json")), "Message": bounce})
    re_split = {k: v for k, v in message.items() if k != "Subject"}
    re_split["MessageId"] = f"{message['MessageId']}\nSubject\n{message['Subject']}"

    def post(body: dict[str, Any]) -> Any:
        return client.post("/webhooks/ses", data=json.dumps(body), content_type="text/plain",
                           headers={"x-amz-sns-message-type": "Notification"})  # fmt: skip

    first = post(message)
    assert first.status_code == 200 and first.json["status"] == "ignored"
    again = post(re_split)
    assert again.status_code == 200 and again.json["status"] == "duplicate", again.json


# Mandrill's field order ---------------------------------------------------------------------


def test_mandrill_signature_is_over_the_fields_sorted_by_name_not_as_they_arrive(client: Any) -> None:
    events = json.dumps([{"event": "reject", "msg": {}}])
    fields = [("zz_extra", "last by name, first to arrive"), ("mandrill_events", events)]
    body = urlencode(fields)
    sorted_signature = mandrill_headers(MANDRILL_URL, dict(fields))
    assert client.post(MANDRILL, data=body, content_type=FORM, headers=sorted_signature).status_code == 200
    arrival = MANDRILL_URL + "".join(name + value for name, value in fields)
    digest = hmac.new(MANDRILL_KEY.encode(), arrival.encode(), hashlib.sha1).digest()
    arrival_signature = {"X-Mandrill-Signature": base64.b64encode(digest).decode()}
    assert client.post(MANDRILL, data=body, content_type=FORM, headers=arrival_signature).status_code == 401
