"""Direction, type, prospects and agent (SPEC §5.1-5.5), as functions of data, and as the webhooks
and the API apply them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from relay.errors import MalformedPayload
from relay.message import Metadata, build_email
from relay.routing import (
    AUTOMATED,
    FROM_PROSPECT,
    INBOUND,
    OUTBOUND,
    TO_PROSPECT,
    DirectoryView,
    RoutingRules,
    Target,
    route_email,
)
from relay.sender_auth import FAIL, NONE, NOT_AUTHENTICATED, PASS, SenderAuth, vouched_by
from tests.helpers import BEARER, delivery, mime, post_mime

RULES = RoutingRules(
    mailbox_domains=frozenset({"acme-living.com", "reply.acme-living.com", "frontdesk@gmail.com"}),
    automated_senders=("noreply@acme-living.com", "*@notify.acme-living.com"),
)
VIEW = DirectoryView(
    prospects_by_email={
        "renter@example.com": ("P1",),
        "second@example.org": ("P2",),
        "twice@example.com": ("P3", "P4"),
    },
    agents_by_email={"dana@acme-living.com": "dana", "sam@partner.com": "sam"},
    prospect_agents={"P1": "pat", "P2": None, "P3": "pat", "P4": "quinn"},
)


#: What the receiving provider said of the sender; leasing-side mail is routed only when it passed.
AUTHENTICATED = SenderAuth(PASS, "dkim=pass acme-living.com")


def email(sender: str, to: str, *extra: tuple[str, str], metadata: Metadata | None = None):  # type: ignore[no-untyped-def]
    built = build_email(headers=[("From", sender), ("To", to), ("Subject", "s"), *extra], text="t", metadata=metadata)
    return replace(built, sender_auth=AUTHENTICATED)


def test_sender_on_a_mailbox_domain_is_outbound_to_the_known_recipient() -> None:
    route = route_email(email("dana@acme-living.com", "renter@example.com"), RULES, VIEW)
    assert (route.direction, route.message_type) == (OUTBOUND, TO_PROSPECT)
    assert route.targets == (Target("P1", "dana"),)


def test_full_mailbox_address_counts_as_leasing_side() -> None:
    route = route_email(email("frontdesk@gmail.com", "renter@example.com"), RULES, VIEW)
    assert route.direction == OUTBOUND


def test_agent_directory_address_counts_as_leasing_side() -> None:
    route = route_email(email("sam@partner.com", "renter@example.com"), RULES, VIEW)
    assert route.direction == OUTBOUND
    assert route.targets == (Target("P1", "sam"),)


def test_unknown_sender_is_inbound_from_the_prospect() -> None:
    route = route_email(email("Renter@Example.com", "leasing@acme-living.com"), RULES, VIEW)
    assert (route.direction, route.message_type) == (INBOUND, FROM_PROSPECT)
    assert route.targets == (Target("P1", "pat"),)


@pytest.mark.parametrize(
    ("sender", "extra"),
    [
        ("noreply@acme-living.com", ()),
        ("alerts@notify.acme-living.com", ()),
        ("dana@acme-living.com", (("Auto-Submitted", "auto-generated"),)),
    ],
)
def test_automated_outbound(sender: str, extra: tuple[tuple[str, str], ...]) -> None:
    route = route_email(email(sender, "renter@example.com", *extra), RULES, VIEW)
    assert route.message_type == AUTOMATED


def test_auto_submitted_no_is_not_automated() -> None:
    route = route_email(email("dana@acme-living.com", "renter@example.com", ("Auto-Submitted", "no")), RULES, VIEW)
    assert route.message_type == TO_PROSPECT


@pytest.mark.parametrize(
    "header",
    [("Auto-Submitted", "auto-replied"), ("X-Autoreply", "yes"), ("X-Autorespond", "1"), ("Precedence", "bulk"),
     ("Precedence", "auto_reply"), ("Precedence", "junk")],
)  # fmt: skip
def test_prospect_auto_replies_are_ignored(header: tuple[str, str]) -> None:
    route = route_email(email("renter@example.com", "leasing@acme-living.com", header), RULES, VIEW)
    assert route.ignored_reason == "auto-reply"


def test_auto_replies_are_logged_when_ignoring_is_off() -> None:
    rules = RoutingRules(mailbox_domains=RULES.mailbox_domains, ignore_auto_replies=False)
    route = route_email(email("renter@example.com", "leasing@acme-living.com", ("X-Autoreply", "yes")), rules, VIEW)
    assert route.ignored_reason is None and route.message_type == FROM_PROSPECT


def test_outbound_fans_out_to_every_known_recipient_off_the_leasing_side() -> None:
    message = build_email(
        headers=[("From", "dana@acme-living.com"), ("To", "renter@example.com, unknown@example.net"),
                 ("Cc", "frontdesk@acme-living.com"), ("Bcc", "second@example.org")],
        envelope_to=["twice@example.com"],
    )  # fmt: skip
    route = route_email(replace(message, sender_auth=AUTHENTICATED), RULES, VIEW)
    assert [t.prospect_id for t in route.targets] == ["P1", "P2", "P3", "P4"]


def test_inbound_from_unknown_sender_uses_the_reply_tag() -> None:
    route = route_email(
        email("new@example.com", "Leasing <leasing+prospect-4WXU6U2J@reply.acme-living.com>"), RULES, VIEW
    )
    assert route.targets == (Target("4WXU6U2J", None),)


def test_reply_tag_on_an_address_off_the_leasing_side_is_not_trusted() -> None:
    route = route_email(email("new@example.com", "someone+prospect-X1@elsewhere.com"), RULES, VIEW)
    assert route.targets == () and route.unmatched_reason


def test_no_prospect_is_unmatched_with_a_reason() -> None:
    inbound = route_email(email("stranger@example.com", "leasing@acme-living.com"), RULES, VIEW)
    outbound = route_email(email("dana@acme-living.com", "stranger@example.com"), RULES, VIEW)
    assert inbound.targets == () and "not a known prospect" in (inbound.unmatched_reason or "")
    assert outbound.targets == () and "known prospect" in (outbound.unmatched_reason or "")


def test_explicit_metadata_wins_over_inference() -> None:
    metadata = Metadata(prospect_id="PX", agent_username="meta.agent", message_type="EMAIL_AUTOMATED_MESSAGE_SENT")
    vouched = replace(
        email("renter@example.com", "leasing@acme-living.com", metadata=metadata), sender_auth=vouched_by("partner API")
    )
    route = route_email(vouched, RULES, VIEW)
    assert route.message_type == AUTOMATED
    assert route.targets == (Target("PX", "meta.agent"),)


def test_unknown_explicit_type_is_rejected() -> None:
    claimed = email("renter@example.com", "x@acme-living.com", metadata=Metadata(message_type="FAX"))
    with pytest.raises(MalformedPayload):
        route_email(replace(claimed, sender_auth=vouched_by("partner API")), RULES, VIEW)
    assert route_email(claimed, RULES, VIEW).message_type == FROM_PROSPECT  # a header anyone wrote: ignored


def test_agent_order_sender_agent_then_prospect_agent_then_left_to_the_worker() -> None:
    # Outbound from a directory agent: the sender's username, not the prospect's agent.
    assert (
        route_email(email("dana@acme-living.com", "renter@example.com"), RULES, VIEW).targets[0].agent_username
        == "dana"
    )
    # Outbound from a mailbox that is no agent: the prospect's agent.
    assert (
        route_email(email("leasing@acme-living.com", "renter@example.com"), RULES, VIEW).targets[0].agent_username
        == "pat"
    )
    # Prospect without an agent: None, resolved later through Knock then the default.
    assert (
        route_email(email("leasing@acme-living.com", "second@example.org"), RULES, VIEW).targets[0].agent_username
        is None
    )


AGENT_MAIL = ("dana@acme-living.com", "renter@example.com")
CLAIMED = Metadata(prospect_id="PX", agent_username="meta.agent")


@pytest.mark.parametrize(
    ("mode", "status", "expected_reason", "metadata_counts"),
    [
        ("enforce", FAIL, NOT_AUTHENTICATED, False),
        ("enforce", PASS, None, True),
        ("enforce", NONE, NOT_AUTHENTICATED, False),
        ("report", FAIL, None, False),
        ("off", FAIL, None, True),
    ],
)
def test_leasing_side_mail_is_judged_by_its_sender_authentication(
    mode: str, status: str, expected_reason: str | None, metadata_counts: bool
) -> None:
    rules = replace(RULES, sender_auth=mode)
    claimed = replace(email(*AGENT_MAIL, metadata=CLAIMED), sender_auth=SenderAuth(status, "dkim=x"))
    route = route_email(claimed, rules, VIEW)
    assert route.unmatched_reason == expected_reason
    if expected_reason:
        assert route.targets == ()
    else:
        assert route.targets == ((Target("PX", "meta.agent"),) if metadata_counts else (Target("P1", "dana"),))


def test_inbound_mail_is_never_parked_for_authentication_and_its_headers_never_count() -> None:
    claimed = replace(email("renter@example.com", "leasing@acme-living.com", metadata=CLAIMED),
                      sender_auth=SenderAuth(PASS, "dkim=pass example.com"))  # fmt: skip
    route = route_email(claimed, RULES, VIEW)
    assert route.targets == (Target("P1", "pat"),)


def test_reply_tag_on_a_domain_off_the_leasing_side_names_the_real_reason() -> None:
    route = route_email(email("stranger@example.com", "leasing+prospect-PM555@reply.other.com"), RULES, VIEW)
    assert route.unmatched_reason == "a recipient carries a reply tag, but its domain is not in RELAY_MAILBOX_DOMAINS"


# Through the webhooks and the API ---------------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "agent@notacme-living.com",
        "agent@acme-living.com.evil.com",
        "agent@evilacme-living.com",
        "agent@sub.acme-living.com",
    ],
)
def test_lookalike_domains_stay_on_the_prospect_side(client: Any, sender: str) -> None:
    response = post_mime(client, mime(sender=sender, to="leasing@acme-living.com"))
    assert response.json["deliveries"][0]["type"] == "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
    outbound = post_mime(client, mime(sender="agent@acme-living.com", to="renter@example.com", message_id="<o@x>"))
    assert outbound.json["deliveries"][0]["type"] == "EMAIL_MESSAGE_TO_PROSPECT_SENT"


def test_explicit_agent_beats_the_senders_directory_agent(client: Any) -> None:
    client.put("/v1/agents/dana", json={"emails": ["dana@acme-living.com"]}, headers=BEARER)
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    body = {"from": "dana@acme-living.com", "to": ["renter@example.com"], "subject": "Tour", "text": "Friday?",
            "agentUsername": "kim"}  # fmt: skip
    response = client.post("/v1/messages", json=body, headers=BEARER)
    assert delivery(client, response.json["deliveries"][0]["id"])["agentUsername"] == "kim"
    del body["agentUsername"]
    body["messageId"] = "second@acme-living.com"
    response = client.post("/v1/messages", json=body, headers=BEARER)
    assert delivery(client, response.json["deliveries"][0]["id"])["agentUsername"] == "dana"  # sender before prospect's


@pytest.mark.parametrize("precedence", ["bulk", "Bulk", "BULK", "auto_reply", "Junk"])
def test_precedence_in_any_case_marks_an_auto_reply(client: Any, precedence: str) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    response = post_mime(client, mime(extra_headers=f"Precedence: {precedence}"))
    shown = delivery(client, response.json["deliveries"][0]["id"])
    assert (shown["status"], shown["reason"]) == ("ignored", "auto-reply")


def test_an_auto_reply_from_an_unknown_sender_is_ignored_not_unmatched(client: Any) -> None:
    response = post_mime(client, mime(sender="stranger@example.org", extra_headers="Auto-Submitted: auto-replied"))
    assert response.json["status"] == "ignored"
    assert delivery(client, response.json["deliveries"][0]["id"])["reason"] == "auto-reply"


@pytest.mark.parametrize("tag", ["prospect-PM1", "PROSPECT-PM1", "Prospect-PM1"])
def test_reply_tag_prefix_in_any_case_finds_the_prospect(client: Any, tag: str) -> None:
    response = post_mime(client, mime(sender="stranger@example.org", to=f"leasing+{tag}@acme-living.com"))
    assert (response.json["status"], response.json["deliveries"][0]["prospectId"]) == ("queued", "PM1")
