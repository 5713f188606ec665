"""Partner API (SPEC §4.2): bearer token, directory, create-through-Knock, deliveries, errors."""

from __future__ import annotations

import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from relay.app import create_app
from relay.queue import random_uuid
from relay.store import new_delivery_id
from tests.conftest import Sandbox
from tests.helpers import BEARER, mime, post_mime


def test_api_is_absent_without_a_token(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_API_TOKEN="")).test_client()
    assert client.get("/v1/prospects/P1", headers=BEARER).status_code == 404


@pytest.mark.parametrize("header", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdC10b2tlbg=="}])
def test_missing_or_wrong_token_is_401(client: Any, header: dict[str, str]) -> None:
    response = client.get("/v1/prospects/P1", headers=header)
    assert response.status_code == 401 and response.json["error"]


def test_prospect_directory_round_trip_is_case_insensitive(client: Any) -> None:
    put = client.put(
        "/v1/prospects/P1", json={"emails": ["Renter@Example.COM"], "agentUsername": "pat"}, headers=BEARER
    )
    assert put.status_code == 200
    assert client.get("/v1/prospects/P1", headers=BEARER).json == {
        "prospectId": "P1",
        "emails": ["renter@example.com"],
        "agentUsername": "pat",
    }
    found = client.get("/v1/prospects?email=RENTER@example.com", headers=BEARER).json["prospects"]
    assert [p["prospectId"] for p in found] == ["P1"]
    # Changing the emails drops the old address from lookups.
    client.put("/v1/prospects/P1", json={"emails": ["new@example.com"]}, headers=BEARER)
    assert client.get("/v1/prospects?email=renter@example.com", headers=BEARER).json["prospects"] == []
    assert client.delete("/v1/prospects/P1", headers=BEARER).status_code == 204
    assert client.get("/v1/prospects/P1", headers=BEARER).status_code == 404
    assert client.delete("/v1/prospects/P1", headers=BEARER).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "emails"), ({"emails": []}, "emails"), ({"emails": ["not-an-email"]}, "emails"),
     ({"emails": ["a@b.com"], "agentUsername": 5}, "agentUsername"), ({"emails": ["a@b.com"], "x": 1}, "x")],
)  # fmt: skip
def test_invalid_prospect_bodies_get_field_messages(client: Any, body: dict[str, Any], field: str) -> None:
    response = client.put("/v1/prospects/P1", json=body, headers=BEARER)
    assert response.status_code == 400 and field in response.json["details"]


def test_non_json_body_is_400(client: Any) -> None:
    response = client.put("/v1/prospects/P1", data="emails=x", content_type="text/plain", headers=BEARER)
    assert response.status_code == 400


def test_agents_directory(client: Any) -> None:
    assert client.put("/v1/agents/dana", json={"emails": ["Dana@Acme-Living.com"]}, headers=BEARER).status_code == 200
    assert client.get("/v1/agents/dana", headers=BEARER).json == {
        "username": "dana",
        "emails": ["dana@acme-living.com"],
    }
    taken = client.put("/v1/agents/other", json={"emails": ["dana@acme-living.com"]}, headers=BEARER)
    assert taken.status_code == 409
    assert client.delete("/v1/agents/dana", headers=BEARER).status_code == 204
    assert client.get("/v1/agents/dana", headers=BEARER).status_code == 404


def test_create_prospect_in_knock_keeps_the_id(client: Any, sandbox: Sandbox) -> None:
    body = {"propertyId": "prop-1", "profile": {"firstName": "Jo", "email": "Jo@Example.com"}, "agentUsername": "pat"}
    response = client.post("/v1/prospects", json=body, headers=BEARER)
    assert response.status_code == 201
    prospect_id = response.json["prospectId"]
    assert sandbox.prospect(prospect_id)["profile"]["firstName"] == "Jo"
    found = client.get("/v1/prospects?email=jo@example.com", headers=BEARER).json["prospects"]
    assert [p["prospectId"] for p in found] == [prospect_id]


def test_create_prospect_without_email_or_when_knock_fails(client: Any, sandbox: Sandbox) -> None:
    assert client.post("/v1/prospects", json={"profile": {}}, headers=BEARER).status_code == 400
    sandbox.fault(status=503, path="prospect")
    response = client.post("/v1/prospects", json={"profile": {"email": "a@b.com"}}, headers=BEARER)
    assert response.status_code == 502


def test_message_bodies_are_validated_field_by_field(client: Any) -> None:
    response = client.post("/v1/messages", json={"from": "nope", "to": [], "type": "FAX"}, headers=BEARER)
    assert response.status_code == 400
    assert {"from", "to", "subject", "type"} <= set(response.json["details"])


