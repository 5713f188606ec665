"""`POST /webhooks/postmark/inbound`: Postmark's inbound JSON behind basic auth."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import BEARER, basic_auth, payload
from tests.webhook_cases import WebhookCases

AUTH = {"valid": basic_auth(), "missing": {}, "wrong": basic_auth(password="guess")}
PATH = "/webhooks/postmark/inbound"


def inbound(**changes: Any) -> dict[str, Any]:
    body = json.loads(payload("postmark/inbound.json"))
    body.update(changes)
    return body


class TestPostmarkWebhook(WebhookCases):
    path = PATH
    expected = ("queued", "PM555", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return {"json": inbound(), "headers": AUTH[auth]}

    def malformed_request(self) -> dict[str, Any]:
        return {"data": "[1, 2", "content_type": "application/json", "headers": basic_auth()}

    def oversized_request(self, size: int) -> dict[str, Any]:
        return {"json": inbound(TextBody="x" * size), "headers": basic_auth()}


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
