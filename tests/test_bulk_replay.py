"""Bulk replay by filter: every dead delivery that the delivery list's filters (and a piece of the
last error) find is queued again, each one audited; replaying twice queues nothing new. Through the
API, the CLI and the console (behind a page that says how many)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from relay.__main__ import cli
from relay.audit import recent_actions
from relay.knock.schema import render_log_email
from relay.message import build_email
from relay.routing import FROM_PROSPECT
from relay.store import DEAD, Delivery, NewRecord, new_delivery_id
from tests.conftest import Sandbox
from tests.helpers import BEARER, CONSOLE_USER, relay_env, wait_for_status
from tests.test_console import csrf_token, sign_in


def store_dead(services: Any, count: int, *, provider: str, error: str, received: datetime | None = None) -> list[str]:
    """`count` dead deliveries for prospect P1, each with a Knock body the worker can send."""
    received = received or datetime.now(UTC)
    records = []
    for _ in range(count):
        delivery_id = new_delivery_id()
        email = build_email(
            headers=[("From", "renter@example.com"), ("To", "leasing@acme-living.com"), ("Subject", "Tour?")],
            text="Friday?",
            message_id=f"{delivery_id}@example.com",
        )
        payload = render_log_email(email, FROM_PROSPECT, "pat", received)
        delivery = Delivery(
            id=delivery_id,
            status=DEAD,
            type=FROM_PROSPECT,
            messageId=email.message_id,
            provider=provider,
            subject="Tour?",
            sentTime=payload["sentTime"],
            receivedAt=int(received.timestamp() * 1000),
            direction="inbound",
            prospectId="P1",
            agentUsername="pat",
            lastError=error,
            sender="renter@example.com",
            recipients=["leasing@acme-living.com"],
        )
        records.append(NewRecord(delivery, payload))
    services.store.create_all(records)
    return [record.delivery.id for record in records]


def statuses(client: Any, ids: list[str]) -> set[str]:
    return {client.get(f"/v1/deliveries/{i}", headers=BEARER).json["status"] for i in ids}


def test_the_api_replays_what_the_filters_find_once(client: Any, services: Any) -> None:
    refused = store_dead(services, 3, provider="mailgun", error="Agent is not assigned to this property")
    other_error = store_dead(services, 2, provider="mailgun", error="Prospect not found")
    other_provider = store_dead(services, 2, provider="postmark", error="Agent is not assigned to this property")
    body = {"status": "dead", "provider": "mailgun", "lastError": "NOT ASSIGNED"}
    answer = client.post("/v1/deliveries/replay", json=body, headers=BEARER)
    assert answer.status_code == 202 and sorted(answer.json["ids"]) == sorted(refused)
    assert statuses(client, refused) == {"queued"} and statuses(client, other_error + other_provider) == {"dead"}
    audited = [a["target"] for a in recent_actions(services.redis, 50) if a["action"] == "replay"]
    assert sorted(audited) == sorted(refused)
    again = client.post("/v1/deliveries/replay", json=body, headers=BEARER)
    assert again.json == {"replayed": 0, "ids": []}


def test_the_time_range_and_address_narrow_it(client: Any, services: Any) -> None:
    old = store_dead(services, 2, provider="ses", error="x", received=datetime.now(UTC) - timedelta(days=2))
    new = store_dead(services, 2, provider="ses", error="x")
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    answer = client.post("/v1/deliveries/replay", json={"status": "dead", "since": since}, headers=BEARER)
    assert sorted(answer.json["ids"]) == sorted(new) and statuses(client, old) == {"dead"}
    by_address = {"status": "dead", "address": "Renter <renter@example.com>"}
    assert sorted(client.post("/v1/deliveries/replay", json=by_address, headers=BEARER).json["ids"]) == sorted(old)


@pytest.mark.parametrize("body", [{}, {"status": "unmatched"}, {"status": "queued"}, {"status": "dead", "since": "x"}])
def test_only_dead_deliveries_and_well_formed_filters_are_taken(client: Any, body: dict[str, str]) -> None:
    answer = client.post("/v1/deliveries/replay", json=body, headers=BEARER)
    assert answer.status_code == 400 and answer.json["details"]


def test_the_cli_replays_by_filter(sandbox: Sandbox, services: Any, client: Any) -> None:
    wanted = store_dead(services, 2, provider="brevo", error="Knock said no")
    store_dead(services, 1, provider="sendgrid", error="Knock said no")
    done = CliRunner().invoke(
        cli, ["deliveries", "replay", "--status", "dead", "--provider", "brevo"], env=relay_env(sandbox.url)
    )
    assert done.exit_code == 0 and "replayed 2 deliveries" in done.output, done.output
    assert statuses(client, wanted) == {"queued"}
    assert {a["operator"] for a in recent_actions(services.redis, 10) if a["action"] == "replay"} == {"cli"}


def test_the_console_says_how_many_before_it_replays_them(client: Any, services: Any) -> None:
    ids = store_dead(services, 3, provider="resend", error="Knock said no")
    store_dead(services, 1, provider="mandrill", error="Knock said no")
    assert sign_in(client).status_code == 302
    listing = client.get("/console/deliveries", query_string={"status": "dead", "provider": "resend"}).text
    assert 'id="replay-matching"' in listing
    confirm_path = "/console/deliveries/replay?status=dead&provider=resend"
    page = client.get(confirm_path).text
    assert re.search(r'id="replay-count">3 dead deliveries match', page) and "Replay all 3" in page
    assert statuses(client, ids) == {"dead"}  # the page itself replays nothing
    token = csrf_token(client, confirm_path)
    no_token = client.post("/console/deliveries/replay", data={"status": "dead", "provider": "resend"})
    assert no_token.status_code == 400 and statuses(client, ids) == {"dead"}
    done = client.post("/console/deliveries/replay", data={"csrf_token": token, "status": "dead", "provider": "resend"})
    assert done.status_code == 302 and statuses(client, ids) == {"queued"}
    operators = {a["operator"] for a in recent_actions(services.redis, 10) if a["action"] == "replay"}
    assert operators == {CONSOLE_USER}
    refused = client.get("/console/deliveries/replay", query_string={"status": "delivered"})
    assert refused.status_code == 400 and "can be replayed" in refused.text


def test_five_hundred_dead_deliveries_are_replayed_and_delivered_once(
    client: Any, services: Any, sandbox: Sandbox, worker: Any
) -> None:
    sandbox.seed("P1", agent="pat")
    ids = store_dead(services, 500, provider="sparkpost", error="Knock was down")
    answer = client.post("/v1/deliveries/replay", json={"status": "dead", "provider": "sparkpost"}, headers=BEARER)
    assert answer.json["replayed"] == 500
    for delivery_id in ids:
        wait_for_status(client, delivery_id, "delivered", timeout=120)
    assert client.post("/v1/deliveries/replay", json={"status": "dead"}, headers=BEARER).json["replayed"] == 0
    assert len(sandbox.requests()) == 500


@pytest.mark.parametrize(
    "body",
    [
        {"status": "dead", "prospectId": ""},
        {"status": "dead", "provider": ""},
        {"status": "dead", "address": "  "},
        {"status": "dead", "messageId": "<>"},
        {"status": "dead", "lastError": " "},
    ],
)
def test_an_empty_filter_is_refused_not_read_as_everything(client: Any, services: Any, body: dict[str, str]) -> None:
    ids = store_dead(services, 2, provider="mailgun", error="x")
    answer = client.post("/v1/deliveries/replay", json=body, headers=BEARER)
    assert answer.status_code == 400 and statuses(client, ids) == {"dead"}


def test_the_cli_refuses_an_id_with_filters_and_an_empty_filter(sandbox: Sandbox, services: Any, client: Any) -> None:
    ids = store_dead(services, 2, provider="brevo", error="x")
    env = relay_env(sandbox.url)
    both = CliRunner().invoke(cli, ["deliveries", "replay", ids[0], "--status", "dead"], env=env)
    narrowed = CliRunner().invoke(cli, ["deliveries", "replay", ids[0], "--provider", "brevo"], env=env)
    assert narrowed.exit_code == 2
    empty = CliRunner().invoke(cli, ["deliveries", "replay", "--status", "dead", "--prospect-id", ""], env=env)
    assert both.exit_code == 2 and empty.exit_code == 2 and statuses(client, ids) == {"dead"}


def test_the_console_refuses_a_message_id_that_names_nothing(client: Any, services: Any) -> None:
    ids = store_dead(services, 2, provider="resend", error="x")
    assert sign_in(client).status_code == 302
    page = client.get("/console/deliveries/replay", query_string={"status": "dead", "messageId": "<>"})
    assert page.status_code == 400 and "Message-ID" in page.text and statuses(client, ids) == {"dead"}
