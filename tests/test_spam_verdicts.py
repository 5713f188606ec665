"""Spam and virus verdicts, read from each provider's own fields (and from your MTA's SpamAssassin
headers on raw MIME), keep mail off the guest card: a virus is `ignored` (reason `virus`) with its
body dropped; spam is `ignored` (reason `spam: …`) under RELAY_SPAM_POLICY=ignore, kept with its
prospect and body so that an operator can still log it, and logged as usual under `log`."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from relay.app import create_app
from relay.message import build_email
from relay.routing import DirectoryView, RoutingRules, route_email
from relay.spam import LOG, NO_VERDICT, ContentVerdict, from_flag, from_score, from_spam_headers, ignored_reason
from tests.conftest import Sandbox, SnsSigner
from tests.helpers import (
    BEARER,
    SENDGRID_FORM,
    basic_auth,
    mailersend_headers,
    mailgun_signature,
    mandrill_headers,
    mime,
    payload,
    signed_urlencoded,
    wait_for_status,
)
from tests.test_provider_verdicts import Post, outcome
from tests.test_provider_verdicts import client as provider_verdicts_client

PROSPECT = "lee@example.com"
LEASING = "leasing@acme-living.com"


def inbound(headers: str = "", message_id: str = "<spam-1@example.com>") -> bytes:
    return mime(sender=f"Lee <{PROSPECT}>", to=LEASING, subject="Cheap pills", message_id=message_id,
                extra_headers=headers)  # fmt: skip


# Pure rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "policy", "expected"),
    [
        (ContentVerdict(virus=True, source="x"), LOG, "virus"),  # a virus is never logged
        (ContentVerdict(spam=True, source="ses spamVerdict FAIL"), "ignore", "spam: ses spamVerdict FAIL"),
        (ContentVerdict(spam=True, source="x"), LOG, None),
        (ContentVerdict(spam=False, score=9.0, source="x"), "ignore", None),  # the flag is the filter's word
        (from_score(5.0, "s"), "ignore", "spam: s 5"),
        (from_score("4.9", "s"), "ignore", None),
        (NO_VERDICT, "ignore", None),
    ],
)
def test_what_counts_as_spam(verdict: ContentVerdict, policy: str, expected: str | None) -> None:
    assert ignored_reason(verdict, policy, 5.0) == expected


@pytest.mark.parametrize("score", [None, "", "high", "nan", "inf", True, [], "1e400"])
def test_a_score_that_is_no_number_is_no_verdict(score: object) -> None:
    assert from_score(score, "s") == NO_VERDICT


def test_spamassassin_and_mailgun_headers() -> None:
    assert from_spam_headers("YES", "Yes, score=7.1 required=5.0 tests=X").spam is True
    assert from_spam_headers(None, "Yes, score=7.1\n\trequired=5.0").score == 7.1
    assert from_spam_headers(None, "No, score=0.2 required=5.0").spam is False
    assert from_spam_headers(None, None) == NO_VERDICT and from_spam_headers("maybe", "garbage") == NO_VERDICT
    assert from_flag("Yes", "12.5", "X-Mailgun-Sflag") == ContentVerdict(False, True, 12.5, "X-Mailgun-Sflag Yes")
    assert from_flag("Yes", "12.5", "X-Mailgun-Sflag").spam is True
    assert from_flag(None, "6", "X-Mailgun-Sflag").score == 6.0


def test_a_long_spam_status_costs_linear_time() -> None:
    import time

    def cost(n: int) -> float:
        status = "Yes, " + "tests=" + "A," * n
        start = time.perf_counter()
        for _ in range(20):
            from_spam_headers(None, status)
        return time.perf_counter() - start

    cost(1000)
    assert cost(200_000) < 3 * cost(100_000) + 0.05


def test_routing_keeps_spams_prospect_and_drops_a_virus_before_anything_else() -> None:
    rules = RoutingRules(mailbox_domains=frozenset({"acme-living.com"}))
    view = DirectoryView(prospects_by_email={PROSPECT: ("P1",)}, prospect_agents={"P1": "pat"})
    email = build_email(headers=[("From", PROSPECT), ("To", LEASING)], text="t")
    from dataclasses import replace

    spam = route_email(replace(email, content_verdict=ContentVerdict(spam=True, source="f")), rules, view)
    assert spam.ignored_reason == "spam: f" and [t.prospect_id for t in spam.targets] == ["P1"]
    virus = route_email(replace(email, content_verdict=ContentVerdict(virus=True, source="v")), rules, view)
    assert virus.ignored_reason == "virus" and not virus.targets
    forged = build_email(headers=[("From", "maria@acme-living.com"), ("To", PROSPECT)], text="t")  # no verdict
    parked = route_email(replace(forged, content_verdict=ContentVerdict(spam=True, source="f")), rules, view)
    assert parked.ignored_reason == "spam: f" and parked.unmatched_reason is None


# Each provider's verdict, in its own format: (a spam post, its reason), or a post with a clean one --


def sendgrid(spam: bool) -> Post:
    parts = [("email", inbound()), ("envelope", json.dumps({"to": [LEASING], "from": PROSPECT}).encode()),
             ("spam_score", b"8.3" if spam else b"0.1")]  # fmt: skip
    body = b"".join(b'--xYzZY\r\nContent-Disposition: form-data; name="' + n.encode() + b'"\r\n\r\n' + v + b"\r\n"
                    for n, v in parts) + b"--xYzZY--\r\n"  # fmt: skip
    return Post("/webhooks/sendgrid/inbound", {"data": body, "content_type": SENDGRID_FORM, "headers": basic_auth()})


def mailgun(spam: bool) -> Post:
    headers = [["From", f"Lee <{PROSPECT}>"], ["To", LEASING], ["Subject", "Cheap pills"],
               ["Message-Id", "<spam-1@example.com>"], ["X-Mailgun-Sflag", "Yes" if spam else "No"],
               ["X-Mailgun-Sscore", "11.2" if spam else "0.3"]]  # fmt: skip
    fields = {"message-headers": json.dumps(headers), "body-plain": "Buy now", "sender": PROSPECT, "recipient": LEASING}
    data = signed_urlencoded(urlencode(fields).encode(), mailgun_signature())
    return Post("/webhooks/mailgun/inbound", {"data": data, "content_type": "application/x-www-form-urlencoded"})


def mandrill(spam: bool) -> Post:
    msg = {"raw_msg": inbound().decode(), "email": LEASING, "spam_report": {"score": 7.5 if spam else 0.0}}
    params = {"mandrill_events": json.dumps([{"event": "inbound", "msg": msg}])}
    headers = mandrill_headers("http://localhost/webhooks/mandrill/inbound", params)
    return Post("/webhooks/mandrill/inbound", {"data": urlencode(params), "headers": headers,
                                               "content_type": "application/x-www-form-urlencoded"})  # fmt: skip


def mailersend(spam: bool) -> Post:
    data = {"raw": inbound().decode(), "recipients": {"rcptTo": [{"email": LEASING}]}, "is_spam": spam,
            "sender": {"email": PROSPECT}}  # fmt: skip
    body = json.dumps({"type": "inbound.message", "data": data}).encode()
    return Post("/webhooks/mailersend/inbound", {"data": body, "content_type": "application/json",
                                                 "headers": mailersend_headers(body)})  # fmt: skip


def brevo(spam: bool) -> Post:
    item = {"From": {"Address": PROSPECT}, "To": [{"Address": LEASING}], "Subject": "Cheap pills",
            "MessageId": "<spam-1@example.com>", "RawTextBody": "Buy now", "SpamScore": 9.1 if spam else 1.2,
            "Recipients": [LEASING]}  # fmt: skip
    return Post("/webhooks/brevo/inbound", {"json": {"items": [item]}, "headers": basic_auth()})


def mailjet(spam: bool) -> Post:
    body = {"Sender": PROSPECT, "Recipient": LEASING, "From": f"Lee <{PROSPECT}>", "Subject": "Cheap pills",
            "Headers": {"To": LEASING, "Message-ID": "<spam-1@example.com>"}, "Text-part": "Buy now",
            "SpamAssassinScore": "6.4" if spam else "0.8"}  # fmt: skip
    return Post("/webhooks/mailjet/inbound", {"json": body, "headers": basic_auth()})


def raw_mime(spam: bool) -> Post:
    headers = "X-Spam-Flag: YES\nX-Spam-Status: Yes, score=9.9 required=5.0" if spam else "X-Spam-Flag: NO"
    return Post("/webhooks/mime", {"data": inbound(headers), "content_type": "message/rfc822",
                                   "headers": basic_auth()})  # fmt: skip


PROVIDERS: dict[str, tuple[Callable[[bool], Post], str]] = {
    "sendgrid": (sendgrid, "spam: sendgrid spam_score 8.3"),
    "mailgun": (mailgun, "spam: X-Mailgun-Sflag Yes"),
    "mandrill": (mandrill, "spam: mandrill spam_report.score 7.5"),
    "mailersend": (mailersend, "spam: mailersend is_spam true"),
    "brevo": (brevo, "spam: brevo SpamScore 9.1"),
    "mailjet": (mailjet, "spam: mailjet SpamAssassinScore 6.4"),
    "mime": (raw_mime, "spam: X-Spam-Flag Yes"),
}


client = provider_verdicts_client  # the same fixture: the prospect P1 at lee@example.com, SNS trusted


def shown(client: Any, post: Post) -> dict[str, Any]:
    return outcome(client, post)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_providers_spam_verdict_keeps_mail_off_the_card(client: Any, provider: str) -> None:
    build, reason = PROVIDERS[provider]
    flagged = shown(client, build(True))
    assert (flagged["status"], flagged["reason"], flagged["prospectId"]) == ("ignored", reason, "P1"), flagged


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_clean_verdict_is_logged(client: Any, provider: str) -> None:
    clean = shown(client, PROVIDERS[provider][0](False))
    assert (clean["status"], clean["prospectId"]) == ("queued", "P1"), clean


def test_under_the_log_policy_spam_is_logged(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_SPAM_POLICY="log")).test_client()
    client.put("/v1/prospects/P1", json={"emails": [PROSPECT]}, headers=BEARER)
    assert shown(client, raw_mime(True))["status"] == "queued"


def test_the_threshold_decides_for_a_score_alone(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_SPAM_SCORE_THRESHOLD="9.5")).test_client()
    client.put("/v1/prospects/P1", json={"emails": [PROSPECT]}, headers=BEARER)
    assert shown(client, brevo(True))["status"] == "queued"  # 9.1 < 9.5


def ses(sns: SnsSigner, spam: str, virus: str, message_id: str) -> Post:
    event = json.loads(payload("ses/received-event.json"))
    event["mail"]["source"] = PROSPECT
    event["receipt"].update({"recipients": [LEASING], "spamVerdict": {"status": spam},
                             "virusVerdict": {"status": virus}})  # fmt: skip
    event["content"] = base64.b64encode(inbound(message_id=message_id)).decode()
    message = sns.sign({**json.loads(payload("ses/notification.json")), "Message": json.dumps(event)})
    return Post("/webhooks/ses", {"data": json.dumps(message), "content_type": "text/plain; charset=UTF-8",
                                  "headers": {"x-amz-sns-message-type": "Notification"}})  # fmt: skip


def test_an_ses_virus_never_reaches_knock_and_its_body_is_not_kept(
    client: Any, services: Any, sandbox: Sandbox, worker: Any, sns: SnsSigner
) -> None:
    sandbox.seed("P1", agent="pat")
    virus = shown(client, ses(sns, "PASS", "FAIL", "<virus@example.com>"))
    assert (virus["status"], virus["reason"], virus["prospectId"]) == ("ignored", "virus", None)
    assert services.store.payload(virus["id"]) is None
    spam = shown(client, ses(sns, "FAIL", "PASS", "<spam@example.com>"))
    assert (spam["status"], spam["reason"]) == ("ignored", "spam: ses spamVerdict FAIL")
    clean = shown(client, ses(sns, "PASS", "PASS", "<clean@example.com>"))
    wait_for_status(client, clean["id"], "delivered")
    assert [e["subject"] for e in sandbox.events("P1")] == ["Cheap pills"]  # only the clean one
    assert client.post(f"/v1/deliveries/{virus['id']}/replay", headers=BEARER).status_code == 409


def test_spam_can_still_be_logged_by_an_operator_and_a_virus_cannot(
    client: Any, sandbox: Sandbox, worker: Any, sns: SnsSigner
) -> None:
    sandbox.seed("P1", agent="pat")
    spam = shown(client, raw_mime(True))
    assert client.post(f"/v1/deliveries/{spam['id']}/replay", headers=BEARER).status_code == 202
    assert wait_for_status(client, spam["id"], "delivered")["reason"] is None
    virus = shown(client, ses(sns, "PASS", "FAIL", "<virus-2@example.com>"))
    resolved = client.post(f"/v1/deliveries/{virus['id']}/resolve", json={"prospectId": "P1"}, headers=BEARER)
    assert resolved.status_code == 409


def test_bulk_replay_takes_spam_but_never_a_virus_or_an_auto_reply(client: Any, sns: SnsSigner) -> None:
    spam = shown(client, mailjet(True))
    virus = shown(client, ses(sns, "PASS", "FAIL", "<virus-3@example.com>"))
    reply = inbound("Auto-Submitted: auto-replied", "<auto@x>")
    auto = shown(
        client, Post("/webhooks/mime", {"data": reply, "content_type": "message/rfc822", "headers": basic_auth()})
    )
    assert auto["status"] == "ignored" and virus["status"] == "ignored"
    answer = client.post("/v1/deliveries/replay", json={"status": "ignored"}, headers=BEARER).json
    assert answer["ids"] == [spam["id"]]
