"""No input to any webhook produces a 5xx: property-based tests over each endpoint's fields."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import basic_auth, mailgun_signature

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
