"""Threads: a reply from an address nobody knows lands on the guest card of the email it replies
to. Every email stored for prospects is remembered by its Message-ID, in the script that stores it;
an unmatched email whose In-Reply-To or References names one is logged for that email's prospects,
saying so (`matchedBy: thread` and the Message-ID it followed)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from relay.app import create_app
from relay.message import build_email
from relay.routing import INBOUND, OUTBOUND, DirectoryView, RoutingRules, route_email
from relay.sender_auth import PASS, SenderAuth
from relay.threads import MAX_REFERENCES, references, remembers, thread_key
from tests.conftest import Sandbox
from tests.helpers import BEARER, authenticated, basic_auth, mime, post_mime, wait_for_status
from tests.test_round_trips import round_trips

RULES = RoutingRules(mailbox_domains=frozenset({"acme-living.com", "reply.acme-living.com"}))
AGENT_PASSED = SenderAuth(PASS, "dkim=pass acme-living.com")


def email(sender: str, to: str, *extra: tuple[str, str], auth: SenderAuth | None = None) -> Any:
    built = build_email(headers=[("From", sender), ("To", to), ("Subject", "Re: tour"), *extra], text="Fine")
    return replace(built, sender_auth=auth) if auth else built


def test_references_are_read_newest_first_once_each_and_bounded() -> None:
    reply = email(
        "a@x.org",
        "b@y.org",
        ("Message-ID", "<self@x.org>"),
        ("In-Reply-To", "<parent@y.org>"),
        ("References", "<root@y.org> <middle@x.org>\r\n <parent@y.org> <self@x.org>"),
    )
    assert references(reply) == ["parent@y.org", "middle@x.org", "root@y.org"]
    long = email("a@x.org", "b@y.org", ("References", " ".join(f"<r{n}@x>" for n in range(100))))
    assert references(long) == [f"r{n}@x" for n in range(99, 99 - MAX_REFERENCES, -1)]
    assert references(email("a@x.org", "b@y.org", ("In-Reply-To", "not an id"))) == []


def test_mail_the_relay_made_an_id_for_is_not_remembered() -> None:
    assert remembers(email("a@x.org", "b@y.org", ("Message-ID", "<real@x.org>")))
    assert not remembers(email("a@x.org", "b@y.org"))  # sha256-…@relay: nobody can reply to it


def threaded(direction: str) -> DirectoryView:
    return DirectoryView(threads={"parent@acme-living.com": {"P7": direction}}, prospect_agents={"P7": "pat"})


def test_an_unknown_sender_replying_to_a_remembered_email_is_logged_on_its_prospect() -> None:
    reply = email("new.address@example.net", "leasing@acme-living.com", ("In-Reply-To", "<parent@acme-living.com>"))
    route = route_email(reply, RULES, threaded(OUTBOUND), references(reply))
    (target,) = route.targets
    assert (route.direction, target.prospect_id, target.agent_username) == (INBOUND, "P7", "pat")
    assert (target.matched_by, target.thread_message_id) == ("thread", "parent@acme-living.com")


def test_an_agents_reply_follows_only_a_prospects_email() -> None:
    reply = email(
        "dana@acme-living.com", "new@example.net", ("In-Reply-To", "<parent@acme-living.com>"), auth=AGENT_PASSED
    )
    route = route_email(reply, RULES, threaded(INBOUND), references(reply))
    assert [t.prospect_id for t in route.targets] == ["P7"] and route.direction == OUTBOUND
    to_own_mail = route_email(reply, RULES, threaded(OUTBOUND), references(reply))
    assert not to_own_mail.targets and to_own_mail.unmatched_reason == "no recipient is a known prospect"


def test_a_thread_never_outranks_what_routing_already_decided() -> None:
    parent = ("In-Reply-To", "<parent@acme-living.com>")
    known = DirectoryView(
        prospects_by_email={"renter@example.com": ("P1",)}, threads={"parent@acme-living.com": {"P7": OUTBOUND}}
    )
    direct = email("renter@example.com", "leasing@acme-living.com", parent)
    assert [t.matched_by for t in route_email(direct, RULES, known, references(direct)).targets] == ["address"]
    forged = email("dana@acme-living.com", "new@example.net", parent)  # no verdict: not the agent's
    parked = route_email(forged, RULES, threaded(INBOUND), references(forged))
    assert not parked.targets and parked.unmatched_reason == "sender not authenticated"
    signed = replace(RULES, reply_tag_secrets=("a-secret-of-sixteen",))
    tagged = email("x@example.net", "leasing+prospect-P9@acme-living.com", parent)
    refused = route_email(tagged, signed, threaded(OUTBOUND), references(tagged))
    assert not refused.targets and refused.unmatched_reason == "reply tag not signed"


def remembered(client: Any, services: Any, message_id: str) -> dict[str, str]:
    return dict(services.redis.hgetall(thread_key(message_id)))


@pytest.fixture
def relay(make_settings: Any) -> Any:
    return create_app(make_settings())


def test_an_outbound_email_then_a_reply_from_an_unknown_address_lands_on_the_same_card(
    relay: Any, sandbox: Sandbox, worker: Any
) -> None:
    client, services = relay.test_client(), relay.extensions["relay"]
    sandbox.seed("P1", agent="pat")
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    agent = "Dana <dana@acme-living.com>"
    tour = mime(
        sender=agent, to="renter@example.com", message_id="<tour@acme-living.com>", extra_headers=authenticated()
    )
    assert [d["prospectId"] for d in post_mime(client, tour).json["deliveries"]] == ["P1"]
    # From a new address, answering the agent's email: nobody in the directory has it.
    reply = mime(
        sender="Renter at work <renter.work@example.org>",
        to="Dana <dana@acme-living.com>",
        message_id="<reply@example.org>",
        extra_headers="In-Reply-To: <tour@acme-living.com>\nReferences: <tour@acme-living.com>",
    )
    (delivery,) = post_mime(client, reply).json["deliveries"]
    assert delivery["prospectId"] == "P1" and delivery["status"] == "queued"
    record = client.get(f"/v1/deliveries/{delivery['id']}", headers=BEARER).json
    assert record["matchedBy"] == "thread" and record["threadMessageId"] == "tour@acme-living.com"
    assert record["direction"] == "inbound" and record["type"] == "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
    wait_for_status(client, delivery["id"], "delivered")
    assert remembered(client, services, "reply@example.org") == {"P1": "inbound"}  # the chain goes on


def test_the_thread_is_remembered_by_the_storing_script_for_as_long_as_records(relay: Any, own_redis: Any) -> None:
    client, services = relay.test_client(), relay.extensions["relay"]
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    post_mime(client, mime(message_id="<asks@example.com>"))
    assert remembered(client, services, "asks@example.com") == {"P1": "inbound"}
    ttl = services.redis.ttl(thread_key("asks@example.com"))
    assert services.settings.record_ttl_seconds - 5 <= ttl <= services.settings.record_ttl_seconds
    unmatched = post_mime(client, mime(sender="who@example.net", message_id="<who@example.net>")).json
    assert unmatched["status"] == "unmatched" and not services.redis.exists(thread_key("who@example.net"))


def test_a_remembered_email_costs_no_extra_round_trip_and_a_reply_one_more(own_redis: Any, make_settings: Any) -> None:
    url = own_redis()
    client = create_app(make_settings(REDIS_URL=url)).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    post_mime(client, mime(message_id="<warm@example.com>"))
    answer, sent = round_trips(url, lambda: post_mime(client, mime(message_id="<asks2@x>")))
    assert answer.json["status"] == "queued" and sent == ["evalsha"]  # stored and remembered in one step

    def stranger(message_id: str, parent: str) -> bytes:
        return mime(sender="stranger@example.net", message_id=message_id, extra_headers=f"In-Reply-To: {parent}")

    post_mime(client, stranger("<r1@x>", "<no@x>"))  # the stranger's address, now in this process's copy
    answer, sent = round_trips(url, lambda: post_mime(client, stranger("<r2@x>", "<no@x>")))
    assert answer.json["status"] == "unmatched" and sent == ["evalsha"]  # asked and stored in one step
    answer, sent = round_trips(url, lambda: post_mime(client, stranger("<r3@x>", "<asks2@x>")))
    assert answer.json["deliveries"][0]["prospectId"] == "P1"
    assert sent == ["evalsha", "evalsha"]  # told of the thread, then stored


def test_learning_adds_the_new_address_to_the_prospect_so_the_next_email_matches_directly(
    make_settings: Any,
) -> None:
    from relay.audit import recent_actions

    relay = create_app(make_settings(RELAY_LEARN_THREAD_ADDRESSES="true"))
    client, services = relay.test_client(), relay.extensions["relay"]
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    post_mime(client, mime(message_id="<asks3@x>"))
    # Anyone can write a From and copy a Message-ID: an unauthenticated sender is followed, not learned.
    forged = mime(sender="future.renter@example.net", message_id="<r4@x>", extra_headers="In-Reply-To: <asks3@x>")
    assert post_mime(client, forged).json["deliveries"][0]["prospectId"] == "P1"
    assert client.get("/v1/prospects/P1", headers=BEARER).json["emails"] == ["renter@example.com"]
    vouched = f"In-Reply-To: <asks3@x>\n{authenticated('example.org')}"
    reply = mime(sender="renter.work@example.org", message_id="<r5@x>", extra_headers=vouched)
    assert post_mime(client, reply).json["deliveries"][0]["prospectId"] == "P1"
    assert "renter.work@example.org" in client.get("/v1/prospects/P1", headers=BEARER).json["emails"]
    (action,) = [a for a in recent_actions(services.redis) if a["action"] == "learn address from thread"]
    assert action["target"] == "P1" and action["operator"] == "relay"
    later = post_mime(client, mime(sender="renter.work@example.org", message_id="<r6@x>")).json["deliveries"]
    record = client.get(f"/v1/deliveries/{later[0]['id']}", headers=BEARER).json
    assert record["prospectId"] == "P1" and record["matchedBy"] == "address"


def test_addresses_learned_at_once_are_all_kept(make_settings: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    relay = create_app(make_settings(RELAY_LEARN_THREAD_ADDRESSES="true"))
    client = relay.test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    post_mime(client, mime(message_id="<asks9@x>"))

    def reply(n: int) -> None:
        headers = f"In-Reply-To: <asks9@x>\n{authenticated(f'd{n}.example.org')}"
        mail = mime(sender=f"r{n}@d{n}.example.org", message_id=f"<c{n}@x>", extra_headers=headers)
        assert relay.test_client().post("/webhooks/mime", data=mail, content_type="message/rfc822",
                                        headers=basic_auth()).status_code == 200  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(reply, range(8)))
    emails = client.get("/v1/prospects/P1", headers=BEARER).json["emails"]
    assert len(emails) == 9, emails
    with ThreadPoolExecutor(8) as pool:  # past the cap of 10, however many learn at once
        list(pool.map(reply, range(8, 16)))
    assert len(client.get("/v1/prospects/P1", headers=BEARER).json["emails"]) == 10


def test_without_learning_the_directory_is_left_alone(relay: Any) -> None:
    client = relay.test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    post_mime(client, mime(message_id="<asks4@x>"))
    post_mime(
        client, mime(sender="renter.work@example.org", message_id="<r7@x>", extra_headers="In-Reply-To: <asks4@x>")
    )
    assert client.get("/v1/prospects/P1", headers=BEARER).json["emails"] == ["renter@example.com"]


def test_a_stranger_reusing_a_message_id_cannot_add_to_or_turn_its_thread(relay: Any) -> None:
    """A thread is what the first email with that Message-ID was logged for: a copy (its claim held)
    writes nothing, and another email reusing the id (a prospect of another card, or a forged
    inbound copy of an agent's email) neither adds its prospect nor turns the direction."""
    client, services = relay.test_client(), relay.extensions["relay"]
    client.put("/v1/prospects/V1", json={"emails": ["victim@example.com"]}, headers=BEARER)
    client.put("/v1/prospects/ATT", json={"emails": ["attacker@example.com"]}, headers=BEARER)
    post_mime(client, mime(sender="victim@example.com", message_id="<victims-question@example.com>"))
    post_mime(client, mime(sender="attacker@example.com", message_id="<victims-question@example.com>"))
    assert remembered(client, services, "victims-question@example.com") == {"V1": "inbound"}
    reply = mime(sender="victim.work@corp.example", message_id="<v-reply@corp.example>",
                 extra_headers="In-Reply-To: <victims-question@example.com>")  # fmt: skip
    assert [d["prospectId"] for d in post_mime(client, reply).json["deliveries"]] == ["V1"]
    # The agent's email to V1, then a forged inbound copy of it: the thread stays outbound.
    tour = mime(sender="Dana <dana@acme-living.com>", to="victim@example.com", message_id="<tour-v1@acme-living.com>",
                extra_headers=authenticated())  # fmt: skip
    post_mime(client, tour)
    forged = mime(sender="victim@example.com", to="leasing@acme-living.com", message_id="<tour-v1@acme-living.com>")
    post_mime(client, forged)
    assert remembered(client, services, "tour-v1@acme-living.com") == {"V1": "outbound"}
