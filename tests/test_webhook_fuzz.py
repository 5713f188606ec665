"""No input to any webhook produces a 5xx: property-based tests over each endpoint's fields, and,
for the providers with a fixture, each fixture with fields replaced by arbitrary JSON, signed the
way its provider signs, then posted."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.app import create_app
from tests.helpers import (
    SPARKPOST_TOKEN,
    basic_auth,
    mailersend_headers,
    mailgun_signature,
    mandrill_headers,
    payload_json,
    svix_headers,
)

FUZZ = settings(
    max_examples=int(os.environ.get("RELAY_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

text = st.text(max_size=80)
raw_bytes = st.binary(max_size=120)
charset_names = st.sampled_from(["utf-8", "iso-8859-1", "koi8-r", "windows-1252", "x-unknown", "", "utf-16"])
header_lines = st.lists(
    st.tuples(st.sampled_from(["From", "To", "Cc", "Subject", "Date", "Message-ID", "X-Knock-Message-Type",
                               "X-Knock-Prospect-Id", "Auto-Submitted", "Content-Type"]), text),
    max_size=8,
).map(lambda pairs: "\n".join(f"{name}: {value}" for name, value in pairs))  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)


def multipart(fields: dict[str, bytes], boundary: str = "fuzzBoundary") -> tuple[bytes, str]:
    body = b"".join(
        b"--"
        + boundary.encode()
        + b'\r\nContent-Disposition: form-data; name="'
        + name.encode()
        + b'"\r\n\r\n'
        + value
        + b"\r\n"
        for name, value in fields.items()
    )
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


sendgrid_fields = st.fixed_dictionaries(
    {},
    optional={
        "headers": header_lines.map(str.encode) | raw_bytes,
        "text": raw_bytes,
        "html": raw_bytes,
        "subject": raw_bytes,
        "charsets": st.dictionaries(st.sampled_from(["text", "html", "subject", "headers"]), charset_names).map(
            lambda d: json.dumps(d).encode()
        )
        | raw_bytes,
        "envelope": json_values.map(lambda v: json.dumps(v).encode()),
        "attachment-info": json_values.map(lambda v: json.dumps(v).encode()),
        "attachment1": raw_bytes,
        "email": header_lines.map(lambda h: (h + "\n\nbody").encode()) | raw_bytes,
    },
)


@FUZZ
@given(fields=sendgrid_fields)
def test_sendgrid_never_5xx(client: Any, fields: dict[str, bytes]) -> None:
    body, content_type = multipart(fields)
    response = client.post("/webhooks/sendgrid/inbound", data=body, content_type=content_type, headers=basic_auth())
    assert response.status_code < 500, response.json


mailgun_fields = st.fixed_dictionaries(
    {},
    optional={
        "message-headers": st.lists(st.tuples(text, text).map(list), max_size=5).map(json.dumps) | text,
        "body-plain": text,
        "body-html": text,
        "Message-Id": text,
        "recipient": text,
        "sender": text,
        "body-mime": header_lines.map(lambda h: h + "\n\nbody") | text,
        "attachment-count": text,
    },
)


@FUZZ
@given(fields=mailgun_fields)
def test_mailgun_route_never_5xx(client: Any, fields: dict[str, str]) -> None:
    body = urlencode({**fields, **mailgun_signature()})
    response = client.post("/webhooks/mailgun/inbound", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code < 500, response.json


event_data = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["delivered", "opened", "failed", "clicked"]) | text,
        "message": st.fixed_dictionaries({}, optional={"headers": json_values}) | json_values,
        "storage": st.fixed_dictionaries({}, optional={"url": text}) | json_values,
        "recipient": json_values,
        "timestamp": json_values,
        "user-variables": json_values,
    },
)


@FUZZ
@given(event=event_data | json_values)
def test_mailgun_events_never_5xx(client: Any, event: Any) -> None:
    body = json.dumps({"signature": mailgun_signature(), "event-data": event})
    response = client.post("/webhooks/mailgun/events", data=body, content_type="application/json")
    assert response.status_code < 500, response.json


postmark_body = st.fixed_dictionaries(
    {},
    optional={
        "FromFull": st.fixed_dictionaries({}, optional={"Email": text, "Name": json_values}) | json_values,
        "ToFull": st.lists(st.fixed_dictionaries({}, optional={"Email": text, "Name": text}), max_size=3) | json_values,
        "CcFull": json_values,
        "Subject": json_values,
        "Date": json_values,
        "TextBody": json_values,
        "HtmlBody": json_values,
        "Headers": st.lists(st.fixed_dictionaries({}, optional={"Name": text, "Value": json_values}), max_size=4)
        | json_values,
        "Attachments": json_values,
        "OriginalRecipient": json_values,
    },
)


@FUZZ
@given(body=postmark_body | json_values)
def test_postmark_never_5xx(client: Any, body: Any) -> None:
    response = client.post(
        "/webhooks/postmark/inbound", data=json.dumps(body), content_type="application/json", headers=basic_auth()
    )
    assert response.status_code < 500, response.json


# The newer providers, from their fixtures -----------------------------------------------------

FORM = "application/x-www-form-urlencoded"


def mutated(base: dict[str, Any], nested: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """`base` with any of its fields (or those of `base[nested]`) replaced by arbitrary JSON."""
    target = base[nested] if nested else base
    changes = st.fixed_dictionaries({}, optional={key: json_values for key in target})
    if nested:
        return changes.map(lambda c: {**base, nested: {**target, **c}})
    return changes.map(lambda c: {**base, **c})


def json_post(path: str, sign: Callable[[bytes], dict[str, str]]) -> Callable[[Any, Any], Any]:
    def post(client: Any, body: Any) -> Any:
        data = json.dumps(body).encode()
        return client.post(path, data=data, content_type="application/json", headers=sign(data))

    return post


SPARKPOST = json_post("/webhooks/sparkpost/inbound", lambda _: {"X-MessageSystems-Webhook-Token": SPARKPOST_TOKEN})
MAILERSEND = json_post("/webhooks/mailersend/inbound", mailersend_headers)
RESEND = json_post("/webhooks/resend", lambda data: svix_headers(data))
MAILJET = json_post("/webhooks/mailjet/inbound", lambda _: basic_auth())
BREVO = json_post("/webhooks/brevo/inbound", lambda _: basic_auth())
BREVO_EVENTS = json_post("/webhooks/brevo/events", lambda _: basic_auth())
POSTMARK_EVENTS = json_post("/webhooks/postmark/outbound", lambda _: basic_auth())


@FUZZ
@given(
    body=json_values
    | st.lists(
        mutated(payload_json("sparkpost/relay.json")[1]["msys"]["relay_message"]["content"]).map(
            lambda content: {"msys": {"relay_message": {"content": content}}}
        ),
        max_size=3,
    )
)
def test_sparkpost_never_5xx(client: Any, body: Any) -> None:  # fmt: skip
    assert SPARKPOST(client, body).status_code < 500


@FUZZ
@given(body=mutated(payload_json("mailersend/inbound.json"), "data") | mutated(payload_json("mailersend/inbound.json")))
def test_mailersend_never_5xx(client: Any, body: Any) -> None:
    assert MAILERSEND(client, body).status_code < 500


@FUZZ
@given(
    body=mutated(payload_json("resend/received.json"), "data") | mutated(payload_json("resend/sent.json")) | json_values
)
def test_resend_never_5xx(client: Any, body: Any) -> None:
    assert RESEND(client, body).status_code < 500


@FUZZ
@given(body=mutated(payload_json("mailjet/parse.json")) | json_values)
def test_mailjet_never_5xx(client: Any, body: Any) -> None:
    assert MAILJET(client, body).status_code < 500


@FUZZ
@given(item=mutated(payload_json("brevo/inbound.json")["items"][0]) | json_values)
def test_brevo_never_5xx(client: Any, item: Any) -> None:
    assert BREVO(client, {"items": [item]}).status_code < 500


@FUZZ
@given(body=mutated(payload_json("brevo/delivered.json")) | json_values)
def test_brevo_events_never_5xx(client: Any, body: Any) -> None:
    assert BREVO_EVENTS(client, body).status_code < 500


@FUZZ
@given(body=mutated(payload_json("postmark/delivery.json")) | json_values)
def test_postmark_events_never_5xx(client: Any, body: Any) -> None:
    assert POSTMARK_EVENTS(client, body).status_code < 500


@FUZZ
@given(
    events=st.lists(
        mutated(payload_json("mandrill/inbound-events.json")[0], "msg")
        | mutated(payload_json("mandrill/send-events.json")[0])
        | json_values,
        max_size=3,
    )
    | json_values
)
def test_mandrill_never_5xx(client: Any, events: Any) -> None:  # fmt: skip
    params = {"mandrill_events": json.dumps(events)}
    signed = mandrill_headers("http://localhost/webhooks/mandrill/inbound", params)
    response = client.post("/webhooks/mandrill/inbound", data=urlencode(params), content_type=FORM, headers=signed)
    assert response.status_code < 500


@FUZZ
@given(message=json_values.map(json.dumps) | st.text(max_size=80)
       | mutated(payload_json("ses/received-event.json")).map(json.dumps)
       | mutated(payload_json("ses/received-event.json"), "receipt").map(json.dumps),
       kind=st.sampled_from(["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]))  # fmt: skip
# Found by this test: a `receipt.recipients` that is not a list was iterated.
@example(message=json.dumps({**payload_json("ses/received-event.json"), "receipt": {"recipients": True}}),
         kind="Notification")  # fmt: skip
def test_ses_never_5xx(make_settings: Any, sns: Any, message: str, kind: str) -> None:
    """Signed SNS messages of each type, carrying anything: what the signature vouches for is still untrusted."""
    client = create_app(make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin)).test_client()
    envelope = {**payload_json("ses/notification.json"), "Type": kind, "Message": message,
                "SubscribeURL": sns.origin + "/?Action=ConfirmSubscription", "Token": "t"}  # fmt: skip
    signed = json.dumps(sns.sign(envelope)).encode()
    response = client.post("/webhooks/ses", data=signed, content_type="text/plain",
                           headers={"x-amz-sns-message-type": kind})  # fmt: skip
    assert response.status_code < 500, response.json
