"""SparkPost, MailerSend, Mandrill, Mailjet, Brevo, Resend and Amazon SES (SNS) inbound, and
outbound-send events from Postmark, Resend, Mandrill and Brevo: each verified its own way,
each through the shared webhook cases, with fixtures in each provider's wire format."""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar
from urllib.parse import urlencode

import pytest

from relay.app import create_app
from tests.conftest import SnsSigner, StorageStub
from tests.helpers import (
    BEARER,
    BREVO_TOKEN,
    SPARKPOST_TOKEN,
    authenticated,
    basic_auth,
    mailersend_headers,
    mandrill_headers,
    mime,
    payload,
    post_mime,
    provider_api_env,
    svix_headers,
    wait_for_status,
)
from tests.webhook_cases import CarriesAttachments, WebhookCases

REPLY_TAGGED = ("queued", "4WXU6U2J", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")
FETCH_PENDING = ("queued", None, "")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
SENT_ID = "<883953f4-6105-42a2-a16a-77a8eac79483@mtasv.net>"


def fixture(name: str) -> Any:
    return json.loads(payload(name))


def logged_as(client: Any, fetch_id: str) -> dict[str, Any]:
    """The delivery a fetch became once the worker read the email from the provider."""
    done = wait_for_status(client, fetch_id, "fetched")
    (created,) = done["reason"].removeprefix("logged as ").split(", ")
    return client.get(f"/v1/deliveries/{created}", headers=BEARER).json  # type: ignore[no-any-return]


@pytest.fixture
def api_settings(make_settings: Any, storage: StorageStub) -> Any:
    return make_settings(**provider_api_env(storage.url))


@pytest.fixture
def api_client(api_settings: Any) -> Any:
    return create_app(api_settings).test_client()


@pytest.fixture
def api_worker(api_settings: Any, start_worker: Any) -> Any:
    return start_worker(api_settings)


# SparkPost -----------------------------------------------------------------------------------


def sparkpost(auth: str = "valid", body: Any = None) -> dict[str, Any]:
    token = {"valid": SPARKPOST_TOKEN, "missing": None, "wrong": "guess"}[auth]
    headers = {"X-MessageSystems-Webhook-Token": token} if token else {}
    return {"data": json.dumps(fixture("sparkpost/relay.json") if body is None else body), "content_type": JSON,
            "headers": headers}  # fmt: skip


class TestSparkPost(WebhookCases):
    path = "/webhooks/sparkpost/inbound"
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return sparkpost(auth)

    def malformed_request(self) -> dict[str, Any]:
        return sparkpost(body={"msys": "not an array"})

    def oversized_request(self, size: int) -> dict[str, Any]:
        return sparkpost(body=[{"msys": {}, "padding": "x" * size}])


def test_sparkpost_ping_answers_200_with_nothing_stored(client: Any, redis_client: Any) -> None:
    response = client.post("/webhooks/sparkpost/inbound", **sparkpost(body=[{"msys": {}}]))
    assert response.status_code == 200 and response.json["deliveries"] == []


def test_sparkpost_reads_every_message_of_a_batch(client: Any, services: Any) -> None:
    batch = fixture("sparkpost/relay.json")
    second = json.loads(json.dumps(batch[1]))
    raw = base64.b64decode(second["msys"]["relay_message"]["content"]["email_rfc822"])
    second["msys"]["relay_message"]["content"] = {
        "email_rfc822": raw.decode("latin-1").replace("visit-4711", "visit-4712"),
        "email_rfc822_is_base64": False,
    }
    response = client.post("/webhooks/sparkpost/inbound", **sparkpost(body=[*batch, second]))
    assert [d["prospectId"] for d in response.json["deliveries"]] == ["4WXU6U2J", "4WXU6U2J"]
    shown = client.get(f"/v1/deliveries/{response.json['deliveries'][1]['id']}", headers=BEARER).json
    assert shown["messageId"] == "CAF=visit-4712@mail.example.com"
    assert services.store.payload(shown["id"])["subject"] == "Réservation pour la visite"


# MailerSend ----------------------------------------------------------------------------------


def mailersend(auth: str = "valid", body: bytes | None = None) -> dict[str, Any]:
    data = payload("mailersend/inbound.json") if body is None else body
    headers = {"valid": mailersend_headers(data), "missing": {}, "wrong": mailersend_headers(data, "guess")}[auth]
    return {"data": data, "content_type": JSON, "headers": headers}


class TestMailerSend(CarriesAttachments, WebhookCases):
    attachment_names = ("pay stub.pdf",)
    path = "/webhooks/mailersend/inbound"
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return mailersend(auth)

    def malformed_request(self) -> dict[str, Any]:
        return mailersend(body=b'{"type": "inbound.message", "data": {"raw": 7}}')

    def oversized_request(self, size: int) -> dict[str, Any]:
        return mailersend(body=b'{"padding": "' + b"x" * size + b'"}')


def test_mailersend_signature_covers_the_exact_bytes(client: Any) -> None:
    """The same JSON spaced differently is not what MailerSend signed."""
    data = payload("mailersend/inbound.json")
    respaced = json.dumps(json.loads(data)).encode()
    assert respaced != data
    response = client.post("/webhooks/mailersend/inbound", data=respaced, content_type=JSON,
                           headers=mailersend_headers(data))  # fmt: skip
    assert response.status_code == 401


# Mandrill ------------------------------------------------------------------------------------

MANDRILL = "/webhooks/mandrill/inbound"


def mandrill(auth: str = "valid", events: Any = None, url: str = "http://localhost" + MANDRILL) -> dict[str, Any]:
    params = {"mandrill_events": events if isinstance(events, str) else json.dumps(
        fixture("mandrill/inbound-events.json") if events is None else events)}  # fmt: skip
    headers = {"valid": mandrill_headers(url, params), "missing": {}, "wrong": mandrill_headers(url, params, "guess")}
    return {"data": urlencode(params), "content_type": FORM, "headers": headers[auth]}


class TestMandrill(CarriesAttachments, WebhookCases):
    attachment_names = ("pay stub.pdf",)
    path = MANDRILL
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return mandrill(auth)

    def malformed_request(self) -> dict[str, Any]:
        return mandrill(events="[not json")

    def oversized_request(self, size: int) -> dict[str, Any]:
        return mandrill(events=json.dumps([{"event": "inbound", "padding": "x" * size}]))


def test_mandrill_head_check_answers_200_and_is_no_webhook_call(client: Any) -> None:
    from prometheus_client import REGISTRY

    def counted() -> float:
        return sum(
            s.value for m in REGISTRY.collect() if m.name == "relay_webhooks" for s in m.samples
            if s.name == "relay_webhooks_total" and s.labels["provider"] == "mandrill"
        )  # fmt: skip

    before = counted()
    assert client.head(MANDRILL).status_code == 200
    assert counted() == before
    client.post(MANDRILL, **mandrill(auth="missing"))
    assert counted() == before + 1


def test_mandrill_signs_the_public_url_behind_a_proxy(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_PUBLIC_URL="https://relay.example.com")).test_client()
    as_given = mandrill(url="https://relay.example.com" + MANDRILL)
    assert client.post(MANDRILL, **as_given).status_code == 200
    assert client.post(MANDRILL, **mandrill()).status_code == 401  # signed for the URL the proxy rewrote


