"""`POST /webhooks/resend`: Resend's Svix-signed events. `email.received` and `email.sent` /
`email.delivered` carry metadata only; the worker fetches the email from Resend's API."""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

import pytest

from tests.conftest import Sandbox, StorageStub
from tests.helpers import BEARER, logged_as, payload, payload_json, svix_headers, wait_for_status
from tests.webhook_cases import DECODED_ATTACHMENT_NAMES, FETCH_PENDING, CarriesAttachments, WebhookCases

JSON = "application/json"
RECEIVED = "/emails/receiving/56761188-7520-42d8-8898-ff6fc54ce618"


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


class TestResendReceivedAttachments(CarriesAttachments):
    """`email.received` names the email; Resend's received-email API lists its attachments
    (`filename`, `content_type`, `content_disposition`, `content_id`, `size`)."""

    path = "/webhooks/resend"
    fetched = True
    attachment_names = (*DECODED_ATTACHMENT_NAMES, "signed lease.pdf")

    @pytest.fixture
    def client(self, api_client: Any, api_worker: Any, storage: StorageStub, sandbox: Sandbox) -> Any:  # type: ignore[override]
        sandbox.seed("4WXU6U2J", agent="kim")

        def entry(name: str, content_type: str = "application/pdf", disposition: str = "attachment",
                  content_id: str | None = None) -> dict[str, Any]:  # fmt: skip
            return {"id": f"att-{abs(hash(name))}", "filename": name, "content_type": content_type,
                    "content_disposition": disposition, "content_id": content_id, "size": 13}  # fmt: skip

        found = payload_json("resend/received-email.json")
        found["attachments"] = [*map(entry, DECODED_ATTACHMENT_NAMES),
                                entry("signed lease.pdf", content_id="lease@apple"),  # Apple Mail: still a file
                                entry("logo.png", "image/png", "inline", "logo@acme")]  # fmt: skip
        storage.answers[RECEIVED] = json.dumps(found).encode()
        return api_client

    def request(self, auth: str = "valid") -> dict[str, Any]:
        data = payload("resend/received.json")
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
    assert request["path"] == RECEIVED


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
