"""Mailgun route posts and event webhooks: HMAC signatures, 406 for unreadable posts, storage fetch,
attachments named as the message names them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.app import create_app
from tests.conftest import StorageStub
from tests.helpers import (
    BEARER,
    MAILGUN_API_KEY,
    MAILGUN_SIGNING_KEY,
    SENDGRID_FORM,
    basic_auth,
    mailgun_event,
    mailgun_signature,
    payload,
    signed_multipart,
    signed_urlencoded,
    wait_for_status,
)
from tests.webhook_cases import CarriesAttachments, CarriesMimeAttachments, WebhookCases

URLENCODED = "application/x-www-form-urlencoded"
ROUTE = "/webhooks/mailgun/inbound"
EVENTS = "/webhooks/mailgun/events"
STORAGE_PATH = "/v3/domains/mg.acme-living.com/messages/message_key"


def signature_for(auth: str) -> dict[str, str]:
    if auth == "wrong":
        return mailgun_signature("not-the-key")
    if auth == "missing":
        return {}
    if auth == "stale":
        return mailgun_signature(age=86400 + 600)
    return mailgun_signature()


def route_post(auth: str = "valid", *, signature: dict[str, str] | None = None) -> dict[str, Any]:
    body = payload("mailgun/route-parsed.urlencoded")
    sig = signature if signature is not None else signature_for(auth)
    return {"data": signed_urlencoded(body, sig) if sig else body, "content_type": URLENCODED}


def form_part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f"; {filename}" if filename else "")
    return b"--xYzZY\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + value + b"\r\n"


#: `attachment-N` parts' file names as a form may carry them, and the names they are.
FORM_FILE_NAMES = (
    ('filename="pay stub.pdf"', "pay stub.pdf"),
    ("filename*=UTF-8''bail%20sign%C3%A9.pdf", "bail signé.pdf"),
    ('filename="=?utf-8?q?fiche_d=C3=A9p=C3=B4t.pdf?="', "fiche dépôt.pdf"),
    ('filename="=?UTF-8?B?0LrQstC40YLQsNC90YbQuNGPLnBkZg==?="', "квитанция.pdf"),
    ('filename="reçu — loyer.pdf"', "reçu — loyer.pdf"),
)


class TestMailgunRouteWebhook(CarriesAttachments, WebhookCases):
    path = ROUTE
    expected = ("unmatched", None, "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")
    malformed_status = 406
    attachment_names = tuple(name for _, name in FORM_FILE_NAMES)

    def attachment_request(self) -> dict[str, Any]:
        """A parsed forward: the files as `attachment-1`, `attachment-2`, ... with their file names."""
        headers = [["From", "Renter <renter@example.com>"], ["Subject", "My documents"],
                   ["To", "leasing+prospect-4WXU6U2J@reply.acme-living.com"],
                   ["Message-Id", "<attachments-mg@mail.example.com>"]]  # fmt: skip
        files = [form_part(f"attachment-{n}", b"%PDF-1.4 fake", disposition)
                 for n, (disposition, _) in enumerate(FORM_FILE_NAMES, 1)]  # fmt: skip
        fields = [form_part("message-headers", json.dumps(headers).encode()), form_part("body-plain", b"Here."),
                  form_part("attachment-count", str(len(files)).encode()), *files]  # fmt: skip
        body = signed_multipart(b"".join(fields) + b"--xYzZY--\r\n", mailgun_signature())
        return {"data": body, "content_type": SENDGRID_FORM}

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return route_post(auth)

    def malformed_request(self) -> dict[str, Any]:
        return {
            "data": signed_urlencoded(b"message-headers=%5Bnot+json", mailgun_signature()),
            "content_type": URLENCODED,
        }

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {
            "data": signed_urlencoded(b"body-plain=" + b"x" * size, mailgun_signature()),
            "content_type": URLENCODED,
        }

    def test_same_post_twice_is_a_duplicate(self, client: Any) -> None:
        """A Mailgun retry repeats the signature and token; a new token with the same email dedups by Message-ID."""
        signature = mailgun_signature()
        first = client.post(ROUTE, **route_post(signature=signature))
        retry = client.post(ROUTE, **route_post(signature=signature))
        fresh = client.post(ROUTE, **route_post())
        assert first.json["status"] == "unmatched"
        assert retry.json["status"] == fresh.json["status"] == "duplicate"
        assert (
            retry.json["deliveries"][0]["id"] == fresh.json["deliveries"][0]["id"] == first.json["deliveries"][0]["id"]
        )


class TestMailgunEventWebhook(WebhookCases):
    path = EVENTS
    expected = ("ignored", None, "")
    malformed_status = 406

    def request(self, auth: str = "valid") -> dict[str, Any]:
        signature = signature_for(auth) or {"timestamp": "", "token": "", "signature": ""}
        return {"data": mailgun_event("event-opened.json", signature), "content_type": "application/json"}

    def malformed_request(self) -> dict[str, Any]:
        body = json.dumps({"signature": mailgun_signature(), "event-data": "nope"})
        return {"data": body, "content_type": "application/json"}

    def oversized_request(self, size: int) -> dict[str, Any]:
        body = json.dumps({"signature": mailgun_signature(), "padding": "x" * size})
        return {"data": body, "content_type": "application/json"}

    def test_same_post_twice_is_a_duplicate(self, client: Any) -> None:
        signature = mailgun_signature()
        first = client.post(EVENTS, **{**self.request(), "data": mailgun_event("event-opened.json", signature)})
        again = client.post(EVENTS, **{**self.request(), "data": mailgun_event("event-opened.json", signature)})
        assert again.json["status"] == "duplicate"
        assert again.json["deliveries"][0]["id"] == first.json["deliveries"][0]["id"]


class TestMailgunMimeRouteAttachments(CarriesMimeAttachments):
    """A forward to a URL ending in `mime` posts the message whole, as `body-mime`."""

    path = ROUTE + "?format=mime"

    def carrying(self, raw: bytes) -> dict[str, Any]:
        fields = [form_part("recipient", b"leasing+prospect-4WXU6U2J@reply.acme-living.com"),
                  form_part("sender", b"renter@example.com"), form_part("body-mime", raw)]  # fmt: skip
        body = signed_multipart(b"".join(fields) + b"--xYzZY--\r\n", mailgun_signature())
        return {"data": body, "content_type": SENDGRID_FORM}


@pytest.mark.parametrize(
    ("path", "post"),
    [
        (ROUTE, lambda sig: route_post(signature=sig)),
        (EVENTS, lambda sig: {"data": mailgun_event("event-opened.json", sig), "content_type": "application/json"}),
    ],
)
def test_stale_signature_is_401_and_nothing_is_stored(client: Any, redis_client: Any, path: str, post: Any) -> None:
    response = client.post(path, **post(mailgun_signature(age=86400 + 600)))
    assert response.status_code == 401 and "stale" in response.json["error"]
    assert redis_client.dbsize() == 0
    assert client.post(path, **post(mailgun_signature(age=86400 - 600))).status_code == 200


def short_route_post(client: Any, signature: dict[str, str]) -> Any:
    """A parsed forward with no message headers (406 once its signature is accepted)."""
    body = b"subject=hi&body-plain=hello&sender=renter%40example.com&recipient=leasing%40acme-living.com"
    return client.post(ROUTE, data=signed_urlencoded(body, signature), content_type=URLENCODED)


def test_a_prefix_of_the_right_mailgun_signature_is_refused(client: Any) -> None:
    right = mailgun_signature()
    for wrong in (right["signature"][:-1], right["signature"][:32], right["signature"] + "0", ""):
        assert short_route_post(client, {**right, "signature": wrong}).status_code == 401
    assert short_route_post(client, right).status_code != 401


@pytest.mark.parametrize("skew", [-86400 - 120, 86400 + 120])
def test_mailgun_timestamps_beyond_the_window_either_way_are_refused(client: Any, skew: int) -> None:
    """`skew` is how far the timestamp lies in the past (positive) or the future (negative)."""
    assert short_route_post(client, mailgun_signature(MAILGUN_SIGNING_KEY, age=skew)).status_code == 401
    assert short_route_post(client, mailgun_signature(MAILGUN_SIGNING_KEY, age=skew / 2)).status_code == 406


def test_multipart_parsed_post_lists_attachments(client: Any, services: Any) -> None:
    def part(name: str, value: bytes, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        return b"--xYzZY\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + value + b"\r\n"

    headers = json.dumps(
        [["From", "zoe@example.com"], ["To", "leasing+prospect-Z1@reply.acme-living.com"], ["Subject", "docs"]]
    )
    body = (
        b"".join(
            [
                part("message-headers", headers.encode()),
                part("body-plain", "Here are my documents — thanks".encode()),
                part("attachment-count", b"1"),
                part("attachment-1", b"%PDF-1.4 fake", "bank statement.pdf"),
            ]
        )
        + b"--xYzZY--\r\n"
    )
    response = client.post(ROUTE, data=signed_multipart(body, mailgun_signature()), content_type=SENDGRID_FORM)
    (summary,) = response.json["deliveries"]
    assert summary["prospectId"] == "Z1"
    text = services.store.payload(summary["id"])["body"]
    assert text.startswith("Here are my documents — thanks") and "bank statement.pdf (13 B)" in text


def test_parsed_route_post_uses_message_headers(client: Any, services: Any) -> None:
    client.put("/v1/prospects/P7", json={"emails": ["zoe@example.com"]}, headers=BEARER)
    response = client.post(ROUTE, **route_post())
    (summary,) = response.json["deliveries"]
    assert (summary["prospectId"], summary["type"]) == ("P7", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    body = services.store.payload(summary["id"])
    assert shown["messageId"] == "CAE6+zoe-1@mail.gmail.com"
    assert shown["sentTime"] == "2020-04-03T10:00:00.000Z"
    assert body["subject"] == "Pets allowed? 🐶"  # base64 encoded word in message-headers
    assert body["body"] == "<div>Hi, are <b>dogs</b> allowed?</div>"
    # Its X-Mailgun-Variables header names knock_agent_username, but in a prospect's mail anyone
    # could have written it: the agent is left to the directory, Knock and the default.
    assert shown["agentUsername"] is None and "agent" not in body


def test_mime_route_post_reads_body_mime(client: Any) -> None:
    body = signed_multipart(payload("mailgun/route-mime.form"), mailgun_signature())
    response = client.post(ROUTE, data=body, content_type=SENDGRID_FORM)
    (summary,) = response.json["deliveries"]
    assert summary["prospectId"] is None  # knock_prospect_id in a prospect's X-Mailgun-Variables: ignored
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert (shown["messageId"], shown["subject"]) == ("sam-parking-7@example.net", "Parking spots")


def agent_route_post(*verdict_headers: list[str]) -> dict[str, Any]:
    from urllib.parse import urlencode

    headers = [["From", "Dana <dana@acme-living.com>"], ["To", "renter@example.com"], ["Subject", "Tour"],
               ["Message-Id", "<agent-1@acme-living.com>"], ["DKIM-Signature", "v=1; d=acme-living.com; s=mg"],
               ["X-Mailgun-Variables", '{"knock_prospect_id": "MG123", "knock_agent_username": "kim"}'],
               *verdict_headers]  # fmt: skip
    fields = {"message-headers": json.dumps(headers), "body-plain": "See you Friday", "sender": "dana@acme-living.com"}
    return {"data": signed_urlencoded(urlencode(fields).encode(), mailgun_signature()), "content_type": URLENCODED}


def test_route_variables_count_on_authenticated_leasing_mail(client: Any) -> None:
    passed = client.post(ROUTE, **agent_route_post(["X-Mailgun-Dkim-Check-Result", "Pass"]))
    (summary,) = passed.json["deliveries"]
    assert (summary["status"], summary["prospectId"]) == ("queued", "MG123")
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert shown["agentUsername"] == "kim" and shown["senderAuth"] == "pass: dkim=pass acme-living.com"


def test_leasing_mail_that_mailgun_did_not_authenticate_is_parked(client: Any) -> None:
    failed = client.post(ROUTE, **agent_route_post(["X-Mailgun-Dkim-Check-Result", "Fail"], ["X-Mailgun-Spf", "Fail"]))
    (summary,) = failed.json["deliveries"]
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert (shown["status"], shown["reason"], shown["prospectId"]) == ("unmatched", "sender not authenticated", None)
    assert shown["senderAuth"].startswith("fail: ")


def test_unconfigured_signing_key_refuses_everyone(make_settings: Any) -> None:
    client = create_app(make_settings(MAILGUN_WEBHOOK_SIGNING_KEY="")).test_client()
    response = client.post(ROUTE, **route_post())
    assert response.status_code == 401 and "not configured" in response.json["error"]


def test_the_signing_key_can_be_rotated(make_settings: Any) -> None:
    """Both keys of MAILGUN_WEBHOOK_SIGNING_KEY are accepted while Mailgun's account moves from one
    to the other; any other key is not."""
    client = create_app(make_settings(MAILGUN_WEBHOOK_SIGNING_KEY=f"new-key-0123,{MAILGUN_SIGNING_KEY}")).test_client()
    for key in ("new-key-0123", MAILGUN_SIGNING_KEY):
        assert client.post(ROUTE, **route_post(signature=mailgun_signature(key))).status_code == 200
    assert client.post(ROUTE, **route_post(signature=mailgun_signature("another-key"))).status_code == 401


def test_signed_post_without_an_email_is_406(client: Any) -> None:
    response = client.post(ROUTE, data=signed_urlencoded(b"subject=hi", mailgun_signature()), content_type=URLENCODED)
    assert response.status_code == 406


def delivered(client: Any, storage_url: str, signature: dict[str, str] | None = None) -> Any:
    body = mailgun_event("event-delivered.json", signature or mailgun_signature(), storage_url)
    return client.post(EVENTS, data=body, content_type="application/json")


@pytest.fixture
def storage_settings(make_settings: Any, storage: StorageStub) -> Any:
    return make_settings(RELAY_MAILGUN_STORAGE_ORIGINS=storage.url)


@pytest.fixture
def storage_client(storage_settings: Any) -> Any:
    return create_app(storage_settings).test_client()


@pytest.fixture
def storage_worker(storage_settings: Any, start_worker: Any) -> Any:
    return start_worker(storage_settings)


def fetched(client: Any, response: Any) -> dict[str, Any]:
    """The delivery a `delivered` event became once the worker fetched the stored message."""
    assert response.status_code == 200, response.json
    (pending,) = response.json["deliveries"]
    assert (pending["status"], pending["prospectId"], pending["type"]) == ("queued", None, "")
    done = wait_for_status(client, pending["id"], "fetched")
    (created,) = done["reason"].removeprefix("logged as ").split(", ")
    return client.get(f"/v1/deliveries/{created}", headers=BEARER).json  # type: ignore[no-any-return]


def test_delivered_event_logs_the_stored_message_as_outbound(
    storage_client: Any, storage: StorageStub, storage_worker: Any
) -> None:
    storage_client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    response = delivered(storage_client, storage.url + STORAGE_PATH)
    assert storage.seen == []  # the webhook answers before anything is fetched
    shown = fetched(storage_client, response)
    assert (shown["prospectId"], shown["type"]) == ("P1", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert shown["agentUsername"] == "dana.from.variables"  # user-variables win
    assert shown["messageId"] == "next-steps-42@acme-living.com"
    assert shown["senderAuth"] == "pass: sent through Mailgun"
    (request,) = storage.seen
    assert request["accept"] == "message/rfc2822"
    assert (request["auth"].username, request["auth"].password) == ("api", MAILGUN_API_KEY)


def test_other_events_are_ignored_without_a_fetch(storage_client: Any, storage: StorageStub) -> None:
    response = storage_client.post(
        EVENTS, data=mailgun_event("event-opened.json", mailgun_signature()), content_type="application/json"
    )
    assert response.status_code == 200 and response.json["status"] == "ignored"
    shown = storage_client.get(f"/v1/deliveries/{response.json['deliveries'][0]['id']}", headers=BEARER).json
    assert shown["reason"] == "mailgun event opened"
    assert storage.seen == []


def test_storage_outside_the_allow_list_is_never_fetched(
    storage_client: Any, storage: StorageStub, outside_storage: StorageStub
) -> None:
    for url in (
        outside_storage.url + STORAGE_PATH,
        outside_storage.url.replace("127.0.0.1", "localhost") + STORAGE_PATH,
        f"http://user@{outside_storage.url[7:]}{STORAGE_PATH}",
    ):
        response = delivered(storage_client, url)
        assert response.status_code == 406, url
    assert outside_storage.seen == [] and storage.seen == []


def test_storage_failures_are_retried_by_the_worker_not_lost(
    storage_client: Any, storage: StorageStub, storage_worker: Any
) -> None:
    """Mailgun does not retry delivery notifications: the event is kept and the fetch retried."""
    storage.failures.extend([502, 503])
    response = delivered(storage_client, storage.url + STORAGE_PATH)
    shown = fetched(storage_client, response)
    assert shown["messageId"] == "next-steps-42@acme-living.com"
    assert len(storage.seen) == 3
    pending = storage_client.get(f"/v1/deliveries/{response.json['deliveries'][0]['id']}", headers=BEARER).json
    assert pending["attempts"] == 3


def test_an_expired_stored_message_is_dead_with_the_reason(
    storage_client: Any, storage: StorageStub, storage_worker: Any
) -> None:
    storage.failures.append(404)
    response = delivered(storage_client, storage.url + STORAGE_PATH)
    dead = wait_for_status(storage_client, response.json["deliveries"][0]["id"], "dead")
    assert dead["lastError"] == "stored message expired or gone (HTTP 404)"


def test_same_email_through_two_providers_is_logged_once(
    storage_client: Any, storage: StorageStub, storage_worker: Any
) -> None:
    """The BCC copy through SendGrid and the Mailgun `delivered` event carry one Message-ID."""
    storage_client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    bcc = storage_client.post(
        "/webhooks/sendgrid/inbound",
        data=payload("sendgrid/raw-mode.form"),
        content_type=SENDGRID_FORM,
        headers=basic_auth(),
    )
    event = delivered(storage_client, storage.url + STORAGE_PATH)
    assert bcc.json["status"] == "queued"
    assert fetched(storage_client, event)["id"] == bcc.json["deliveries"][0]["id"]  # found as a duplicate


def test_a_multipart_part_without_a_name_is_left_out_not_a_500(client: Any) -> None:
    from tests.helpers import mailgun_signature, signed_multipart

    def field(name: str, value: str) -> bytes:
        return (
            b'--xYzZY\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"\r\n\r\n'
            + value.encode()
            + b"\r\n"
        )

    parts = (b'--xYzZY\r\nContent-Disposition: form-data; filename="a.bin"\r\n\r\nbinary\r\n'
             + field("message-headers", '[["From", "renter@example.com"], ["To", "leasing@acme-living.com"]]')
             + field("sender", "renter@example.com") + field("recipient", "leasing@acme-living.com")
             + field("body-plain", "hi") + b"--xYzZY--\r\n")  # fmt: skip
    data = signed_multipart(parts, mailgun_signature())
    response = client.post("/webhooks/mailgun/inbound", data=data, content_type="multipart/form-data; boundary=xYzZY")
    assert response.status_code == 200, response.json
