"""Threads through every provider: In-Reply-To and References are read wherever the provider puts
them, including those that pass them only inside a block of headers (SendGrid's parsed `headers`,
Mailgun's `message-headers`, Postmark's `Headers`, Mailjet's `Headers`, Brevo's `InReplyTo` and
`Headers`, SES's message). A reply from an address nobody knows, to an email logged for P1, is
logged for P1."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from relay.app import create_app
from tests.conftest import SnsSigner
from tests.helpers import (
    BEARER,
    SENDGRID_FORM,
    basic_auth,
    mailersend_headers,
    mailgun_signature,
    mandrill_headers,
    mime,
    payload,
    post_mime,
    signed_urlencoded,
)
from tests.test_provider_verdicts import Post

STRANGER = "lee.at.work@example.org"
LEASING = "leasing@acme-living.com"
PARENT = "<asks-about-parking@example.com>"


def reply(refs: str = "In-Reply-To") -> bytes:
    return mime(sender=STRANGER, to=LEASING, subject="Re: parking", message_id="<reply-1@example.org>",
                extra_headers=f"{refs}: {PARENT}")  # fmt: skip


def sendgrid_parsed(_: SnsSigner) -> Post:
    fields = {"headers": f"From: {STRANGER}\nTo: {LEASING}\nSubject: Re: parking\nMessage-ID: <reply-1@example.org>\n"
              f"In-Reply-To: {PARENT}\n", "text": "Yes please", "from": STRANGER, "to": LEASING,
              "envelope": json.dumps({"to": [LEASING], "from": STRANGER})}  # fmt: skip
    body = b"".join(
        b'--xYzZY\r\nContent-Disposition: form-data; name="' + k.encode() + b'"\r\n\r\n' + v.encode() + b"\r\n"
        for k, v in fields.items()
    )
    return Post("/webhooks/sendgrid/inbound", {"data": body + b"--xYzZY--\r\n", "content_type": SENDGRID_FORM,
                                               "headers": basic_auth()})  # fmt: skip


def mailgun_parsed(_: SnsSigner) -> Post:
    headers = [["From", STRANGER], ["To", LEASING], ["Subject", "Re: parking"], ["Message-Id", "<reply-1@example.org>"],
               ["References", PARENT]]  # fmt: skip
    fields = {"message-headers": json.dumps(headers), "body-plain": "Yes", "sender": STRANGER, "recipient": LEASING}
    data = signed_urlencoded(urlencode(fields).encode(), mailgun_signature())
    return Post("/webhooks/mailgun/inbound", {"data": data, "content_type": "application/x-www-form-urlencoded"})


def postmark(_: SnsSigner) -> Post:
    body = {"FromFull": {"Email": STRANGER}, "ToFull": [{"Email": LEASING}], "Subject": "Re: parking",
            "TextBody": "Yes", "MessageID": "pm-1", "OriginalRecipient": LEASING,
            "Headers": [{"Name": "Message-ID", "Value": "<reply-1@example.org>"},
                        {"Name": "In-Reply-To", "Value": PARENT}]}  # fmt: skip
    return Post("/webhooks/postmark/inbound", {"json": body, "headers": basic_auth()})


def mailjet(_: SnsSigner) -> Post:
    body = {"Sender": STRANGER, "Recipient": LEASING, "From": STRANGER, "Subject": "Re: parking", "Text-part": "Yes",
            "Headers": {"To": LEASING, "Message-ID": "<reply-1@example.org>", "In-Reply-To": PARENT}}  # fmt: skip
    return Post("/webhooks/mailjet/inbound", {"json": body, "headers": basic_auth()})


def brevo(_: SnsSigner) -> Post:
    item = {"From": {"Address": STRANGER}, "To": [{"Address": LEASING}], "Subject": "Re: parking",
            "MessageId": "<reply-1@example.org>", "InReplyTo": PARENT, "RawTextBody": "Yes",
            "Recipients": [LEASING]}  # fmt: skip
    return Post("/webhooks/brevo/inbound", {"json": {"items": [item]}, "headers": basic_auth()})


def ses(sns: SnsSigner) -> Post:
    event = json.loads(payload("ses/received-event.json"))
    event["receipt"]["recipients"] = [LEASING]
    event["mail"]["source"] = STRANGER
    event["content"] = base64.b64encode(reply()).decode()
    message = sns.sign({**json.loads(payload("ses/notification.json")), "Message": json.dumps(event)})
    return Post("/webhooks/ses", {"data": json.dumps(message), "content_type": "text/plain; charset=UTF-8",
                                  "headers": {"x-amz-sns-message-type": "Notification"}})  # fmt: skip


def mandrill(_: SnsSigner) -> Post:
    params = {
        "mandrill_events": json.dumps([{"event": "inbound", "msg": {"raw_msg": reply().decode(), "email": LEASING}}])
    }
    headers = mandrill_headers("http://localhost/webhooks/mandrill/inbound", params)
    return Post("/webhooks/mandrill/inbound", {"data": urlencode(params), "headers": headers,
                                               "content_type": "application/x-www-form-urlencoded"})  # fmt: skip


def mailersend(_: SnsSigner) -> Post:
    data = {"raw": reply("References").decode(), "recipients": {"rcptTo": [{"email": LEASING}]},
            "sender": {"email": STRANGER}}  # fmt: skip
    body = json.dumps({"type": "inbound.message", "data": data}).encode()
    return Post("/webhooks/mailersend/inbound", {"data": body, "content_type": "application/json",
                                                 "headers": mailersend_headers(body)})  # fmt: skip


def raw_mime(_: SnsSigner) -> Post:
    return Post("/webhooks/mime", {"data": reply(), "content_type": "message/rfc822", "headers": basic_auth()})


PROVIDERS: dict[str, Callable[[SnsSigner], Post]] = {
    "sendgrid parsed": sendgrid_parsed,
    "mailgun message-headers": mailgun_parsed,
    "postmark Headers": postmark,
    "mailjet Headers": mailjet,
    "brevo InReplyTo": brevo,
    "ses": ses,
    "mandrill": mandrill,
    "mailersend": mailersend,
    "mime": raw_mime,
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reply_is_threaded_whatever_the_provider(make_settings: Any, sns: SnsSigner, provider: str) -> None:
    client = create_app(make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin)).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["lee@example.com"], "agentUsername": "pat"}, headers=BEARER)
    asked = post_mime(client, mime(sender="lee@example.com", to=LEASING, subject="Parking?", message_id=PARENT))
    assert asked.json["deliveries"][0]["prospectId"] == "P1"
    post = PROVIDERS[provider](sns)
    answer = client.post(post.path, **post.kwargs)
    assert answer.status_code == 200, answer.json
    (summary,) = answer.json["deliveries"]
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert (shown["prospectId"], shown["matchedBy"]) == ("P1", "thread"), shown
    assert shown["threadMessageId"] == PARENT.strip("<>")
