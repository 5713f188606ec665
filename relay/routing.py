"""Direction, type, prospects and agent of an email (SPEC §5.1–5.5). Pure: no I/O.

The directory is handed in as a `DirectoryView` that the caller fetched for
exactly the addresses and ids this email names (see `addresses_to_look_up`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from relay.errors import MalformedPayload
from relay.ids import is_path_id
from relay.message import Email, Metadata
from relay.reply_tags import SIGNED, UNSIGNED, ReplyTag, check, read_tag
from relay.sender_auth import ENFORCE, NOT_AUTHENTICATED, OFF, PASS
from relay.spam import DEFAULT_THRESHOLD, IGNORE, VIRUS, ignored_reason

TO_PROSPECT = "EMAIL_MESSAGE_TO_PROSPECT_SENT"
FROM_PROSPECT = "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
AUTOMATED = "EMAIL_AUTOMATED_MESSAGE_SENT"
MESSAGE_TYPES = (TO_PROSPECT, FROM_PROSPECT, AUTOMATED)

INBOUND = "inbound"
OUTBOUND = "outbound"

#: `Precedence` values that mark a message nobody typed (RFC 3834 practice).
AUTO_PRECEDENCE = {"auto_reply", "bulk", "junk"}


@dataclass(frozen=True)
class RoutingRules:
    mailbox_domains: frozenset[str] = frozenset()
    automated_senders: tuple[str, ...] = ()
    reply_tag_prefix: str = "prospect-"
    #: With secrets, only signed reply tags route (unless unsigned ones are still accepted).
    reply_tag_secrets: tuple[str, ...] = ()
    accept_unsigned_reply_tags: bool = False
    ignore_auto_replies: bool = True
    sender_auth: str = ENFORCE
    #: Domains of mailboxes Knock logs mail from itself: mail to or from them is not logged again.
    knock_logged_domains: frozenset[str] = frozenset()
    #: Spam: `ignore` (not logged, kept for an operator) or `log`; the score that counts as spam
    #: where a filter gives only a score. A virus is never logged.
    spam_policy: str = IGNORE
    spam_threshold: float = DEFAULT_THRESHOLD


@dataclass(frozen=True)
class DirectoryView:
    """What the directory knows about the addresses and ids of one email (all keys lowercased)."""

    prospects_by_email: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    agents_by_email: Mapping[str, str] = field(default_factory=dict)
    prospect_agents: Mapping[str, str | None] = field(default_factory=dict)
    #: Earlier emails this one replies to that were logged for prospects: Message-ID → {prospect
    #: id: the direction that email went} (relay.threads).
    threads: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """One prospect to log the email for; agent None means: ask Knock, then the default."""

    prospect_id: str | None
    agent_username: str | None = None
    #: How routing found them, for the people who check its work (not part of equality).
    prospect_found_by: str = field(default="", compare=False)
    agent_found_by: str = field(default="", compare=False)
    #: How the prospect was matched, in one word (`metadata`, `address`, `reply tag`, `thread`), and
    #: for a thread, the Message-ID of the earlier email it followed.
    matched_by: str = field(default="", compare=False)
    thread_message_id: str = field(default="", compare=False)


@dataclass(frozen=True)
class Route:
    direction: str
    message_type: str
    targets: tuple[Target, ...]
    ignored_reason: str | None = None
    unmatched_reason: str | None = None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def is_leasing_side(address: str, rules: RoutingRules, view: DirectoryView) -> bool:
    """Mailbox domains and addresses, directory agents, and automated senders (they mail prospects)."""
    lowered = address.lower()
    return (
        lowered in rules.mailbox_domains
        or domain_of(lowered) in rules.mailbox_domains
        or lowered in view.agents_by_email
        or is_automated_sender(lowered, rules)
    )


def direction_of(email: Email, rules: RoutingRules, view: DirectoryView) -> str:
    if email.sender and is_leasing_side(email.sender, rules, view):
        return OUTBOUND
    return INBOUND


def is_automated_sender(address: str | None, rules: RoutingRules) -> bool:
    if not address:
        return False
    lowered = address.lower()
    for pattern in rules.automated_senders:
        if pattern.startswith("*@"):
            if domain_of(lowered) == pattern[2:]:
                return True
        elif lowered == pattern:
            return True
    return False


def is_auto_submitted(email: Email) -> bool:
    value = (email.header("auto-submitted") or "").strip().lower()
    return bool(value) and value.split(";")[0].strip() != "no"


def is_auto_reply(email: Email) -> bool:
    precedence = (email.header("precedence") or "").strip().lower()
    return (
        is_auto_submitted(email)
        or email.header("x-autoreply") is not None
        or email.header("x-autorespond") is not None
        or precedence in AUTO_PRECEDENCE
    )


def message_type_of(email: Email, direction: str, rules: RoutingRules) -> str:
    explicit = email.metadata.message_type
    if explicit:
        normalised = explicit.strip().upper()
        if normalised not in MESSAGE_TYPES:
            raise MalformedPayload(f"message type {explicit!r} is not one of {', '.join(MESSAGE_TYPES)}")
        return normalised
    if direction == INBOUND:
        return FROM_PROSPECT
    if is_automated_sender(email.sender, rules) or is_auto_submitted(email):
        return AUTOMATED
    return TO_PROSPECT


#: Why an email whose only prospect ids are reply tags that break relay.ids' rule is unmatched.
INVALID_REPLY_TAG = "reply tag names no valid prospect id"
#: Why an email whose reply tags are not signed by one of the relay's secrets is unmatched.
UNSIGNED_REPLY_TAG = "reply tag not signed"
WRONG_REPLY_TAG = "reply tag signature wrong"


def metadata_id_problem(metadata: Metadata) -> str | None:
    """Why an id the routing metadata states (X-Knock-* headers, a provider's variables) is unusable,
    or None. Ids go into the paths of Knock's URLs, so they follow relay.ids' rule; an email whose
    metadata breaks it is left unmatched, saying why, rather than routed to a guessed prospect."""
    if metadata.prospect_id and not is_path_id(metadata.prospect_id):
        return "routing metadata names no valid prospect id"
    if metadata.agent_username and not is_path_id(metadata.agent_username):
        return "routing metadata names no valid agent username"
    return None


def reply_tag_prospect(address: str, prefix: str) -> str | None:
    """`leasing+prospect-4WXU6U2J@reply.acme.com` → `4WXU6U2J` (signed or not; see relay.reply_tags)."""
    tag = read_tag(address, prefix)
    return tag.prospect_id if tag else None


def _usable_tags(tags: list[ReplyTag], rules: RoutingRules) -> tuple[list[ReplyTag], str | None]:
    """The tags that may route, and with none, why: with secrets, a tag must carry the signature of
    one of them (an unsigned one counts while RELAY_ACCEPT_UNSIGNED_REPLY_TAGS is on)."""
    if not rules.reply_tag_secrets:
        return tags, None
    verdicts = [check(tag, rules.reply_tag_secrets) for tag in tags]
    usable = [
        tag
        for tag, verdict in zip(tags, verdicts, strict=True)
        if verdict == SIGNED or (verdict == UNSIGNED and rules.accept_unsigned_reply_tags)
    ]
    if usable or not tags:
        return usable, None
    return [], UNSIGNED_REPLY_TAG if UNSIGNED in verdicts else WRONG_REPLY_TAG


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Found:
    """The prospects routing found for an email (or why none), how, and the thread it followed."""

    prospect_ids: tuple[str, ...] = ()
    unmatched_reason: str | None = None
    found_by: str = ""
    matched_by: str = ""
    thread_message_id: str = ""


#: Reasons a thread may stand in for: nothing else named a prospect (a reply tag that was refused,
#: an unauthenticated sender or an unusable id keep their reason).
_THREAD_MAY_ANSWER = frozenset(
    {"no recipient is a known prospect", "sender is not a known prospect and no recipient carries a reply tag"}
)


def thread_prospects(references: Iterable[str], direction: str, view: DirectoryView) -> tuple[list[str], str]:
    """The prospects of the newest referenced email the relay remembers, and its Message-ID. An
    outbound reply follows only an inbound email: an agent's reply to a prospect's message."""
    for message_id in references:
        remembered = view.threads.get(message_id)
        if not remembered:
            continue
        ids = [pid for pid, went in remembered.items() if is_path_id(pid) and (direction == INBOUND or went == INBOUND)]
        if ids:
            return sorted(ids), message_id
    return [], ""


def find_prospects(
    email: Email, direction: str, rules: RoutingRules, view: DirectoryView, references: Iterable[str] = ()
) -> Found:
    """Prospect ids, the reason when there are none, and how they were found. Every id found can go
    into a URL path (relay.ids): metadata or reply tags that name anything else leave it unmatched.
    Failing the addresses and reply tags, the thread the email replies to (its `references`)."""
    found = _find_directly(email, direction, rules, view)
    if found.prospect_ids or found.unmatched_reason not in _THREAD_MAY_ANSWER:
        return found
    ids, followed = thread_prospects(references, direction, view)
    if not ids:
        return found
    return Found(tuple(ids), None, f"the thread of {followed}", "thread", followed)


def _find_directly(email: Email, direction: str, rules: RoutingRules, view: DirectoryView) -> Found:
    problem = metadata_id_problem(email.metadata)
    if problem:
        return Found(unmatched_reason=problem)
    if email.metadata.prospect_id:
        return Found((email.metadata.prospect_id,), None, "explicit metadata", "metadata")
    if direction == OUTBOUND:
        off_side = [a for a in email.recipients if not is_leasing_side(a, rules, view)]
        found = _unique(pid for a in off_side for pid in view.prospects_by_email.get(a.lower(), ()))
        if found:
            return Found(tuple(found), None, "a recipient's address in the directory", "address")
        if not off_side:
            return Found(unmatched_reason="no recipient outside the leasing side")
        return Found(unmatched_reason="no recipient is a known prospect")
    if not email.sender:
        return Found(unmatched_reason="no sender address")
    known = list(view.prospects_by_email.get(email.sender.lower(), ()))
    if known:
        return Found(tuple(known), None, "the sender's address in the directory", "address")
    found_tags = [
        tag
        for a in email.recipients
        if is_leasing_side(a, rules, view)
        for tag in [read_tag(a, rules.reply_tag_prefix)]
        if tag
    ]
    tags, refused = _usable_tags(found_tags, rules)
    if refused:
        return Found(unmatched_reason=refused)
    tagged = _unique(tag.prospect_id for tag in tags if is_path_id(tag.prospect_id))
    if tagged:
        signed = rules.reply_tag_secrets and all(tag.signature for tag in tags)
        how = "the signed reply tag of a recipient" if signed else "the reply tag of a recipient"
        return Found(tuple(tagged), None, how, "reply tag")
    if tags:
        return Found(unmatched_reason=INVALID_REPLY_TAG)
    if any(reply_tag_prospect(a, rules.reply_tag_prefix) for a in email.recipients):
        return Found(unmatched_reason="a recipient carries a reply tag, but its domain is not in RELAY_MAILBOX_DOMAINS")
    return Found(unmatched_reason="sender is not a known prospect and no recipient carries a reply tag")


def find_agent(email: Email, direction: str, prospect_id: str, view: DirectoryView) -> tuple[str | None, str]:
    """The agent from metadata or the directory, and how it was found; None leaves Knock and the
    default to the worker."""
    if email.metadata.agent_username:
        return email.metadata.agent_username, "explicit metadata"
    if direction == OUTBOUND and email.sender:
        agent = view.agents_by_email.get(email.sender.lower())
        if agent:
            return agent, "the sender's agent entry in the directory"
    agent = view.prospect_agents.get(prospect_id)
    return (agent, "the prospect's agent in the directory") if agent else (None, "")


def honours_metadata(email: Email, direction: str, rules: RoutingRules) -> bool:
    """Routing metadata in the mail itself (X-Knock-* headers, route variables) could be written by
    anyone: it counts on leasing-side mail whose sender is authenticated, or from a trusted caller."""
    if rules.sender_auth == OFF or email.sender_auth.vouched:
        return True
    return direction == OUTBOUND and email.sender_auth.status == PASS


def _target(email: Email, direction: str, prospect_id: str, view: DirectoryView, found: Found) -> Target:
    agent, agent_found_by = find_agent(email, direction, prospect_id, view)
    return Target(prospect_id, agent, found.found_by, agent_found_by, found.matched_by, found.thread_message_id)


_NO_METADATA = Metadata()
#: Why mail that Knock's own mailboxes take part in is not logged by the relay.
KNOCK_LOGS_IT = "Knock logs it"


def involves_knock_mailbox(email: Email, rules: RoutingRules) -> bool:
    """The sender or a recipient is on a domain whose mailboxes Knock logs mail from itself."""
    if not rules.knock_logged_domains:
        return False
    addresses = [email.sender] if email.sender else []
    return any(domain_of(a) in rules.knock_logged_domains for a in [*addresses, *email.recipients])


def route_email(email: Email, rules: RoutingRules, view: DirectoryView, references: Iterable[str] = ()) -> Route:
    """Where an email goes. `references` are the Message-IDs it replies to, newest first
    (relay.threads), whose remembered prospects the view holds in `threads`."""
    direction = direction_of(email, rules, view)
    if email.metadata != _NO_METADATA and not honours_metadata(email, direction, rules):
        email = replace(email, metadata=_NO_METADATA)
    message_type = message_type_of(email, direction, rules)
    filtered = ignored_reason(email.content_verdict, rules.spam_policy, rules.spam_threshold)
    if filtered == VIRUS:
        return Route(direction, message_type, (), VIRUS)
    if direction == OUTBOUND and rules.sender_auth == ENFORCE and email.sender_auth.status != PASS:
        # Mail claiming to come from the leasing side that nothing vouches for: a failed verdict,
        # or none at all (a provider that gives none cannot tell an agent from a stranger). Spam
        # says so rather than waiting for a person.
        return Route(direction, message_type, (), filtered, None if filtered else NOT_AUTHENTICATED)
    if involves_knock_mailbox(email, rules):
        # Knock logs a conversation copied to its own mailbox; logging it here too would show it twice.
        return Route(direction, message_type, (), KNOCK_LOGS_IT)
    found = find_prospects(email, direction, rules, view, references)
    targets = tuple(_target(email, direction, pid, view, found) for pid in found.prospect_ids)
    # Spam keeps its prospects: an operator who finds it is not can still log it (replay, resolve).
    ignored = filtered
    if not ignored and direction == INBOUND and rules.ignore_auto_replies and not email.metadata.message_type:
        ignored = "auto-reply" if is_auto_reply(email) else None
    return Route(direction, message_type, targets, ignored, found.unmatched_reason)


def addresses_to_look_up(email: Email) -> list[str]:
    """Lowercased addresses whose directory entries routing may consult."""
    found = [email.sender] if email.sender else []
    return _unique(a.lower() for a in found + list(email.recipients))