def test_delivery_ids_sort_in_creation_order_even_within_one_millisecond() -> None:
    # Lists order equal receipt times by id, so ids made in the same millisecond must still ascend.
    made = [new_delivery_id() for _ in range(3000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in made)
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda _: new_delivery_id(), range(4000)))
    assert len(set(threaded)) == len(threaded)


def test_ids_made_in_forked_processes_differ() -> None:
    """gunicorn forks its web processes from one that imported the relay: the random part of
    delivery, request and queue message ids must differ between them, not repeat."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child writes its ids and leaves at once
        os.write(writer, " ".join([new_delivery_id()[16:], random_uuid()]).encode())
        os._exit(0)
    os.close(writer)
    theirs = os.read(reader, 1000).decode().split()
    os.waitpid(child, 0)
    ours = [new_delivery_id()[16:], random_uuid()]
    assert len(theirs) == 2 and not set(theirs) & set(ours)


def test_deliveries_list_filters_and_pages_newest_first(client: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    ids = [post_mime(client, mime(message_id=f"<{i}@x>")).json["deliveries"][0]["id"] for i in range(5)]
    unmatched = post_mime(client, mime(sender="stranger@example.com", message_id="<u@x>")).json["deliveries"][0]["id"]

    first = client.get("/v1/deliveries?prospectId=P1&limit=2", headers=BEARER).json
    second = client.get(f"/v1/deliveries?prospectId=P1&limit=2&cursor={first['nextCursor']}", headers=BEARER).json
    third = client.get(f"/v1/deliveries?prospectId=P1&limit=2&cursor={second['nextCursor']}", headers=BEARER).json
    paged = [d["id"] for page in (first, second, third) for d in page["deliveries"]]
    assert paged == list(reversed(ids)) and third["nextCursor"] is None

    by_status = client.get("/v1/deliveries?status=unmatched", headers=BEARER).json["deliveries"]
    assert [d["id"] for d in by_status] == [unmatched]
    for query in ("3@x", "%3C3@x%3E"):  # with or without angle brackets
        by_message = client.get(f"/v1/deliveries?messageId={query}", headers=BEARER).json["deliveries"]
        assert [d["id"] for d in by_message] == [ids[3]]
    assert (
        client.get("/v1/deliveries?status=queued&prospectId=P1", headers=BEARER).json["deliveries"][0]["id"] == ids[-1]
    )


def test_delivery_shows_every_documented_field(client: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    delivery_id = post_mime(client, mime()).json["deliveries"][0]["id"]
    shown = client.get(f"/v1/deliveries/{delivery_id}", headers=BEARER).json
    expected = {"status", "type", "prospectId", "agentUsername", "messageId", "provider", "subject", "sentTime",
                "receivedAt", "attempts", "lastError", "communicationId", "deliveredAt", "reason"}  # fmt: skip
    assert expected <= set(shown)
    assert (shown["provider"], shown["agentUsername"], shown["status"]) == ("mime", "pat", "queued")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/deliveries/nope"), ("POST", "/v1/deliveries/nope/replay"), ("POST", "/v1/deliveries/nope/resolve")],
)
def test_unknown_delivery_ids_are_404(client: Any, method: str, path: str) -> None:
    response = client.open(path, method=method, json={"prospectId": "P1"}, headers=BEARER)
    assert response.status_code == 404


def test_invalid_queries_are_400(client: Any) -> None:
    assert client.get("/v1/deliveries?status=lost", headers=BEARER).status_code == 400
    assert client.get("/v1/deliveries?cursor=abc", headers=BEARER).status_code == 400
    assert client.get("/v1/prospects", headers=BEARER).status_code == 400


def test_replay_and_resolve_refuse_the_wrong_status(client: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    queued = post_mime(client, mime()).json["deliveries"][0]["id"]
    assert client.post(f"/v1/deliveries/{queued}/replay", headers=BEARER).status_code == 409
    assert client.post(f"/v1/deliveries/{queued}/resolve", json={"prospectId": "P2"}, headers=BEARER).status_code == 409


def test_resolving_onto_a_prospect_that_already_has_the_email_conflicts(client: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    post_mime(client, mime(message_id="<same@x>"))
    stray = post_mime(client, mime(sender="other@example.com", message_id="<same@x>")).json["deliveries"][0]
    assert stray["status"] == "unmatched"
    response = client.post(f"/v1/deliveries/{stray['id']}/resolve", json={"prospectId": "P1"}, headers=BEARER)
    assert response.status_code == 409


def test_redis_down_is_503_on_the_api(make_settings: Any) -> None:
    client = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
    assert client.get("/v1/prospects/P1", headers=BEARER).status_code == 503


def test_openapi_document_describes_every_route_the_app_serves(app: Any, client: Any) -> None:
    document = client.get("/v1/openapi.json").json
    assert document["openapi"] == "3.0.3"
    served = {
        (re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.startswith("console.")  # HTML, not the API
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    documented = {(path, verb) for path, item in document["paths"].items() for verb in item if verb != "parameters"}
    assert documented == served
    webhook = document["paths"]["/webhooks/sendgrid/inbound"]["post"]
    assert set(webhook["requestBody"]["content"]) == {"multipart/form-data", "application/x-www-form-urlencoded"}
    assert webhook["security"] == [{"basic": []}]
    assert {"200", "401", "413", "503"} <= set(webhook["responses"])
    assert "406" in document["paths"]["/webhooks/mailgun/inbound"]["post"]["responses"]
    assert document["paths"]["/v1/messages"]["post"]["requestBody"]["required"] is True


def test_openapi_schemas_say_what_the_server_enforces(client: Any) -> None:
    """The drift that hand-written documents had: null text allowed, empty agent refused."""
    schemas = client.get("/v1/openapi.json").json["components"]["schemas"]
    message = schemas["MessageInput"]
    assert message["properties"]["text"]["nullable"] is True
    assert message["properties"]["agentUsername"]["minLength"] == 1
    assert message["additionalProperties"] is False
    assert set(message["required"]) == {"from", "to", "subject"}
    base = {"from": "renter@example.com", "to": ["leasing@acme.example"], "subject": "Hi"}
    assert client.post("/v1/messages", json={**base, "text": None}, headers=BEARER).status_code == 202
    refused = client.post("/v1/messages", json={**base, "agentUsername": ""}, headers=BEARER)
    assert refused.status_code == 400 and "agentUsername" in refused.json["details"]


def test_a_delivery_path_only_takes_a_delivery_id(client: Any) -> None:
    """`/v1/deliveries/replay` is the bulk replay, never a delivery called "replay"."""
    assert client.get("/v1/deliveries/replay", headers=BEARER).status_code == 405
    allowed = client.options("/v1/deliveries/replay", headers=BEARER).headers["Allow"]
    assert set(allowed.split(", ")) == {"OPTIONS", "POST"}


def test_deliveries_filter_by_provider_address_subject_and_time(client: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    post_mime(client, mime(subject="Parking question", message_id="<a@x>"))
    post_mime(client, mime(subject="Pets allowed?", sender="other@example.org", message_id="<b@x>"))

    def subjects(**query: str) -> list[str]:
        response = client.get("/v1/deliveries", query_string=query, headers=BEARER)
        assert response.status_code == 200, response.json
        return [d["subject"] for d in response.json["deliveries"]]

    assert subjects(address="Other@Example.org") == ["Pets allowed?"]
    assert subjects(subject="parking QUESTION") == ["Parking question"]
    assert subjects(provider="mime") == ["Pets allowed?", "Parking question"]
    assert subjects(provider="sendgrid") == []
    assert subjects(since="2999-01-01T00:00:00Z") == []
    assert subjects(until="0001-01-01T00:00:00+14:00") == []
    shown = client.get("/v1/deliveries", query_string={"address": "renter@example.com"}, headers=BEARER).json
    (first,) = shown["deliveries"]
    assert (first["sender"], first["prospectFoundBy"]) == (
        "renter@example.com",
        "the sender's address in the directory",
    )


def test_queue_message_ids_are_version_4_uuids_as_the_standard_library_writes_them() -> None:
    for _ in range(2000):
        made = random_uuid()
        parsed = uuid.UUID(made)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(uuid.UUID(int=parsed.int, version=4)) == made


def test_resolving_to_a_prospect_nobody_knows_is_refused(client: Any, sandbox: Sandbox) -> None:
    stray = post_mime(client, mime(sender="stranger@example.org")).json["deliveries"][0]
    refused = client.post(f"/v1/deliveries/{stray['id']}/resolve", json={"prospectId": "NOPE9"}, headers=BEARER)
    assert refused.status_code == 409
    assert "Knock has no prospect 'NOPE9'" in refused.json["error"]
    assert client.get(f"/v1/deliveries/{stray['id']}", headers=BEARER).json["status"] == "unmatched"
    sandbox.fault(status=503, count=5, path="prospect")
    unknown = client.post(f"/v1/deliveries/{stray['id']}/resolve", json={"prospectId": "P4"}, headers=BEARER)
    assert unknown.status_code == 502 and "could not ask Knock" in unknown.json["error"]
    sandbox.call("POST", "/_sandbox/reset").raise_for_status()  # Knock answers again, and knows P4
    sandbox.seed("P4")
    known = client.post(f"/v1/deliveries/{stray['id']}/resolve", json={"prospectId": "P4"}, headers=BEARER)
    assert known.status_code == 202 and known.json["prospectId"] == "P4"
