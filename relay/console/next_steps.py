"""What an operator does next about an `unmatched` or `dead` delivery, in a sentence or two. Pure: no I/O.

An unmatched delivery says why in its `reason`: routing (relay.routing) and sender authentication
(relay.sender_auth) write one when no prospect was found, the worker (relay.forwarding) writes
`no agent`. A dead delivery says why in its
`lastError`: the worker's own refusals, what a provider fetch met (relay.providers.fetch and the
providers' fetchers), and what Knock answered (relay.knock.client): Knock's `errorMessage` as it
wrote it, `HTTP <status>` when it gave none, or `timeout after …` / `connection error: …` after the
retry window (RELAY_RETRY_MAX_AGE_SECONDS) ran out.

Each table below is a list of rules, tried in order: a pattern the whole text must match and the
advice, a template that may name `{prospect}`, `{agent}` and `{sender}` (the delivery's, in words),
the pattern's named groups and what a rule's `details` derive from the match. What the operator can
do is what the console offers: Replay (a dead delivery, with the same body to the same prospect),
Resolve (an unmatched delivery: a prospect id, an optional agent username, and "Remember" to add the
sender's address to that prospect) and the Directory page (prospects and agents with their
addresses); or, outside the console, a setting or Knock itself.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from relay.routing import INVALID_REPLY_TAG, UNSIGNED_REPLY_TAG, WRONG_REPLY_TAG
from relay.sender_auth import NOT_AUTHENTICATED
from relay.store.records import DEAD, UNMATCHED, Delivery

#: Characters of a value from outside (Knock's message, an address) put into advice.
MAX_SHOWN_CHARS = 120
#: Characters of an `invalid Knock body` error read for its field names.
MAX_PROBLEMS_CHARS = 10_000


@dataclass(frozen=True)
class Rule:
    """Advice for the reasons or errors `pattern` matches whole."""

    key: str
    pattern: re.Pattern[str]
    advice: str
    #: More template values, derived from the match (e.g. the fields of a refused body).
    details: Callable[[re.Match[str]], Mapping[str, str]] | None = None


def exact(text: str) -> re.Pattern[str]:
    """A pattern for exactly `text`, as the code writes it."""
    return re.compile(re.escape(text))


def prefix(text: str, rest: str = r"(?P<rest>.*)") -> re.Pattern[str]:
    """A pattern for `text` followed by anything (`rest`)."""
    return re.compile(re.escape(text) + rest, re.DOTALL)


def pattern(regex: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.compile(regex, flags)


def _field_names(match: re.Match[str]) -> Mapping[str, str]:
    """The fields of an `invalid Knock body: {...}` error (marshmallow's messages by field), dotted."""
    text = match["problems"]
    if len(text) > MAX_PROBLEMS_CHARS:
        return {"fields": "see the last error"}
    try:
        problems = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return {"fields": "see the last error"}
    names: list[str] = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif path:
            names.append(path)

    walk(problems, "")
    return {"fields": ", ".join(names) or "see the last error"}


#: The setting that holds the key of each provider API a fetch names (`what` in relay.providers.fetch).
PROVIDER_KEY_SETTINGS = {
    "stored message": "MAILGUN_API_KEY",
    "Postmark outbound message": "POSTMARK_SERVER_TOKEN",
    "Resend email": "RESEND_API_KEY",
    "Brevo email list": "BREVO_API_KEY",
    "Brevo email content": "BREVO_API_KEY",
    "Mandrill message content": "MANDRILL_API_KEY",
}


#: What a fetch names, as a pattern.
_FETCHED = "|".join(re.escape(what) for what in PROVIDER_KEY_SETTINGS)


def _key_setting(match: re.Match[str]) -> Mapping[str, str]:
    return {"setting": PROVIDER_KEY_SETTINGS.get(match["what"], "the provider's API key setting")}


_REMEMBER_UNTICKED = "leave “Remember” unticked: the sender is on the leasing side"

#: Advice by an unmatched delivery's `reason`.
UNMATCHED_RULES: tuple[Rule, ...] = (
    Rule(
        "sender-not-authenticated",
        exact(NOT_AUTHENTICATED),
        "Nothing vouches that this leasing-side mail really comes from {sender}: check that it is genuine, then "
        f"resolve it here with the prospect id ({_REMEMBER_UNTICKED}). If real agents' mail lands here often, "
        "name your receiving mail server in RELAY_TRUSTED_AUTHSERV_IDS.",
    ),
    Rule(
        "metadata-prospect-id",
        exact("routing metadata names no valid prospect id"),
        "The X-Knock-Prospect-Id header (or the provider's knock_prospect_id variable) names no usable prospect "
        "id: resolve it here with the right prospect id, and fix whatever writes that header.",
    ),
    Rule(
        "metadata-agent-username",
        exact("routing metadata names no valid agent username"),
        "The X-Knock-Agent-Username header (or the provider's knock_agent_username variable) names no usable "
        "agent: resolve it here with the prospect id and the agent's username, and fix whatever writes that header.",
    ),
    Rule(
        "no-recipient-off-leasing-side",
        exact("no recipient outside the leasing side"),
        "Every recipient is on the leasing side, so this looks like internal mail: if it concerns a prospect, "
        f"resolve it here with their prospect id ({_REMEMBER_UNTICKED}); otherwise nothing needs doing.",
    ),
    Rule(
        "no-recipient-known",
        exact("no recipient is a known prospect"),
        "No recipient's address belongs to a prospect in the Directory: add the renter's address to their "
        f"prospect in the Directory, then resolve this email here with that prospect id ({_REMEMBER_UNTICKED}).",
    ),
    Rule(
        "no-sender",
        exact("no sender address"),
        "The email has no From address: read it and resolve it here with the prospect id it belongs to.",
    ),
    Rule(
        "invalid-reply-tag",
        exact(INVALID_REPLY_TAG),
        "The reply tag in a recipient's address names no usable prospect id: resolve it here with the right "
        "prospect id, and check the reply-to addresses the leasing side sends out.",
    ),
    Rule(
        "unsigned-reply-tag",
        exact(UNSIGNED_REPLY_TAG),
        "A recipient's reply tag carries no signature, and RELAY_REPLY_TAG_SECRET is set: it is an address handed "
        "out before tags were signed, or one written by someone who knows the prospect id. If you know {sender} "
        "belongs to the prospect, resolve it here; while old addresses are still in use, "
        "RELAY_ACCEPT_UNSIGNED_REPLY_TAGS=true lets them route.",
    ),
    Rule(
        "wrong-reply-tag",
        exact(WRONG_REPLY_TAG),
        "A recipient's reply tag carries a signature none of RELAY_REPLY_TAG_SECRET made: a forged or mistyped "
        "address, or one signed with a secret since removed (keep an old secret in the list while its addresses "
        "are in use). Only if you know {sender} belongs to the prospect, resolve it here.",
    ),
    Rule(
        "reply-tag-domain",
        exact("a recipient carries a reply tag, but its domain is not in RELAY_MAILBOX_DOMAINS"),
        "Add the reply address's domain to RELAY_MAILBOX_DOMAINS so that reply tags are read in later mail, and "
        "resolve this email here with the prospect id its tag names.",
    ),
    Rule(
        "unknown-sender",
        exact("sender is not a known prospect and no recipient carries a reply tag"),
        "Add {sender} to the prospect in the Directory (or tick “Remember” when you resolve), and resolve this "
        "email here with that prospect id.",
    ),
    Rule(
        "no-agent",
        exact("no agent"),
        "No agent is known for {prospect} (not in the Directory, not in Knock, and KNOCK_DEFAULT_AGENT_USERNAME "
        "is not set): resolve it here with that prospect id and the agent's username. For later mail, add the "
        "agent with their address in the Directory, or give the prospect its agent there.",
    ),
)

UNMATCHED_FALLBACK = (
    "Resolve it here with the prospect id (and the agent's username if Knock names none for them), and add "
    "the renter's address to that prospect in the Directory so that later mail matches by itself."
)

#: Advice by a dead delivery's `lastError`, the worker's and fetches' errors first, then Knock's.
DEAD_RULES: tuple[Rule, ...] = (
    # SES messages stored in S3 (relay.providers.ses_s3).
    Rule(
        "ses-s3-bucket",
        pattern(r"S3 bucket '(?P<bucket>[^']*)' is not in RELAY_SES_S3_BUCKETS: the message was not fetched"),
        "The SES receipt rule stored this email in a bucket the relay may not read. If the bucket is yours, add it "
        "to RELAY_SES_S3_BUCKETS (and give the worker s3:GetObject on it), then Replay.",
    ),
    Rule(
        "ses-s3-missing",
        prefix("the message is not in S3 "),
        "The object SES named is gone from the bucket (a lifecycle rule shorter than the retries, or deleted): "
        "log the email in Knock by hand if you still have it, and keep objects longer than "
        "RELAY_RETRY_MAX_AGE_SECONDS.",
    ),
    Rule(
        "ses-s3-denied",
        prefix("S3 refused to give the message "),
        "S3 refused the worker: give its role s3:GetObject on the bucket (IRSA or instance role; a KMS key's "
        "kms:Decrypt too when the bucket uses one), then Replay.",
    ),
    Rule(
        "ses-s3-client-side-encryption",
        prefix("the message is encrypted with SES's client-side KMS encryption"),
        "Turn off encryption in the SES receipt rule's S3 action (S3's own server-side encryption is fine); this "
        "email must be logged in Knock by hand.",
    ),
    # The worker's own refusals (relay.forwarding).
    Rule(
        "nothing-to-send",
        exact("nothing to send: payload or prospect missing"),
        "This record has no Knock body or no prospect left, so Replay cannot send it: if the email belongs in "
        "Knock, log it on the guest card by hand.",
    ),
    Rule(
        "invalid-knock-body",
        prefix("invalid Knock body: ", r"(?P<problems>.*)"),
        "The relay built a Knock body that fails its own checks ({fields}), so Replay would fail the same way: "
        "note this delivery's id for whoever maintains the relay, and log the email in Knock by hand.",
        _field_names,
    ),
    Rule(
        "cannot-fetch",
        exact("this process cannot fetch messages"),
        "The process that took this delivery cannot fetch messages from the provider: Replay it, so that a "
        "worker started with `relay worker` fetches it.",
    ),
    # Fetching the email from the provider (relay.providers).
    Rule(
        "provider-key-missing",
        pattern(r"(?P<setting>[A-Z][A-Z0-9_]*) is not configured; cannot fetch .*"),
        "{setting} is not set, so the relay could not fetch this email from the provider: set it for the "
        "worker, restart the worker, then Replay.",
    ),
    Rule(
        "provider-key-refused",
        pattern(r"(?P<what>.+) refused \(HTTP 40[13]\): check the API key"),
        "The provider refused the relay's API key: check {setting}, restart the worker, then Replay.",
        _key_setting,
    ),
    Rule(
        "mandrill-key-refused",
        exact("Mandrill: Invalid_Key"),
        "Mandrill refused the relay's API key: check MANDRILL_API_KEY, restart the worker, then Replay.",
    ),
    Rule(
        "provider-message-gone",
        pattern(
            r".+ expired or gone \(HTTP (?:404|410)\)|Mandrill: Unknown_Message"
            r"|Brevo has no sent email with that message-id"
        ),
        "The provider no longer has this email (it keeps messages only for a while), so Replay cannot fetch "
        "it: if it belongs in Knock, log it on the guest card by hand.",
    ),
    Rule(
        "mailgun-storage-origin",
        exact("storage.url is outside RELAY_MAILGUN_STORAGE_ORIGINS"),
        "Mailgun's storage address for this email is not in RELAY_MAILGUN_STORAGE_ORIGINS: if it really is "
        "Mailgun's, add its origin there, restart the worker, then Replay.",
    ),
    Rule(
        "provider-message-too-large",
        pattern(r".+ is larger than RELAY_MAX_REQUEST_BYTES"),
        "The email is larger than RELAY_MAX_REQUEST_BYTES: raise that setting if such emails should be "
        "logged, restart the worker, then Replay; or log it in Knock by hand.",
    ),
    Rule(
        "provider-unavailable",
        pattern(
            r".+ fetch failed: .+|.+ fetch answered HTTP \d+|Mandrill answered HTTP \d+ with something that is "
            r"not JSON|Mandrill message content answered HTTP \d+"
        ),
        "The provider's API did not answer usably until the retry window ran out: check the provider's "
        "status page, then Replay.",
    ),
    Rule(
        "provider-message-unreadable",
        pattern(
            r"empty message|unreadable MIME message \(.*\)|no email headers found .*|stored message has no "
            r"body-mime|.+'s (?:message|email) has no (?:from|From|from_email)|Brevo did not say who sent the "
            r"email|a provider id .+: not fetched"
            rf"|(?:{_FETCHED})(?: is not valid JSON| must be a JSON object)"
        ),
        "The provider's copy of this email cannot be read as an email to log, so Replay would fail the same "
        "way: if it belongs in Knock, log it on the guest card by hand.",
    ),
    Rule(
        "unknown-message-type",
        pattern(r"message type .+ is not one of .+"),
        "The email's routing metadata (a knock_message_type variable or X-Knock-Message-Type header) names an "
        "unknown message type, so Replay would fail the same way: fix whatever sets it, and log this email in "
        "Knock by hand.",
    ),
    Rule(
        "unknown-fetch-kind",
        prefix("no fetcher for "),
        "This delivery names a kind of fetch this version of the relay does not know: Replay it once the "
        "workers run a version that does, or log the email in Knock by hand.",
    ),
    # Knock (relay.knock.client): the relay's last check before a call, then Knock's answers.
    Rule(
        "prospect-id-unusable",
        pattern(r"prospect id (?P<problem>.+): not sent to Knock"),
        "The prospect id on this delivery {problem}, so nothing was sent and Replay would fail the same way: "
        "correct the prospect in the Directory for later mail, and log this email in Knock by hand.",
    ),
    Rule(
        "knock-agent-lookup",
        prefix("agent lookup: ", r"(?P<cause>.*)"),
        "Knock could not be asked for the agent of {prospect} until the retry window ran out ({cause}): "
        "Replay once Knock answers again.",
    ),
    Rule(
        "knock-unreachable",
        pattern(r"timeout after .+s|connection error: .+"),
        "Knock did not answer until the retry window (RELAY_RETRY_MAX_AGE_SECONDS) ran out: check that Knock "
        "is up and reachable at KNOCK_BASE_URL, then Replay.",
    ),
    Rule(
        "knock-rate-limited",
        pattern(r"HTTP 429|.*\b(?:too many requests|rate[ -]limit(?:ed)?)\b.*", ignore_case=True),
        "Knock kept answering “too many requests” until the retry window ran out: Replay once it accepts "
        "calls again, and set or lower RELAY_KNOCK_RATE_LIMIT if this happens often.",
    ),
    Rule(
        "knock-unavailable",
        pattern(
            r"HTTP (?:5\d\d|408|425)|.*\b(?:service unavailable|temporarily unavailable|bad gateway"
            r"|gateway time-?out|internal server error)\b.*",
            ignore_case=True,
        ),
        "Knock was unavailable until the retry window ran out: Replay once it is back.",
    ),
    Rule(
        "knock-credentials",
        pattern(
            r"HTTP 40[13]|.*\b(?:api[ -]?key|unauthori[sz]ed|not authori[sz]ed|forbidden|access denied)\b.*",
            ignore_case=True,
        ),
        "Knock refused the relay's credentials: check the KNOCK_API_KEY setting of the worker (and that the key "
        "may log emails), restart the worker, then Replay.",
    ),
    Rule(
        "knock-agent-refused",
        pattern(r".*\bagent\b.*", ignore_case=True),
        "Knock refused {agent}: check in Knock that this username exists and works this prospect's property, "
        "fix it there, then Replay (Replay sends the same agent). If the Directory names the wrong agent, "
        "correct it there for later mail.",
    ),
    Rule(
        "knock-prospect-not-found",
        pattern(r"HTTP 404|.*\bnot found\b.*", ignore_case=True),
        "Knock does not know {prospect}: check the id in Knock (a merged or deleted guest card?). Replay sends "
        "it to the same prospect, so if the id is wrong, correct it in the Directory for later mail and log "
        "this email in Knock by hand.",
    ),
    Rule(
        "knock-unknown-fields",
        prefix("unknown fields: ", r"(?P<fields>.+)"),
        "Knock does not accept the fields {fields} the relay sent, so Replay would be refused the same way: "
        "note this delivery's id for whoever maintains the relay, and log the email in Knock by hand.",
    ),
    Rule(
        "knock-invalid-field",
        pattern(r"(?P<field>type|sent ?time|subject|body)\b.*", ignore_case=True),
        "Knock refused the email's {field} as the relay wrote it, so Replay would be refused the same way: "
        "note this delivery's id for whoever maintains the relay, and log the email in Knock by hand.",
    ),
    Rule(
        "knock-invalid",
        pattern(r"HTTP (?:400|422)"),
        "Knock refused the email as invalid without saying why, so Replay would be refused the same way: "
        "note this delivery's id for whoever maintains the relay, and log the email in Knock by hand.",
    ),
)

DEAD_FALLBACK = (
    "Knock did not log this email; the last error says why. Fix the cause in Knock or in the relay's "
    "settings, then Replay (it sends the same body to the same prospect)."
)

RULES: Mapping[str, tuple[Rule, ...]] = {UNMATCHED: UNMATCHED_RULES, DEAD: DEAD_RULES}
FALLBACKS: Mapping[str, str] = {UNMATCHED: UNMATCHED_FALLBACK, DEAD: DEAD_FALLBACK}


def explained(delivery: Delivery) -> str | None:
    """The text the advice answers: an unmatched delivery's `reason`, a dead one's `lastError`."""
    return delivery.reason if delivery.status == UNMATCHED else delivery.lastError


def rule_for(delivery: Delivery) -> tuple[Rule, re.Match[str]] | None:
    """The first rule of the delivery's status that matches its reason or error whole, and the match."""
    text = explained(delivery)
    if text is None:
        return None
    for rule in RULES.get(delivery.status, ()):
        found = rule.pattern.fullmatch(text)
        if found:
            return rule, found
    return None


def _shown(value: str) -> str:
    value = " ".join(value.split())
    return value if len(value) <= MAX_SHOWN_CHARS else value[: MAX_SHOWN_CHARS - 1] + "…"


def next_step(delivery: Delivery) -> str | None:
    """What to do next about an unmatched or dead delivery (never None for those); None for any other status."""
    fallback = FALLBACKS.get(delivery.status)
    if fallback is None:
        return None
    matched = rule_for(delivery)
    if matched is None:
        return fallback
    rule, found = matched
    values = {
        "prospect": f"prospect {_shown(delivery.prospectId)}" if delivery.prospectId else "the prospect",
        "agent": f"agent {_shown(delivery.agentUsername)}" if delivery.agentUsername else "the agent",
        "sender": _shown(delivery.sender) if delivery.sender else "the sender's address",
    }
    values.update({name: _shown(value or "") for name, value in found.groupdict().items()})
    if rule.details is not None:
        values.update({name: _shown(value) for name, value in rule.details(found).items()})
    return rule.advice.format_map(values)
