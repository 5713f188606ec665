"""What never reaches a guest card: mail that Knock's own mailboxes take part in (Knock logs it
itself, so logging it here too would show the conversation twice)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from relay.message import build_email
from relay.routing import DirectoryView, RoutingRules, route_email
from relay.sender_auth import PASS, SenderAuth
from tests.conftest import Sandbox
from tests.helpers import BEARER, mime, post_mime

RULES = RoutingRules(mailbox_domains=frozenset({"acme-living.com"}), knock_logged_domains=frozenset({"knck.io"}))
VIEW = DirectoryView(prospects_by_email={"renter@example.com": ("P1",)}, prospect_agents={"P1": "pat"})


def routed(sender: str, to: str, cc: str = "") -> Any:
    headers = [("From", sender), ("To", to), ("Subject", "Tour"), *([("Cc", cc)] if cc else [])]
    email = build_email(headers=headers, text="Friday?")
    return route_email(replace(email, sender_auth=SenderAuth(PASS, "dkim=pass acme-living.com")), RULES, VIEW)


@pytest.mark.parametrize(
    ("sender", "to", "cc"),
    [
        ("renter@example.com", "leasing@acme-living.com", "p1-tracking@knck.io"),  # Knock copied in
        ("dana@acme-living.com", "renter@example.com", "P1@Knck.IO"),  # any case
        ("tracking@knck.io", "renter@example.com", ""),  # sent from Knock's mailbox
    ],
)
def test_mail_with_a_knock_mailbox_in_it_is_ignored(sender: str, to: str, cc: str) -> None:
    route = routed(sender, to, cc)
    assert route.ignored_reason == "Knock logs it" and not route.targets


def test_mail_without_one_is_routed_as_before() -> None:
    route = routed("renter@example.com", "leasing@acme-living.com", "friend@knck.io.example.com")
    assert route.ignored_reason is None and [t.prospect_id for t in route.targets] == ["P1"]
    plain = RoutingRules(mailbox_domains=frozenset({"acme-living.com"}))
    email = build_email(headers=[("From", "renter@example.com"), ("To", "x@knck.io")], text="t")
    assert route_email(email, plain, VIEW).ignored_reason is None  # nothing listed: nothing ignored


def test_through_the_webhook_it_is_recorded_ignored_and_never_sent(make_settings: Any, sandbox: Sandbox) -> None:
    from relay.app import create_app

    client = create_app(make_settings(RELAY_KNOCK_LOGGED_DOMAINS="knck.io")).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    answer = post_mime(client, mime(to="Leasing <leasing@acme-living.com>, tracking@knck.io")).json
    (delivery,) = answer["deliveries"]
    assert delivery["status"] == "ignored"
    assert client.get(f"/v1/deliveries/{delivery['id']}", headers=BEARER).json["reason"] == "Knock logs it"
    assert sandbox.requests() == []


def test_forged_agent_mail_copying_a_knock_mailbox_is_parked_not_ignored() -> None:
    email = build_email(headers=[("From", "dana@acme-living.com"), ("To", "renter@example.com"),
                                 ("Cc", "p1@knck.io")], text="t")  # fmt: skip
    route = route_email(email, RULES, VIEW)  # no verdict: not the agent's
    assert route.ignored_reason is None and route.unmatched_reason == "sender not authenticated"
