"""The console's advice for unmatched and dead deliveries (relay.console.next_steps), as a function of data."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from relay.console.next_steps import (
    DEAD_FALLBACK,
    DEAD_RULES,
    MAX_SHOWN_CHARS,
    PROVIDER_KEY_SETTINGS,
    UNMATCHED_FALLBACK,
    UNMATCHED_RULES,
    next_step,
    rule_for,
)
from relay.errors import MalformedPayload
from relay.knock.client import KnockRejected, prospect_path
from relay.knock.sandbox import validate_email_body
from relay.knock.schema import validate_log_email
from relay.providers.fetch import api_url
from relay.routing import FROM_PROSPECT, INVALID_REPLY_TAG, UNSIGNED_REPLY_TAG, WRONG_REPLY_TAG
from relay.sender_auth import NOT_AUTHENTICATED
from relay.store import DEAD, STATUSES, UNMATCHED, Delivery

RELAY = Path(__file__).resolve().parent.parent / "relay"


def delivery(
    status: str,
    text: str | None,
    *,
    prospectId: str | None = "P1",  # the record's own field names
    agentUsername: str | None = "pat",
    sender: str | None = "renter@example.com",
    reason: str | None = None,
    lastError: str | None = None,
) -> Delivery:
    """A delivery of `status` whose reason (unmatched) or last error (dead) is `text`."""
    return Delivery(
        id="0123456789abcdef0123456789abcdef",
        status=status,
        type=FROM_PROSPECT,
        messageId="<m1@example.com>",
        provider="mailgun",
        subject="Viewing on Saturday",
        sentTime="2026-11-27T06:18:31.000Z",
        receivedAt=1_795_000_000_000,
        prospectId=prospectId,
        agentUsername=agentUsername,
        sender=sender,
        reason=text if status == UNMATCHED else reason,
        lastError=text if status == DEAD else lastError,
    )


def _prospect_path_error(prospect_id: str) -> str:
    with pytest.raises(KnockRejected) as caught:
        prospect_path(prospect_id, "email")
    return caught.value.message


def _provider_id_error(provider_id: str) -> str:
    with pytest.raises(MalformedPayload) as caught:
        api_url("https://api.example.com", provider_id)
    return caught.value.message


def _sandbox_refusal(**changes: object) -> str:
    """What the Knock sandbox (Knock's rules, strictly) answers a body with, as Knock's errorMessage."""
    body: dict[str, object] = {
        "type": FROM_PROSPECT,
        "sentTime": "2026-11-27T06:18:31.000Z",
        "agent": {"username": "pat"},
        "subject": "Hello",
        "body": "<p>Hi</p>",
    }
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    problem = validate_email_body(body)
    assert problem is not None
    return problem


#: (status, reason or last error as the code writes it, the rule it must meet, words the advice must hold).
CASES: list[tuple[str, str, str, tuple[str, ...]]] = [
    # Unmatched: relay.sender_auth, via relay.routing.route_email.
    (UNMATCHED, NOT_AUTHENTICATED, "sender-not-authenticated", ("resolve it here", "RELAY_TRUSTED_AUTHSERV_IDS")),
    # Unmatched: relay.routing.metadata_id_problem.
    (UNMATCHED, "routing metadata names no valid prospect id", "metadata-prospect-id",
     ("resolve it here", "X-Knock-Prospect-Id")),
    (UNMATCHED, "routing metadata names no valid agent username", "metadata-agent-username",
     ("resolve it here", "agent's username")),
    # Unmatched: relay.routing.find_prospects.
    (UNMATCHED, "no recipient outside the leasing side", "no-recipient-off-leasing-side",
     ("resolve it here", "Remember")),
    (UNMATCHED, "no recipient is a known prospect", "no-recipient-known", ("Directory", "resolve this email here")),
    (UNMATCHED, "no sender address", "no-sender", ("resolve it here",)),
    (UNMATCHED, INVALID_REPLY_TAG, "invalid-reply-tag", ("resolve it here", "reply tag")),
    (UNMATCHED, UNSIGNED_REPLY_TAG, "unsigned-reply-tag", ("resolve it here", "RELAY_ACCEPT_UNSIGNED_REPLY_TAGS")),
    (UNMATCHED, WRONG_REPLY_TAG, "wrong-reply-tag", ("resolve it here", "RELAY_REPLY_TAG_SECRET")),
    (UNMATCHED, "a recipient carries a reply tag, but its domain is not in RELAY_MAILBOX_DOMAINS", "reply-tag-domain",
     ("RELAY_MAILBOX_DOMAINS", "resolve this email here")),
    (UNMATCHED, "sender is not a known prospect and no recipient carries a reply tag", "unknown-sender",
     ("renter@example.com", "Directory", "resolve this email here")),
    # Unmatched: relay.forwarding (no agent in Knock, no default).
    (UNMATCHED, "no agent", "no-agent", ("prospect P1", "agent's username", "Directory")),
    # Dead: relay.providers.ses_s3 (SES receipt rules with an S3 action).
    (DEAD, "S3 bucket 'other' is not in RELAY_SES_S3_BUCKETS: the message was not fetched", "ses-s3-bucket",
     ("RELAY_SES_S3_BUCKETS", "Replay")),
    (DEAD, "the message is not in S3 (s3://b/k: NoSuchKey)", "ses-s3-missing", ("by hand", "lifecycle")),
    (DEAD, "S3 refused to give the message (s3://b/k: AccessDenied); grant s3:GetObject on the bucket",
     "ses-s3-denied", ("s3:GetObject", "Replay")),
    (DEAD, "the message is encrypted with SES's client-side KMS encryption, which the relay does not read: x",
     "ses-s3-client-side-encryption", ("by hand",)),
    # Dead: relay.forwarding's own refusals.
    (DEAD, "nothing to send: payload or prospect missing", "nothing-to-send", ("by hand",)),
    (DEAD, f"invalid Knock body: {validate_log_email({'agent': {'username': ''}})}", "invalid-knock-body",
     ("agent.username", "type", "by hand")),
    (DEAD, "this process cannot fetch messages", "cannot-fetch", ("Replay", "relay worker")),
    # Dead: a pending fetch (relay.providers and relay.providers.fetch).
    (DEAD, "MAILGUN_API_KEY is not configured; cannot fetch the stored message", "provider-key-missing",
     ("MAILGUN_API_KEY", "Replay")),
    (DEAD, "POSTMARK_SERVER_TOKEN is not configured; cannot fetch the sent message", "provider-key-missing",
     ("POSTMARK_SERVER_TOKEN", "Replay")),
    (DEAD, "Resend email refused (HTTP 401): check the API key", "provider-key-refused", ("RESEND_API_KEY", "Replay")),
    (DEAD, "Brevo email list refused (HTTP 403): check the API key", "provider-key-refused", ("BREVO_API_KEY",)),
    (DEAD, "Mandrill: Invalid_Key", "mandrill-key-refused", ("MANDRILL_API_KEY", "Replay")),
    (DEAD, "stored message expired or gone (HTTP 404)", "provider-message-gone", ("by hand",)),
    (DEAD, "Postmark outbound message expired or gone (HTTP 410)", "provider-message-gone", ("by hand",)),
    (DEAD, "Mandrill: Unknown_Message", "provider-message-gone", ("by hand",)),
    (DEAD, "Brevo has no sent email with that message-id", "provider-message-gone", ("by hand",)),
    (DEAD, "storage.url is outside RELAY_MAILGUN_STORAGE_ORIGINS", "mailgun-storage-origin",
     ("RELAY_MAILGUN_STORAGE_ORIGINS", "Replay")),
    (DEAD, "Resend email is larger than RELAY_MAX_REQUEST_BYTES", "provider-message-too-large",
     ("RELAY_MAX_REQUEST_BYTES", "Replay")),
    (DEAD, "stored message fetch failed: no complete answer within the deadline (ReadTimeout)", "provider-unavailable",
     ("Replay",)),
    (DEAD, "Brevo email content fetch failed: ConnectionError", "provider-unavailable", ("Replay",)),
    (DEAD, "Resend email fetch answered HTTP 503", "provider-unavailable", ("Replay",)),
    (DEAD, "Mandrill answered HTTP 502 with something that is not JSON", "provider-unavailable", ("Replay",)),
    (DEAD, "Mandrill message content answered HTTP 500", "provider-unavailable", ("Replay",)),
    (DEAD, "stored message has no body-mime", "provider-message-unreadable", ("by hand",)),
    (DEAD, "Postmark's message has no From", "provider-message-unreadable", ("by hand",)),
    (DEAD, "Mandrill's message has no from_email", "provider-message-unreadable", ("by hand",)),
    (DEAD, "Resend's email has no from", "provider-message-unreadable", ("by hand",)),
    (DEAD, "Brevo did not say who sent the email", "provider-message-unreadable", ("by hand",)),
    (DEAD, "Postmark outbound message is not valid JSON", "provider-message-unreadable", ("by hand",)),
    (DEAD, "Brevo email list must be a JSON object", "provider-message-unreadable", ("by hand",)),
    (DEAD, "unreadable MIME message (HeaderParseError)", "provider-message-unreadable", ("by hand",)),
    (DEAD, "no email headers found (expected From, To, Subject, ...)", "provider-message-unreadable", ("by hand",)),
    (DEAD, "empty message", "provider-message-unreadable", ("by hand",)),
    (DEAD, _provider_id_error(".."), "provider-message-unreadable", ("by hand",)),
    (DEAD, "message type 'NOTE' is not one of EMAIL_MESSAGE_TO_PROSPECT_SENT, EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED, "
     "EMAIL_AUTOMATED_MESSAGE_SENT", "unknown-message-type", ("knock_message_type", "by hand")),
    (DEAD, "no fetcher for 'sparkpost-stored'", "unknown-fetch-kind", ("Replay",)),
    # Dead: relay.knock.client, before the call and after Knock's answers.
    (DEAD, _prospect_path_error(".."), "prospect-id-unusable", ("is a dot segment", "Directory", "by hand")),
    (DEAD, _prospect_path_error("P 1"), "prospect-id-unusable", ("contains white space",)),
    (DEAD, "agent lookup: timeout after 10s", "knock-agent-lookup", ("prospect P1", "timeout after 10s", "Replay")),
    (DEAD, "timeout after 10s", "knock-unreachable", ("KNOCK_BASE_URL", "Replay")),
    (DEAD, "connection error: ConnectionError", "knock-unreachable", ("KNOCK_BASE_URL", "Replay")),
    (DEAD, "HTTP 429", "knock-rate-limited", ("RELAY_KNOCK_RATE_LIMIT", "Replay")),
    (DEAD, "Too Many Requests", "knock-rate-limited", ("Replay",)),
    (DEAD, "HTTP 503", "knock-unavailable", ("Replay once it is back",)),
    (DEAD, "HTTP 408", "knock-unavailable", ("Replay",)),
    (DEAD, "Service Unavailable", "knock-unavailable", ("Replay",)),
    (DEAD, "HTTP 401", "knock-credentials", ("KNOCK_API_KEY", "Replay")),
    (DEAD, "HTTP 403", "knock-credentials", ("KNOCK_API_KEY", "Replay")),
    (DEAD, "invalid api key", "knock-credentials", ("KNOCK_API_KEY", "Replay")),  # the sandbox's 401
    (DEAD, "Forbidden", "knock-credentials", ("KNOCK_API_KEY",)),
    (DEAD, "agent is not assigned to this property", "knock-agent-refused", ("agent pat", "Replay", "Directory")),
    (DEAD, _sandbox_refusal(agent={"username": " "}), "knock-agent-refused", ("agent pat",)),
    (DEAD, "prospect not found", "knock-prospect-not-found", ("Knock does not know prospect P1", "Directory")),
    (DEAD, "HTTP 404", "knock-prospect-not-found", ("prospect P1",)),
    (DEAD, _sandbox_refusal(extra="x"), "knock-unknown-fields", ("extra", "by hand")),
    (DEAD, _sandbox_refusal(sentTime="yesterday"), "knock-invalid-field", ("sentTime", "by hand")),
    (DEAD, _sandbox_refusal(subject=""), "knock-invalid-field", ("subject",)),
    (DEAD, _sandbox_refusal(type="NOTE"), "knock-invalid-field", ("type",)),
    (DEAD, "HTTP 400", "knock-invalid", ("by hand",)),
    (DEAD, "HTTP 422", "knock-invalid", ("by hand",)),
]  # fmt: skip


@pytest.mark.parametrize(("status", "text", "key", "words"), CASES, ids=[f"{c[2]}:{c[1][:40]}" for c in CASES])
def test_each_reason_and_error_gets_its_advice(status: str, text: str, key: str, words: tuple[str, ...]) -> None:
    found = delivery(status, text)
    matched = rule_for(found)
    assert matched is not None and matched[0].key == key
    advice = next_step(found)
    assert advice is not None and advice != (UNMATCHED_FALLBACK if status == UNMATCHED else DEAD_FALLBACK)
    for word in words:
        assert word in advice
    action = "resolve" if status == UNMATCHED else "replay"
    assert action in advice.lower() or "by hand" in advice
    assert "{" not in advice and "}" not in advice


@pytest.mark.parametrize("rule", [*UNMATCHED_RULES, *DEAD_RULES], ids=lambda rule: rule.key)
def test_every_rule_is_met_by_a_case(rule: object) -> None:
    assert rule in [r for status, text, _, _ in CASES for r, _ in [rule_for(delivery(status, text)) or (None, None)]]


def test_rule_keys_are_unique() -> None:
    keys = [rule.key for rule in (*UNMATCHED_RULES, *DEAD_RULES)]
    assert len(keys) == len(set(keys))


def _constant(node: ast.expr, names: dict[str, str]) -> str | None:
    """A string the code writes: a literal, a module constant, or the fixed start of an f-string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value) + "…"
    return None