def test_mandrill_answers_each_event_of_a_batch(client: Any) -> None:
    inbound = fixture("mandrill/inbound-events.json")[0]
    events = [inbound, {"event": "inbound", "msg": {"subject": "no raw"}}, {"event": "reject", "msg": {}}]
    response = client.post(MANDRILL, **mandrill(events=events))
    assert response.status_code == 200
    assert [d["status"] for d in response.json["deliveries"]] == ["queued", "ignored", "ignored"]


def test_mandrill_send_event_logs_the_sent_message(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    api_client.put("/v1/prospects/P7", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post(MANDRILL, **mandrill(events=fixture("mandrill/send-events.json")))
    send, opened = response.json["deliveries"]
    assert (send["status"], send["prospectId"], send["type"]) == FETCH_PENDING and opened["status"] == "ignored"
    shown = logged_as(api_client, send["id"])
    assert (shown["prospectId"], shown["type"]) == ("P7", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert shown["senderAuth"] == "pass: sent through Mandrill"
    assert [r["path"] for r in storage.seen] == ["/api/1.0/messages/content.json"]


def test_mandrill_unknown_message_is_dead_not_retried(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    events = fixture("mandrill/send-events.json")[:1]
    events[0]["_id"] = "unknown"
    (pending,) = api_client.post(MANDRILL, **mandrill(events=events)).json["deliveries"]
    dead = wait_for_status(api_client, pending["id"], "dead")
    assert "Unknown_Message" in dead["lastError"] and len(storage.seen) == 1


# Mailjet -------------------------------------------------------------------------------------

AUTH = {"valid": basic_auth(), "missing": {}, "wrong": basic_auth(password="guess")}


class TestMailjet(CarriesAttachments, WebhookCases):
    attachment_names = ("pay stub.pdf",)
    path = "/webhooks/mailjet/inbound"
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": fixture("mailjet/parse.json"), "headers": AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {**fixture("mailjet/parse.json"), "From": "", "Sender": ""}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {**fixture("mailjet/parse.json"), "Text-part": "x" * size}, "headers": basic_auth()}


def test_mailjet_fields_headers_and_attachments(client: Any, services: Any) -> None:
    (summary,) = client.post("/webhooks/mailjet/inbound", **TestMailjet().request()).json["deliveries"]
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    body = services.store.payload(summary["id"])
    assert shown["messageId"] == "CAF=visit-4711@mail.example.com"
    assert shown["sentTime"] == "2020-03-31T23:22:06.000Z"
    assert "pay stub.pdf" in body["body"] and "<script" not in body["body"]


@pytest.mark.parametrize(
    ("headers", "name"),
    [
        ({"Content-Disposition": "attachment; filename*=UTF-8''bail%20sign%C3%A9.pdf"}, "bail signé.pdf"),
        ({"Content-Disposition": ["attachment; filename=lease.pdf"]}, "lease.pdf"),
        ({"Content-Type": 'application/pdf; name="=?utf-8?q?fiche_d=C3=A9p=C3=B4t.pdf?="'}, "fiche dépôt.pdf"),
    ],
)
def test_mailjet_attachment_names_are_read_as_in_raw_mime(
    client: Any, services: Any, headers: dict[str, Any], name: str
) -> None:
    """Mailjet names an attachment only in its part's headers (ContentRef is `AttachmentN`)."""
    posted = fixture("mailjet/parse.json")
    posted["Parts"][2]["Headers"] = {"Content-Type": "application/pdf", **headers}
    posted["Headers"]["Message-ID"] = f"<names-{abs(hash(name))}@example.com>"
    (summary,) = client.post("/webhooks/mailjet/inbound", json=posted, headers=basic_auth()).json["deliveries"]
    body = services.store.payload(summary["id"])["body"]
    assert name in body and "Attachment1" not in body


# Brevo ---------------------------------------------------------------------------------------

BREVO_AUTH = {**AUTH, "bearer": {"Authorization": f"Bearer {BREVO_TOKEN}"}}


class TestBrevoInbound(CarriesAttachments, WebhookCases):
    attachment_names = ("pay stub.pdf",)
    path = "/webhooks/brevo/inbound"
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": fixture("brevo/inbound.json"), "headers": BREVO_AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {"items": "nope"}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {"items": [], "padding": "x" * size}, "headers": basic_auth()}


def test_brevo_accepts_its_bearer_token_and_refuses_a_wrong_one(client: Any) -> None:
    assert client.post("/webhooks/brevo/inbound", **TestBrevoInbound().request("bearer")).status_code == 200
    wrong = {"json": fixture("brevo/inbound.json"), "headers": {"Authorization": "Bearer guess"}}
    assert client.post("/webhooks/brevo/inbound", **wrong).status_code == 401


def test_brevo_delivered_event_logs_the_sent_email(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    api_client.put("/v1/prospects/P8", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post("/webhooks/brevo/events", json=fixture("brevo/delivered.json"), headers=basic_auth())
    (pending,) = response.json["deliveries"]
    shown = logged_as(api_client, pending["id"])
    assert (shown["prospectId"], shown["type"]) == ("P8", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert shown["messageId"] == "202004010122.88414113127@smtp-relay.mailin.fr"
    listed, content = storage.seen
    assert listed["query"] == "messageId=%3C202004010122.88414113127%40smtp-relay.mailin.fr%3E"
    assert content["path"] == "/v3/smtp/emails/5a4d8f8c-0b6b-4a8b-9a3e-0f6c5d1e2a3b"


# Resend --------------------------------------------------------------------------------------


class TestResend(WebhookCases):
    path = "/webhooks/resend"
    expected = FETCH_PENDING
    retry_id: ClassVar[str] = "msg_2LXmxf0cUQbM6rnQ7cF6lUK4Pjf"

    def request(self, auth: str = "valid") -> dict[str, Any]:
        data = payload("resend/received.json")
        headers = svix_headers(data, msg_id=self.retry_id)  # a retry repeats the svix-id
        if auth == "wrong":
            headers = svix_headers(data, "whsec_" + base64.b64encode(b"another secret").decode())
        return {"data": data, "content_type": JSON, "headers": {} if auth == "missing" else headers}

    def malformed_request(self) -> dict[str, Any]:
        data = b'{"type": "email.received", "data": {"email_id": 5}}'
        return {"data": data, "content_type": JSON, "headers": svix_headers(data)}

    def oversized_request(self, size: int) -> dict[str, Any]:
        data = b'{"padding": "' + b"x" * size + b'"}'
        return {"data": data, "content_type": JSON, "headers": svix_headers(data)}


def test_resend_refuses_a_stale_timestamp(client: Any) -> None:
    data = payload("resend/received.json")
    response = client.post("/webhooks/resend", data=data, content_type=JSON, headers=svix_headers(data, age=600))
    assert response.status_code == 401


def test_resend_refuses_a_prefix_of_the_signature(client: Any) -> None:
    data = payload("resend/received.json")
    headers = svix_headers(data)
    valid = headers["svix-signature"].split()[-1]
    for cut in (valid[:12], valid[:-4], "v1," + valid[3:-1]):
        response = client.post(
            "/webhooks/resend", data=data, content_type=JSON, headers={**headers, "svix-signature": cut}
        )
        assert response.status_code == 401, cut


def test_resend_received_email_is_fetched_by_the_worker(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    data = payload("resend/received.json")
    (pending,) = api_client.post("/webhooks/resend", data=data, content_type=JSON,
                                 headers=svix_headers(data)).json["deliveries"]  # fmt: skip
    shown = logged_as(api_client, pending["id"])
    assert (shown["prospectId"], shown["type"]) == ("4WXU6U2J", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")
    assert shown["messageId"] == "CAF=visit-4711@mail.example.com"
    (request,) = storage.seen
    assert request["path"] == "/emails/receiving/56761188-7520-42d8-8898-ff6fc54ce618"


def test_resend_sent_and_delivered_are_one_outbound_email(api_client: Any, storage: StorageStub,
                                                          api_worker: Any) -> None:  # fmt: skip
    api_client.put("/v1/prospects/P9", json={"emails": ["lee@example.com"]}, headers=BEARER)
    delivered = payload("resend/sent.json")
    sent = delivered.replace(b'"email.delivered"', b'"email.sent"')
    first = api_client.post("/webhooks/resend", data=sent, content_type=JSON, headers=svix_headers(sent))
    shown = logged_as(api_client, first.json["deliveries"][0]["id"])
    assert (shown["prospectId"], shown["type"]) == ("P9", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    second = api_client.post("/webhooks/resend", data=delivered, content_type=JSON, headers=svix_headers(delivered))
    again = wait_for_status(api_client, second.json["deliveries"][0]["id"], "fetched")
    assert again["reason"] == f"logged as {shown['id']}"  # the same email, not logged twice


# Postmark outbound ---------------------------------------------------------------------------


class TestPostmarkDelivery(WebhookCases):
    path = "/webhooks/postmark/outbound"
    expected = FETCH_PENDING

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": fixture("postmark/delivery.json"), "headers": AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {"RecordType": "Delivery", "MessageID": None}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {**fixture("postmark/delivery.json"), "Details": "x" * size}, "headers": basic_auth()}


class TestBrevoEvents(WebhookCases):
    path = "/webhooks/brevo/events"
    expected = FETCH_PENDING

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": fixture("brevo/delivered.json"), "headers": BREVO_AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"json": {"event": "delivered", "email": "lee@example.com"}, "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": {**fixture("brevo/delivered.json"), "tag": "x" * size}, "headers": basic_auth()}


class TestMandrillSends(TestMandrill):
    expected = FETCH_PENDING
    # Send events only name the message: its attachments are listed once the worker fetched it.
    test_attachments_are_listed_by_their_file_names = None  # type: ignore[assignment]

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return mandrill(auth, events=fixture("mandrill/send-events.json")[:1])


def test_postmark_delivery_webhook_logs_the_sent_message(api_client: Any, storage: StorageStub,
                                                         api_worker: Any) -> None:  # fmt: skip
    api_client.put("/v1/prospects/PM1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    response = api_client.post(
        "/webhooks/postmark/outbound", json=fixture("postmark/delivery.json"), headers=basic_auth()
    )
    (pending,) = response.json["deliveries"]
    assert (pending["status"], pending["prospectId"], pending["type"]) == FETCH_PENDING
    shown = logged_as(api_client, pending["id"])
    assert (shown["prospectId"], shown["type"]) == ("PM1", "EMAIL_MESSAGE_TO_PROSPECT_SENT")
    assert shown["messageId"] == "883953f4-6105-42a2-a16a-77a8eac79483@mtasv.net"  # from the headers
    (request,) = storage.seen
    assert request["path"] == "/messages/outbound/883953f4-6105-42a2-a16a-77a8eac79483/details"


def test_an_inbound_copy_and_the_sent_event_are_one_email(api_client: Any, storage: StorageStub,
                                                          api_worker: Any) -> None:  # fmt: skip
    """The BCC copy arrives first through the MTA; Postmark's Delivery event for it logs nothing new."""
    api_client.put("/v1/prospects/PM2", json={"emails": ["lee@example.com"]}, headers=BEARER)
    copy = mime(sender="Pat Agent <pat@acme-living.com>", to="lee@example.com", subject="Your tour on Friday",
                message_id=SENT_ID, extra_headers=authenticated())  # fmt: skip
    (first,) = post_mime(api_client, copy).json["deliveries"]
    response = api_client.post(
        "/webhooks/postmark/outbound", json=fixture("postmark/delivery.json"), headers=basic_auth()
    )
    fetched = wait_for_status(api_client, response.json["deliveries"][0]["id"], "fetched")
    assert fetched["reason"] == f"logged as {first['id']}"


def test_mandrill_sent_message_keeps_its_own_message_id(api_client: Any, storage: StorageStub, api_worker: Any) -> None:
    (send,) = api_client.post(MANDRILL, **mandrill(events=fixture("mandrill/send-events.json")[:1])).json["deliveries"]
    assert logged_as(api_client, send["id"])["messageId"] == "tour-friday-77@acme-living.com"


def test_postmark_other_record_types_are_ignored(client: Any) -> None:
    bounce = {**fixture("postmark/delivery.json"), "RecordType": "Bounce"}
    response = client.post("/webhooks/postmark/outbound", json=bounce, headers=basic_auth())
    assert response.json["status"] == "ignored"


def test_a_wrong_api_key_makes_the_fetch_dead(make_settings: Any, storage: StorageStub, start_worker: Any) -> None:
    settings = make_settings(**provider_api_env(storage.url), POSTMARK_SERVER_TOKEN="wrong")
    client = create_app(settings).test_client()
    start_worker(settings)
    response = client.post("/webhooks/postmark/outbound", json=fixture("postmark/delivery.json"), headers=basic_auth())
    dead = wait_for_status(client, response.json["deliveries"][0]["id"], "dead")
    assert "401" in dead["lastError"]


def test_a_provider_api_outage_is_retried_and_a_redirect_never_followed(
    api_client: Any, storage: StorageStub, api_worker: Any
) -> None:
    storage.failures.extend([503, 302])
    response = api_client.post("/webhooks/postmark/outbound", json=fixture("postmark/delivery.json"),
                               headers=basic_auth())  # fmt: skip
    logged_as(api_client, response.json["deliveries"][0]["id"])
    assert [r["path"] for r in storage.seen] == ["/messages/outbound/883953f4-6105-42a2-a16a-77a8eac79483/details"] * 3


# Amazon SES through SNS ----------------------------------------------------------------------

SES = "/webhooks/ses"


def ses_notification(sns: SnsSigner, **changes: Any) -> dict[str, Any]:
    message = {**fixture("ses/notification.json"), "Message": json.dumps(fixture("ses/received-event.json"))}
    message.update(changes)
    return sns.sign(message, version=str(changes.pop("SignatureVersion", "1")))


def ses_post(message: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    return {"data": json.dumps(message), "content_type": "text/plain; charset=UTF-8",
            "headers": {"x-amz-sns-message-type": kind or message["Type"]}}  # fmt: skip


@pytest.fixture
def ses_settings(make_settings: Any, sns: SnsSigner) -> Any:
    return make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin)


@pytest.fixture
def ses_client(ses_settings: Any) -> Any:
    return create_app(ses_settings).test_client()


class TestSes(WebhookCases):
    path = SES
    expected = REPLY_TAGGED

    @pytest.fixture(autouse=True)
    def signer(self, sns: SnsSigner) -> None:
        self.sns = sns

    @pytest.fixture
    def client(self, make_settings: Any) -> Any:  # type: ignore[override]
        return create_app(make_settings()).test_client()

    @pytest.fixture
    def make_settings(self, make_settings: Any, sns: SnsSigner) -> Any:  # type: ignore[override]
        return lambda **o: make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin, **o)

    def request(self, auth: str = "valid") -> dict[str, Any]:
        message = ses_notification(self.sns)
        if auth == "missing":
            message = {k: v for k, v in message.items() if k != "Signature"}
        if auth == "wrong":
            message = {**message, "Message": message["Message"].replace("4WXU6U2J", "OTHER123")}
        return ses_post(message)

    def malformed_request(self) -> dict[str, Any]:
        return ses_post(ses_notification(self.sns, Message="{not json"))

    def oversized_request(self, size: int) -> dict[str, Any]:
        return ses_post(ses_notification(self.sns, Message=json.dumps({"padding": "x" * size})))


def test_sns_signature_version_2_is_verified(ses_client: Any, sns: SnsSigner) -> None:
    response = ses_client.post(SES, **ses_post(ses_notification(sns, SignatureVersion="2")))
    assert response.status_code == 200 and response.json["status"] == "queued"


def test_sns_certificate_from_an_unlisted_host_is_never_fetched(ses_client: Any, sns: SnsSigner) -> None:
    for url in ("https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
                "https://attacker-bucket.s3.amazonaws.com/cert.pem",
                "http://sns.us-east-1.amazonaws.com/cert.pem",
                sns.origin.replace("127.0.0.1", "localhost") + "/cert.pem",
                sns.origin + "/cert.txt"):  # fmt: skip
        message = sns.sign({**fixture("ses/notification.json"), "Message": "{}"}, cert_url=url)
        assert ses_client.post(SES, **ses_post(message)).status_code == 401, url
    assert sns.seen == []


def test_sns_unknown_topic_is_401_and_nothing_is_fetched(ses_client: Any, sns: SnsSigner, redis_client: Any) -> None:
    message = ses_notification(sns, TopicArn="arn:aws:sns:us-east-1:999999999999:someone-else")
    assert ses_client.post(SES, **ses_post(message)).status_code == 401
    assert sns.seen == [] and redis_client.dbsize() == 0


def test_sns_message_type_header_must_match(ses_client: Any, sns: SnsSigner) -> None:
    response = ses_client.post(SES, **ses_post(ses_notification(sns), kind="SubscriptionConfirmation"))
    assert response.status_code == 401


def test_sns_subscription_to_an_allowed_topic_is_confirmed(ses_client: Any, sns: SnsSigner) -> None:
    confirmation = fixture("ses/subscription-confirmation.json")
    confirmation["SubscribeURL"] = sns.origin + "/?Action=ConfirmSubscription&Token=2336412f37fb687f"
    response = ses_client.post(SES, **ses_post(sns.sign(confirmation, version="2")))
    assert response.status_code == 200 and response.json["status"] == "ignored"
    assert sns.seen[-1] == "/?Action=ConfirmSubscription&Token=2336412f37fb687f"


def test_ses_content_left_in_s3_is_queued_for_the_worker_to_fetch(ses_client: Any, sns: SnsSigner) -> None:
    """The fetch itself, against a real S3 server, is tests/test_ses_s3.py."""
    event = fixture("ses/received-event.json")
    del event["content"]
    event["receipt"]["action"] = {"type": "S3", "bucketName": "mail", "objectKey": "in/abc"}
    (summary,) = ses_client.post(SES, **ses_post(ses_notification(sns, Message=json.dumps(event)))).json["deliveries"]
    shown = ses_client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert shown["status"] == "queued" and shown["subject"] == event["mail"]["commonHeaders"]["subject"]


def test_ses_message_id_is_the_rfc_one_not_ses_own(ses_client: Any, sns: SnsSigner) -> None:
    (summary,) = ses_client.post(SES, **ses_post(ses_notification(sns))).json["deliveries"]
    shown = ses_client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert shown["messageId"] == "CAF=visit-4711@mail.example.com"
