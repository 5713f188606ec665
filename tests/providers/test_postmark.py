"""Postmark: the inbound webhook (`POST /webhooks/postmark/inbound`, Postmark's inbound JSON) and
the Delivery webhook (`POST /webhooks/postmark/outbound`), whose sent message the worker fetches
from `GET /messages/outbound/{MessageID}/details`; both behind basic auth."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.app import create_app
from tests.conftest import Sandbox, StorageStub
from tests.helpers import (
    BEARER,
    authenticated,
    basic_auth,
    logged_as,
    mime,
    payload,
    payload_json,
    post_mime,
    provider_api_env,
    wait_for_status,
)
from tests.webhook_cases import (
    DECODED_ATTACHMENT_NAMES,
    FETCH_PENDING,
    CarriesAttachments,
    WebhookCases,
)

AUTH = {"valid": basic_auth(), "missing": {}, "wrong": basic_auth(password="guess")}
PATH = "/webhooks/postmark/inbound"
OUTBOUND = "/webhooks/postmark/outbound"
DETAILS = "/messages/outbound/883953f4-6105-42a2-a16a-77a8eac79483/details"
SENT_ID = "<883953f4-6105-42a2-a16a-77a8eac79483@mtasv.net>"


def inbound(**changes: Any) -> dict[str, Any]:
    body = json.loads(payload("postmark/inbound.json"))
    body.update(changes)
    return body


def attachment_entries(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Postmark's `Attachments` for `names`, a file with a Content-ID as Apple Mail sends every
    attachment (`signed lease.pdf`), and an inline image the HTML shows (never listed)."""

    def entry(name: str, content_type: str = "application/pdf", content_id: str = "") -> dict[str, Any]:
        return {"Name": name, "Content": "JVBERi0xLjQgZmFrZQ==", "ContentType": content_type, "ContentLength": 13,
                "ContentID": content_id}  # fmt: skip

    return [*map(entry, names), entry("signed lease.pdf", content_id="3F1C2A7E-lease@apple.example"),
            entry("inline-sig.png", "image/png", "sig.png@01D6")]  # fmt: skip