def _module(path: Path) -> tuple[ast.Module, dict[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return tree, names


def unmatched_reasons_in_code() -> set[str]:
    """Every unmatched reason the code writes, read from its source."""
    reasons = {NOT_AUTHENTICATED}  # relay.routing.route_email parks unauthenticated leasing-side mail with it
    tree, names = _module(RELAY / "routing.py")
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef) and function.name in (
            "metadata_id_problem",
            "_find_directly",
            "_usable_tags",
        ):
            for node in ast.walk(function):
                values: list[ast.expr] = []
                if isinstance(node, ast.Return) and node.value is not None:
                    values = [node.value.elts[-1] if isinstance(node.value, ast.Tuple) else node.value]
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Found":
                    values = [k.value for k in node.keywords if k.arg == "unmatched_reason"]
                for value in values:
                    options = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
                    reasons.update(filter(None, (_constant(option, names) for option in options)))
    tree, names = _module(RELAY / "forwarding.py")  # transition(id, UNMATCHED, ..., reason=...)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and any(isinstance(a, ast.Name) and a.id == "UNMATCHED" for a in node.args):
            reasons.update(filter(None, (_constant(k.value, names) for k in node.keywords if k.arg == "reason")))
    for path in sorted((RELAY / "providers").glob("*.py")):  # Ignored(reason, ..., unmatched=True)
        tree, names = _module(path)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Ignored"
                and any(
                    k.arg == "unmatched" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords
                )
            ):
                reasons.update(filter(None, [_constant(node.args[0], names)]))
    return reasons


