"""`POST /webhooks/ses`: Amazon SES receipt rules publishing to SNS, each message checked against
its SNS signature and topic; the content in the notification (base64) or left in S3 for the worker."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from relay.app import create_app
from tests.conftest import SnsSigner
from tests.helpers import BEARER, SES_PATH, payload_json, ses_notification, ses_post
from tests.webhook_cases import REPLY_TAGGED, CarriesMimeAttachments, WebhookCases


@pytest.fixture
def ses_settings(make_settings: Any, sns: SnsSigner) -> Any:
    return make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin)


@pytest.fixture
def ses_client(ses_settings: Any) -> Any:
    return create_app(ses_settings).test_client()


class TestSes(CarriesMimeAttachments, WebhookCases):
    path = SES_PATH
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

    def carrying(self, raw: bytes) -> dict[str, Any]:
        event = payload_json("ses/received-event.json")
        assert event["receipt"]["action"]["encoding"] == "BASE64"
        event["content"] = base64.b64encode(raw).decode()
        return ses_post(ses_notification(self.sns, Message=json.dumps(event)))


def test_sns_signature_version_2_is_verified(ses_client: Any, sns: SnsSigner) -> None:
    response = ses_client.post(SES_PATH, **ses_post(ses_notification(sns, SignatureVersion="2")))
    assert response.status_code == 200 and response.json["status"] == "queued"


def test_sns_certificate_from_an_unlisted_host_is_never_fetched(ses_client: Any, sns: SnsSigner) -> None:
    for url in ("https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
                "https://attacker-bucket.s3.amazonaws.com/cert.pem",
                "http://sns.us-east-1.amazonaws.com/cert.pem",
                sns.origin.replace("127.0.0.1", "localhost") + "/cert.pem",
                sns.origin + "/cert.txt"):  # fmt: skip
        message = sns.sign({**payload_json("ses/notification.json"), "Message": "{}"}, cert_url=url)
        assert ses_client.post(SES_PATH, **ses_post(message)).status_code == 401, url
    assert sns.seen == []


def test_sns_unknown_topic_is_401_and_nothing_is_fetched(ses_client: Any, sns: SnsSigner, redis_client: Any) -> None:
    message = ses_notification(sns, TopicArn="arn:aws:sns:us-east-1:999999999999:someone-else")
    assert ses_client.post(SES_PATH, **ses_post(message)).status_code == 401
    assert sns.seen == [] and redis_client.dbsize() == 0


def test_sns_message_type_header_must_match(ses_client: Any, sns: SnsSigner) -> None:
    response = ses_client.post(SES_PATH, **ses_post(ses_notification(sns), kind="SubscriptionConfirmation"))
    assert response.status_code == 401


def test_sns_subscription_to_an_allowed_topic_is_confirmed(ses_client: Any, sns: SnsSigner) -> None:
    confirmation = payload_json("ses/subscription-confirmation.json")
    confirmation["SubscribeURL"] = sns.origin + "/?Action=ConfirmSubscription&Token=2336412f37fb687f"
    response = ses_client.post(SES_PATH, **ses_post(sns.sign(confirmation, version="2")))
    assert response.status_code == 200 and response.json["status"] == "ignored"
    assert sns.seen[-1] == "/?Action=ConfirmSubscription&Token=2336412f37fb687f"


def test_ses_content_left_in_s3_is_queued_for_the_worker_to_fetch(ses_client: Any, sns: SnsSigner) -> None:
    """The fetch itself, against a real S3 server, is tests/providers/test_ses_s3.py."""
    event = payload_json("ses/received-event.json")
    del event["content"]
    event["receipt"]["action"] = {"type": "S3", "bucketName": "mail", "objectKey": "in/abc"}
    response = ses_client.post(SES_PATH, **ses_post(ses_notification(sns, Message=json.dumps(event))))
    (summary,) = response.json["deliveries"]
    shown = ses_client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert shown["status"] == "queued" and shown["subject"] == event["mail"]["commonHeaders"]["subject"]


def test_ses_message_id_is_the_rfc_one_not_ses_own(ses_client: Any, sns: SnsSigner) -> None:
    (summary,) = ses_client.post(SES_PATH, **ses_post(ses_notification(sns))).json["deliveries"]
    shown = ses_client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert shown["messageId"] == "CAF=visit-4711@mail.example.com"