class TestPostmarkWebhook(CarriesAttachments, WebhookCases):
    path = PATH
    expected = ("queued", "PM555", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")
    attachment_names = (*DECODED_ATTACHMENT_NAMES, "signed lease.pdf")

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": inbound(), "headers": AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"data": "[1, 2", "content_type": "application/json", "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": inbound(TextBody="x" * size), "headers": basic_auth()}

    def attachment_request(self) -> dict[str, Any]:
        return {"json": inbound(Attachments=attachment_entries(DECODED_ATTACHMENT_NAMES)), "headers": basic_auth()}


def test_fields_are_read_from_the_full_structures(client: Any, services: Any) -> None:
    response = client.post(PATH, json=inbound(), headers=basic_auth())
    (summary,) = response.json["deliveries"]
    assert (summary["prospectId"], summary["type"]) == ("PM555", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    body = services.store.payload(summary["id"])
    assert shown["messageId"] == "CAHb1RGT5-lee-movein@mail.gmail.com"  # the header, not Postmark's MessageID
    assert shown["sentTime"] == "2020-04-05T22:45:12.000Z"
    assert body["subject"] == "Move-in date — flexible?"
    assert body["body"].startswith("<p>Could we move in on the <b>15th</b> instead?</p><p>Lee</p>")
    assert "iframe" not in body["body"]
    assert "id-card.png (4.0 KB)" in body["body"] and "inline-sig.png" not in body["body"]


def test_copies_with_different_postmark_ids_are_one_email(client: Any) -> None:
    first = client.post(PATH, json=inbound(), headers=basic_auth())
    second = client.post(PATH, json=inbound(MessageID="0b5f6a0c-0000-4000-8000-000000000000"), headers=basic_auth())
    assert second.json["status"] == "duplicate"
    assert second.json["deliveries"][0]["id"] == first.json["deliveries"][0]["id"]


def test_known_sender_wins_over_the_reply_tag(client: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = client.post(PATH, json=inbound(), headers=basic_auth())
    assert response.json["deliveries"][0]["prospectId"] == "P1"


def test_without_from_full_is_400(client: Any) -> None:
    response = client.post(PATH, json=inbound(FromFull="lee@example.com"), headers=basic_auth())
    assert response.status_code == 400 and "FromFull" in response.json["error"]


def test_a_large_body_is_read_like_a_small_one(make_settings: Any) -> None:
    """Past a MiB the body is decoded and let go before it is parsed: a byte-order mark is still
    dropped as json reads one, and an unreadable post is quarantined with its real size."""
    from relay.app import create_app
    from relay.quarantine import MAX_BODY_BYTES, Quarantine

    app = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=str(4 * MAX_BODY_BYTES)))
    client = app.test_client()
    for size in (10, 2 * MAX_BODY_BYTES):
        data = b"\xef\xbb\xbf" + json.dumps(inbound(TextBody="x" * size, MessageID=f"bom-{size}@x")).encode()
        response = client.post(PATH, data=data, content_type="application/json", headers=basic_auth())
        assert response.status_code == 200, (size, response.json)
    unreadable = b'{"TextBody": "' + b"x" * (2 * MAX_BODY_BYTES) + b'", '
    assert client.post(PATH, data=unreadable, content_type="application/json", headers=basic_auth()).status_code == 400
    (entry, *_) = Quarantine(app.extensions["relay"].redis).entries()
    assert (entry["size"], entry["truncated"]) == (len(unreadable), True)


def test_a_lone_surrogate_in_the_json_is_replaced_not_a_500(client: Any) -> None:
    data = json.dumps(inbound(Subject="a\ud800b", MessageID="surrogate@x")).encode()  # JSON writes "\ud800"
    response = client.post(PATH, data=data, content_type="application/json", headers=basic_auth())
    assert response.status_code == 200, response.json
    (summary,) = response.json["deliveries"]
    assert client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json["subject"] == "a\ufffdb"


# The Delivery webhook -------------------------------------------------------------------------


class TestPostmarkDelivery(WebhookCases):
    path = OUTBOUND
    expected = FETCH_PENDING

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": payload_json("postmark/delivery.json"), "headers": AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {"RecordType": "Delivery", "MessageID": None}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {**payload_json("postmark/delivery.json"), "Details": "x" * size}, "headers": basic_auth()}


class TestPostmarkDeliveryAttachments(CarriesAttachments):
    """The details list the sent message's attachments by name (their content is not in the API)."""

    path = OUTBOUND
    fetched = True
    attachment_names = (*DECODED_ATTACHMENT_NAMES, "signed lease.pdf")

    @pytest.fixture
    def client(self, api_client: Any, api_worker: Any, storage: StorageStub, sandbox: Sandbox) -> Any:  # type: ignore[override]
        sandbox.seed("PM1", agent="pat")
        api_client.put("/v1/prospects/PM1", json={"emails": ["lee@example.com"]}, headers=BEARER)
        details = {**payload_json("postmark/outbound-details.json"),
                   "Attachments": attachment_entries(DECODED_ATTACHMENT_NAMES)}  # fmt: skip
        storage.answers[DETAILS] = json.dumps(details).encode()
        return api_client

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": payload_json("postmark/delivery.json"), "headers": AUTH[auth]}


def test_postmark_delivery_webhook_logs_the_sent_message(api_client: Any, storage: StorageStub,
                                                         api_worker: Any) -> None:  # fmt: skip
    api_client.put("/v1/prospects/PM1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post(OUTBOUND, json=payload_json("postmark/delivery.json"), headers=basic_auth())
    (pending,) = response.json["deliveries"]
    assert (pending["status"], pending["prospectId"], pending["type"]) == FETCH_PENDING
    shown = logged_as(api_client, pending["id"])
    assert (shown["prospectId"], shown["type"]) == ("PM1", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert shown["messageId"] == "883953f4-6105-42a2-a16a-77a8eac79483@mtasv.net"  # from the raw source
    (request,) = storage.seen
    assert request["path"] == DETAILS


@pytest.mark.parametrize("shape", ["raw source in Body", "Headers list"])
def test_postmark_sent_time_is_the_date_header_not_received_at(
    api_client: Any, storage: StorageStub, api_worker: Any, shape: str
) -> None:
    """The README's rule for every email: sentTime is the Date header; Postmark's `ReceivedAt`
    (2020-04-01T01:22:06.437Z, when Postmark took the message) only stands in where there is none.
    Postmark's details carry the Date in the raw source (`Body`); a `Headers` list is read too."""
    details = payload_json("postmark/outbound-details.json")
    assert details["ReceivedAt"].startswith("2020-04-01T01:22:06")
    if shape == "Headers list":
        details["Body"] = ""
        details["Headers"] = [{"Name": "Message-ID", "Value": SENT_ID},
                              {"Name": "Date", "Value": "Tue, 31 Mar 2020 18:21:30 -0700"}]  # fmt: skip
    storage.answers[DETAILS] = json.dumps(details).encode()
    api_client.put("/v1/prospects/PM1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post(OUTBOUND, json=payload_json("postmark/delivery.json"), headers=basic_auth())
    shown = logged_as(api_client, response.json["deliveries"][0]["id"])
    assert shown["sentTime"] == "2020-04-01T01:21:30.000Z"  # Date: Tue, 31 Mar 2020 18:21:30 -0700
    assert shown["messageId"] == SENT_ID.strip("<>")


def test_postmark_received_at_stands_in_for_a_message_without_a_date(
    api_client: Any, storage: StorageStub, api_worker: Any
) -> None:
    details = payload_json("postmark/outbound-details.json")
    details["Body"] = details["Body"].replace("Date: Tue, 31 Mar 2020 18:21:30 -0700\r\n", "")
    storage.answers[DETAILS] = json.dumps(details).encode()
    api_client.put("/v1/prospects/PM1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post(OUTBOUND, json=payload_json("postmark/delivery.json"), headers=basic_auth())
    assert logged_as(api_client, response.json["deliveries"][0]["id"])["sentTime"] == "2020-04-01T01:22:06.437Z"


def test_an_inbound_copy_and_the_sent_event_are_one_email(api_client: Any, storage: StorageStub,
                                                          api_worker: Any) -> None:  # fmt: skip
    """The BCC copy arrives first through the MTA; Postmark's Delivery event for it logs nothing new."""
    api_client.put("/v1/prospects/PM2", json={"emails": ["lee@example.com"]}, headers=BEARER)
    copy = mime(sender="Pat Agent <pat@acme-living.com>", to="lee@example.com", subject="Your tour on Friday",
                message_id=SENT_ID, extra_headers=authenticated())  # fmt: skip
    (first,) = post_mime(api_client, copy).json["deliveries"]
    response = api_client.post(OUTBOUND, json=payload_json("postmark/delivery.json"), headers=basic_auth())
    fetched = wait_for_status(api_client, response.json["deliveries"][0]["id"], "fetched")
    assert fetched["reason"] == f"logged as {first['id']}"


def test_postmark_other_record_types_are_ignored(client: Any) -> None:
    bounce = {**payload_json("postmark/delivery.json"), "RecordType": "Bounce"}
    response = client.post(OUTBOUND, json=bounce, headers=basic_auth())
    assert response.json["status"] == "ignored"


def test_a_wrong_api_key_makes_the_fetch_dead(make_settings: Any, storage: StorageStub, start_worker: Any) -> None:
    settings = make_settings(**provider_api_env(storage.url), POSTMARK_SERVER_TOKEN="wrong")
    client = create_app(settings).test_client()
    start_worker(settings)
    response = client.post(OUTBOUND, json=payload_json("postmark/delivery.json"), headers=basic_auth())
    dead = wait_for_status(client, response.json["deliveries"][0]["id"], "dead")
    assert "401" in dead["lastError"]


def test_a_signed_mailbox_hash_routes_and_an_unsigned_one_does_not(make_settings: Any) -> None:
    """Postmark's MailboxHash is the `+` part of the address it was sent to, which the relay reads
    from the recipient address itself: signed or not, as for any provider."""
    from relay.app import create_app
    from relay.reply_tags import signature_of

    secret = "postmark-reply-secret-01"
    client = create_app(make_settings(RELAY_REPLY_TAG_SECRET=secret)).test_client()
    unsigned = client.post(PATH, json=inbound(), headers=basic_auth()).json["deliveries"][0]
    assert unsigned["status"] == "unmatched"
    tag = f"prospect-PM555.{signature_of('PM555', secret)}"
    address = f"leasing+{tag}@reply.acme-living.com"
    signed = inbound(MessageID="pm-signed", OriginalRecipient=address, MailboxHash=tag,
                     ToFull=[{"Email": address, "Name": "Acme Leasing", "MailboxHash": tag}],
                     Headers=[{"Name": "Message-ID", "Value": "<signed-hash@mail.example.com>"}])  # fmt: skip
    (routed,) = client.post(PATH, json=signed, headers=basic_auth()).json["deliveries"]
    assert (routed["status"], routed["prospectId"]) == ("queued", "PM555")