def test_the_reasons_are_read_from_the_code() -> None:
    reasons = unmatched_reasons_in_code()
    assert {NOT_AUTHENTICATED, INVALID_REPLY_TAG, "no agent", "no sender address"} <= reasons
    assert len(reasons) >= 10


@pytest.mark.parametrize("reason", sorted(unmatched_reasons_in_code()))
def test_every_unmatched_reason_in_the_code_has_specific_advice(reason: str) -> None:
    assert not reason.endswith("…"), "a reason with a variable part: give it a prefix rule"
    found = delivery(UNMATCHED, reason)
    assert rule_for(found) is not None
    assert next_step(found) != UNMATCHED_FALLBACK


def worker_errors_in_code() -> set[str]:
    """The fixed errors (or fixed starts of them) relay.forwarding gives a delivery up with."""
    tree, names = _module(RELAY / "forwarding.py")
    errors: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_give_up":
            found = _constant(node.args[1], names) if len(node.args) > 1 else None
            if found:
                errors.add(found.removesuffix("…") + ("{}" if found.endswith("…") else ""))
    return errors


def test_the_worker_errors_are_read_from_the_code() -> None:
    assert {"nothing to send: payload or prospect missing", "this process cannot fetch messages"} <= (
        worker_errors_in_code()
    )


