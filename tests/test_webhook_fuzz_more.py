"""No post to the newer providers' webhooks produces a 5xx: each fixture with fields replaced
by arbitrary JSON, signed the way its provider signs, then posted."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from hypothesis import example, given
from hypothesis import strategies as st

from relay.app import create_app
from tests.helpers import (
    SPARKPOST_TOKEN,
    basic_auth,
    mailersend_headers,
    mandrill_headers,
    payload,
    svix_headers,
)
from tests.test_webhook_fuzz import FUZZ, json_values

FORM = "application/x-www-form-urlencoded"


def mutated(base: dict[str, Any], nested: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """`base` with any of its fields (or those of `base[nested]`) replaced by arbitrary JSON."""
    target = base[nested] if nested else base
    changes = st.fixed_dictionaries({}, optional={key: json_values for key in target})
    if nested:
        return changes.map(lambda c: {**base, nested: {**target, **c}})
    return changes.map(lambda c: {**base, **c})


def fixture(name: str) -> Any:
    return json.loads(payload(name))


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
        mutated(fixture("sparkpost/relay.json")[1]["msys"]["relay_message"]["content"]).map(
            lambda content: {"msys": {"relay_message": {"content": content}}}
        ),
        max_size=3,
    )
)
def test_sparkpost_never_5xx(client: Any, body: Any) -> None:  # fmt: skip
    assert SPARKPOST(client, body).status_code < 500


@FUZZ
@given(body=mutated(fixture("mailersend/inbound.json"), "data") | mutated(fixture("mailersend/inbound.json")))
def test_mailersend_never_5xx(client: Any, body: Any) -> None:
    assert MAILERSEND(client, body).status_code < 500


@FUZZ
@given(body=mutated(fixture("resend/received.json"), "data") | mutated(fixture("resend/sent.json")) | json_values)
def test_resend_never_5xx(client: Any, body: Any) -> None:
    assert RESEND(client, body).status_code < 500


@FUZZ
@given(body=mutated(fixture("mailjet/parse.json")) | json_values)
def test_mailjet_never_5xx(client: Any, body: Any) -> None:
    assert MAILJET(client, body).status_code < 500


@FUZZ
@given(item=mutated(fixture("brevo/inbound.json")["items"][0]) | json_values)
def test_brevo_never_5xx(client: Any, item: Any) -> None:
    assert BREVO(client, {"items": [item]}).status_code < 500


@FUZZ
@given(body=mutated(fixture("brevo/delivered.json")) | json_values)
def test_brevo_events_never_5xx(client: Any, body: Any) -> None:
    assert BREVO_EVENTS(client, body).status_code < 500


@FUZZ
@given(body=mutated(fixture("postmark/delivery.json")) | json_values)
def test_postmark_events_never_5xx(client: Any, body: Any) -> None:
    assert POSTMARK_EVENTS(client, body).status_code < 500


@FUZZ
@given(
    events=st.lists(
        mutated(fixture("mandrill/inbound-events.json")[0], "msg")
        | mutated(fixture("mandrill/send-events.json")[0])
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
       | mutated(fixture("ses/received-event.json")).map(json.dumps)
       | mutated(fixture("ses/received-event.json"), "receipt").map(json.dumps), kind=st.sampled_from(["Notification",
       "SubscriptionConfirmation", "UnsubscribeConfirmation"]))  # fmt: skip
# Found by this test: a `receipt.recipients` that is not a list was iterated.
@example(message=json.dumps({**fixture("ses/received-event.json"), "receipt": {"recipients": True}}),
         kind="Notification")  # fmt: skip
def test_ses_never_5xx(make_settings: Any, sns: Any, message: str, kind: str) -> None:
    """Signed SNS messages of each type, carrying anything: what the signature vouches for is still untrusted."""
    client = create_app(make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin)).test_client()
    envelope = {**fixture("ses/notification.json"), "Type": kind, "Message": message,
                "SubscribeURL": sns.origin + "/?Action=ConfirmSubscription", "Token": "t"}  # fmt: skip
    signed = json.dumps(sns.sign(envelope)).encode()
    response = client.post("/webhooks/ses", data=signed, content_type="text/plain",
                           headers={"x-amz-sns-message-type": kind})  # fmt: skip
    assert response.status_code < 500, response.json
