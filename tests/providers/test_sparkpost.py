"""`POST /webhooks/sparkpost/inbound`: SparkPost relay webhooks (a JSON array of messages) behind
the relay webhook's auth token."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.helpers import BEARER, SPARKPOST_TOKEN, payload_json
from tests.webhook_cases import REPLY_TAGGED, CarriesMimeAttachments, WebhookCases

JSON = "application/json"


def sparkpost(auth: str = "valid", body: Any = None) -> dict[str, Any]:
    token = {"valid": SPARKPOST_TOKEN, "missing": None, "wrong": "guess"}[auth]
    headers = {"X-MessageSystems-Webhook-Token": token} if token else {}
    return {"data": json.dumps(payload_json("sparkpost/relay.json") if body is None else body), "content_type": JSON,
            "headers": headers}  # fmt: skip


class TestSparkPost(CarriesMimeAttachments, WebhookCases):
    path = "/webhooks/sparkpost/inbound"
    expected = REPLY_TAGGED

    def request(self, auth: str = "valid") -> dict[str, Any]:
        return sparkpost(auth)

    def malformed_request(self) -> dict[str, Any]:
        return sparkpost(body={"msys": "not an array"})

    def oversized_request(self, size: int) -> dict[str, Any]:
        return sparkpost(body=[{"msys": {}, "padding": "x" * size}])

    def carrying(self, raw: bytes) -> dict[str, Any]:
        message = payload_json("sparkpost/relay.json")[1]["msys"]["relay_message"]
        content = {"email_rfc822": base64.b64encode(raw).decode(), "email_rfc822_is_base64": True}
        return sparkpost(body=[{"msys": {"relay_message": {**message, "content": content}}}])


def test_sparkpost_ping_answers_200_with_nothing_stored(client: Any, redis_client: Any) -> None:
    response = client.post("/webhooks/sparkpost/inbound", **sparkpost(body=[{"msys": {}}]))
    assert response.status_code == 200 and response.json["deliveries"] == []


def test_sparkpost_reads_every_message_of_a_batch(client: Any, services: Any) -> None:
    batch = payload_json("sparkpost/relay.json")
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