@pytest.mark.parametrize("error", sorted(worker_errors_in_code()))
def test_every_fixed_worker_error_has_specific_advice(error: str) -> None:
    found = delivery(DEAD, error)
    assert rule_for(found) is not None
    assert next_step(found) != DEAD_FALLBACK


def test_provider_key_settings_name_every_fetch_and_real_settings() -> None:
    """The `what` of every provider fetch the worker makes has its key setting, and each is a setting."""
    fetched: set[str] = set()
    for path in sorted((RELAY / "providers").glob("*.py")):
        tree, names = _module(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fetched.update(filter(None, (_constant(k.value, names) for k in node.keywords if k.arg == "what")))
    fetched = {what for what in fetched if not what.startswith("SNS ")}  # the web process's, never a delivery's
    assert fetched == set(PROVIDER_KEY_SETTINGS)
    config = (RELAY / "config.py").read_text(encoding="utf-8")
    for setting in PROVIDER_KEY_SETTINGS.values():
        assert f'"{setting}"' in config


@pytest.mark.parametrize("text", [None, "", "something new"])
def test_an_unmatched_delivery_without_known_reason_gets_the_fallback(text: str | None) -> None:
    advice = next_step(delivery(UNMATCHED, text))
    assert advice == UNMATCHED_FALLBACK and "Resolve" in advice and "Directory" in advice


@pytest.mark.parametrize("text", [None, "", "Knock says no", "HTTP 418"])
def test_a_dead_delivery_without_known_error_gets_the_fallback(text: str | None) -> None:
    advice = next_step(delivery(DEAD, text))
    assert advice == DEAD_FALLBACK and "Replay" in advice


@pytest.mark.parametrize("status", [s for s in STATUSES if s not in (UNMATCHED, DEAD)])
def test_other_statuses_get_no_advice(status: str) -> None:
    found = delivery(status, None, reason="auto-reply", lastError="HTTP 503")
    assert next_step(found) is None


def test_a_reason_matches_whole_not_as_a_part() -> None:
    assert next_step(delivery(UNMATCHED, "no agent at all")) == UNMATCHED_FALLBACK
    assert next_step(delivery(DEAD, "HTTP 4011")) == DEAD_FALLBACK


def test_advice_names_what_the_delivery_lacks_in_words() -> None:
    advice = next_step(delivery(DEAD, "prospect not found", prospectId=None))
    assert advice is not None and advice.startswith("Knock does not know the prospect:")
    advice = next_step(delivery(UNMATCHED, "sender is not a known prospect and no recipient carries a reply tag",
                                sender=None))  # fmt: skip
    assert advice is not None and advice.startswith("Add the sender's address to the prospect")
    advice = next_step(delivery(DEAD, "agent is not assigned to this property", agentUsername=None))
    assert advice is not None and advice.startswith("Knock refused the agent:")


def test_values_from_outside_are_cut_short() -> None:
    advice = next_step(delivery(DEAD, "agent lookup: " + "x" * 5000))
    assert advice is not None and "x" * MAX_SHOWN_CHARS not in advice and "…" in advice
    advice = next_step(delivery(UNMATCHED, "no agent", prospectId="P" * 500))
    assert advice is not None and len(advice) < 600


def test_braces_in_values_are_shown_as_they_are() -> None:
    advice = next_step(delivery(DEAD, "unknown fields: {prospect}, {0}"))
    assert advice is not None and "{prospect}, {0}" in advice


def test_an_unreadable_body_error_still_gets_its_advice() -> None:
    advice = next_step(delivery(DEAD, "invalid Knock body: {'agent': ["))
    assert advice is not None and "see the last error" in advice
