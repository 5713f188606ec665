"""Signed reply addresses: a tag `+prospect-<id>.<signature>` routes a prospect's reply only when one
of the relay's secrets signed it, so that knowing (or guessing) a prospect id is not enough to write
onto that prospect's guest card. The address comes from the API, the console and the CLI."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from click.testing import CliRunner

from relay.__main__ import cli
from relay.app import create_app
from relay.message import build_email
from relay.reply_tags import SIGNATURE_CHARS, SIGNED, UNSIGNED, WRONG, ReplyTag, check, read_tag, signature_of
from relay.routing import DirectoryView, RoutingRules, route_email
from tests.conftest import Sandbox
from tests.helpers import BEARER, mime, post_mime, relay_env, wait_for_status
from tests.test_console import sign_in

SECRET, OLD_SECRET = "s3cret-for-reply-tags-0001", "old-secret-for-reply-tags"
FLIP = {c: ("b" if c == "a" else "a") for c in "abcdefghijklmnopqrstuvwxyz234567"}
LEASING = frozenset({"acme-living.com", "reply.acme-living.com"})
SIGNED_RULES = RoutingRules(mailbox_domains=LEASING, reply_tag_secrets=(SECRET, OLD_SECRET))


def route_reply(to: str, rules: RoutingRules = SIGNED_RULES) -> Any:
    email = build_email(headers=[("From", "stranger@example.net"), ("To", to), ("Subject", "Re: tour")], text="Fine")
    return route_email(email, rules, DirectoryView())


def test_a_signature_is_short_case_insensitive_and_carries_at_least_50_bits() -> None:
    signature = signature_of("P123", SECRET)
    assert len(signature) == SIGNATURE_CHARS and re.fullmatch(r"[a-z2-7]+", signature)
    assert SIGNATURE_CHARS * 5 >= 50
    assert signature_of("p123", SECRET) == signature  # an MTA that lower-cases the address
    assert signature_of("P124", SECRET) != signature and signature_of("P123", OLD_SECRET) != signature


def test_a_tag_is_read_with_or_without_its_signature() -> None:
    signature = signature_of("P123", SECRET)
    assert read_tag(f"leasing+prospect-P123.{signature}@reply.acme-living.com", "prospect-") == ReplyTag(
        "P123", signature
    )
    assert read_tag(f"leasing+Prospect-P123.{signature.upper()}@x", "prospect-") == ReplyTag("P123", signature)
    assert read_tag("leasing+prospect-P123@x", "prospect-") == ReplyTag("P123", None)
    assert read_tag("leasing+prospect-a.b@x", "prospect-") == ReplyTag("a.b", None)  # not a signature's shape
    assert read_tag("leasing+prospect-P1.abcdefghij@x", "prospect-") == ReplyTag("P1.abcdefghij", None)  # too short
    assert read_tag("leasing@x", "prospect-") is None


@pytest.mark.parametrize(
    ("tag", "verdict"),
    [
        (ReplyTag("P123", signature_of("P123", SECRET)), SIGNED),
        (ReplyTag("P123", signature_of("P123", OLD_SECRET)), SIGNED),  # rotation: every secret verifies
        (ReplyTag("P123", None), UNSIGNED),
        (ReplyTag("P124", signature_of("P123", SECRET)), WRONG),  # another prospect's signature
        (ReplyTag("P123", signature_of("P123", SECRET)[:-1] + FLIP[signature_of("P123", SECRET)[-1]]), WRONG),
        (ReplyTag("P123", signature_of("P123", "someone-elses-secret-000")), WRONG),
    ],
)
def test_only_a_signature_made_with_one_of_the_secrets_counts(tag: ReplyTag, verdict: str) -> None:
    assert check(tag, (SECRET, OLD_SECRET)) == verdict


def test_a_signed_tag_routes_and_an_unsigned_or_forged_one_does_not() -> None:
    good = route_reply(f"leasing+prospect-P123.{signature_of('P123', SECRET)}@reply.acme-living.com")
    assert [t.prospect_id for t in good.targets] == ["P123"]
    assert good.targets[0].prospect_found_by == "the signed reply tag of a recipient"
    unsigned = route_reply("leasing+prospect-P123@reply.acme-living.com")
    assert not unsigned.targets and unsigned.unmatched_reason == "reply tag not signed"
    forged = route_reply(f"leasing+prospect-P999.{signature_of('P123', SECRET)}@reply.acme-living.com")
    assert not forged.targets and forged.unmatched_reason == "reply tag signature wrong"


def test_unsigned_tags_route_during_a_migration_and_without_a_secret() -> None:
    migrating = RoutingRules(mailbox_domains=LEASING, reply_tag_secrets=(SECRET,), accept_unsigned_reply_tags=True)
    assert [t.prospect_id for t in route_reply("leasing+prospect-P123@reply.acme-living.com", migrating).targets] == [
        "P123"
    ]
    forged = route_reply(f"leasing+prospect-P9.{signature_of('P1', SECRET)}@reply.acme-living.com", migrating)
    assert forged.unmatched_reason == "reply tag signature wrong"  # a wrong signature never counts
    plain = RoutingRules(mailbox_domains=LEASING)
    assert [t.prospect_id for t in route_reply("leasing+prospect-P123@reply.acme-living.com", plain).targets] == [
        "P123"
    ]


def test_a_signed_tag_beside_a_forged_one_routes_only_the_signed_prospect() -> None:
    signed = f"leasing+prospect-P1.{signature_of('P1', SECRET)}@reply.acme-living.com"
    headers = [("From", "stranger@example.net"), ("To", signed), ("Cc", "leasing+prospect-P2@reply.acme-living.com")]
    email = build_email(headers=headers, text="Friday works")
    assert [t.prospect_id for t in route_email(email, SIGNED_RULES, DirectoryView()).targets] == ["P1"]


def signed_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    return relay_env(
        sandbox.url,
        RELAY_REPLY_TAG_SECRET=f"{SECRET},{OLD_SECRET}",
        RELAY_REPLY_MAILBOX="leasing@reply.acme-living.com",
        **extra,
    )


@pytest.fixture
def signed_client(make_settings: Any, sandbox: Sandbox) -> Any:
    return create_app(make_settings(**signed_env(sandbox))).test_client()


def test_the_api_gives_the_signed_reply_address(signed_client: Any) -> None:
    answer = signed_client.get("/v1/prospects/P123/reply-address", headers=BEARER)
    expected = f"leasing+prospect-P123.{signature_of('P123', SECRET)}@reply.acme-living.com"
    assert answer.status_code == 200 and answer.json == {"address": expected, "signed": True}
    other = signed_client.get(
        "/v1/prospects/P123/reply-address", query_string={"mailbox": "front@acme-living.com"}, headers=BEARER
    )
    assert other.json["address"] == f"front+prospect-P123.{signature_of('P123', SECRET)}@acme-living.com"


@pytest.mark.parametrize(
    ("mailbox", "status", "problem"),
    [
        ("leasing@elsewhere.example", 409, "not on the leasing side"),
        ("not an address", 400, "Not an email address"),
        ("x" * 50 + "@acme-living.com", 409, "more than 64"),
        ("a@b@acme-living.com", 400, "Not an email address"),
        ("leasing+old@acme-living.com", 409, "no + tag"),
    ],
)
def test_the_api_refuses_a_mailbox_no_tag_routes_through(
    signed_client: Any, mailbox: str, status: int, problem: str
) -> None:
    answer = signed_client.get("/v1/prospects/P123/reply-address", query_string={"mailbox": mailbox}, headers=BEARER)
    assert answer.status_code == status and problem in json.dumps(answer.json)
    assert signed_client.get("/v1/prospects/P123/reply-address").status_code == 401


@pytest.mark.parametrize("prospect_id", ["P+1", "P(1)", "P:1", "P,1", "-P1"])
def test_an_id_no_address_can_carry_gets_no_reply_address(signed_client: Any, prospect_id: str) -> None:
    answer = signed_client.get(f"/v1/prospects/{prospect_id}/reply-address", headers=BEARER)
    assert answer.status_code == 409 and "cannot be written in an email address" in answer.json["error"]


def test_without_a_secret_the_address_is_unsigned_and_without_a_mailbox_there_is_none(client: Any) -> None:
    answer = client.get(
        "/v1/prospects/P123/reply-address", query_string={"mailbox": "leasing@reply.acme-living.com"}, headers=BEARER
    )
    assert answer.json == {"address": "leasing+prospect-P123@reply.acme-living.com", "signed": False}
    missing = client.get("/v1/prospects/P123/reply-address", headers=BEARER)
    assert missing.status_code == 409 and "RELAY_REPLY_MAILBOX" in missing.json["error"]


def test_the_console_shows_the_reply_address_read_only(signed_client: Any) -> None:
    signed_client.put("/v1/prospects/P123", json={"emails": ["renter@example.com"]}, headers=BEARER)
    assert sign_in(signed_client).status_code == 302
    page = signed_client.get("/console/directory", query_string={"q": "P123"}).text
    expected = f"leasing+prospect-P123.{signature_of('P123', SECRET)}@reply.acme-living.com"
    field = rf'<input id="reply-address-1" class="reply-address" value="{re.escape(expected)}" readonly>'
    assert re.search(field, page)


def test_the_cli_prints_the_reply_address(sandbox: Sandbox) -> None:
    done = CliRunner().invoke(cli, ["directory", "reply-address", "P123"], env=signed_env(sandbox))
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"leasing+prospect-P123.{signature_of('P123', SECRET)}@reply.acme-living.com"
    refused = CliRunner().invoke(
        cli, ["directory", "reply-address", "P123", "--mailbox", "a@elsewhere.example"], env=signed_env(sandbox)
    )
    assert refused.exit_code == 1 and "not on the leasing side" in refused.output


def test_through_the_webhook_a_forged_tag_is_unmatched_and_a_signed_one_logged(
    signed_client: Any, sandbox: Sandbox, worker_for_signed: Any
) -> None:
    sandbox.seed("P123", agent="pat")
    forged = post_mime(
        signed_client,
        mime(sender="stranger@example.net", to="leasing+prospect-P123@reply.acme-living.com", message_id="<f@x>"),
    ).json["deliveries"][0]
    assert forged["status"] == "unmatched"
    record = signed_client.get(f"/v1/deliveries/{forged['id']}", headers=BEARER).json
    assert record["reason"] == "reply tag not signed"
    address = signed_client.get("/v1/prospects/P123/reply-address", headers=BEARER).json["address"]
    signed = post_mime(signed_client, mime(sender="stranger@example.net", to=address, message_id="<s@x>"))
    (delivery,) = signed.json["deliveries"]
    assert delivery["prospectId"] == "P123"
    wait_for_status(signed_client, delivery["id"], "delivered")


@pytest.fixture
def worker_for_signed(start_worker: Any, make_settings: Any, sandbox: Sandbox) -> Any:
    return start_worker(make_settings(**signed_env(sandbox)))


def test_a_short_secret_is_a_configuration_error(sandbox: Sandbox) -> None:
    from relay.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="RELAY_REPLY_TAG_SECRET"):
        load_settings(relay_env(sandbox.url, RELAY_REPLY_TAG_SECRET="short"))
    with pytest.raises(ConfigError, match="RELAY_REPLY_MAILBOX"):
        load_settings(relay_env(sandbox.url, RELAY_REPLY_MAILBOX="leasing+x@reply.acme-living.com"))
