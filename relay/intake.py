"""From a normalised email to stored, de-duplicated, queued deliveries."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import redis

from relay.audit import record_action
from relay.errors import Conflict, MalformedPayload, NotFound, NotReplicated, UpstreamUnavailable
from relay.forwarding import FETCH
from relay.knock.client import KnockRejected, KnockTransientError
from relay.knock.schema import remote_images, render_log_email
from relay.message import MAX_SUBJECT_CHARS, Email, Ignored, PendingFetch
from relay.metrics import REPLICATION_TIMEOUTS
from relay.routing import DirectoryView, Route, Target, route_email
from relay.sender_auth import PASS
from relay.services import Services
from relay.spam import SPAM_PREFIX, VIRUS
from relay.store import (
    DEAD,
    DUPLICATE,
    IGNORED,
    QUEUED,
    UNMATCHED,
    Delivery,
    NewRecord,
    new_delivery_id,
    now_ms,
)
from relay.threads import references, remembers, thread_key

log = logging.getLogger(__name__)


#: Routing reads the directory (or a process's copy of it) before storing; when the directory
#: changed in between, nothing is stored and routing runs again on a fresh read, this many times at
#: most. The last try stores without comparing, as a read followed by a separate write always did.
ROUTING_TRIES = 3


@dataclass(frozen=True)
class Intake:
    """What a webhook answers: an overall status and one summary per delivery."""

    deliveries: tuple[dict[str, Any], ...]
    #: The call repeats one already stored (a replayed signed token or a provider's retry).
    replayed: bool = False

    @property
    def status(self) -> str:
        if self.replayed:
            return DUPLICATE
        statuses = [d["status"] for d in self.deliveries]
        for preferred in (QUEUED, UNMATCHED, IGNORED):
            if preferred in statuses:
                return preferred
        return statuses[0] if statuses else IGNORED

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "deliveries": list(self.deliveries)}


Item = Email | Ignored | PendingFetch


def accept_email(services: Services, email: Email, provider: str, received_at: datetime | None = None) -> Intake:
    """Route the email, store one delivery per prospect (or one unmatched/ignored) and queue what can go."""
    return accept_items(services, [email], provider, received_at=received_at)


def accept_items(
    services: Services,
    items: Sequence[Item],
    provider: str,
    *,
    received_at: datetime | None = None,
    replay_key: str | None = None,
    replay_ttl: int = 0,
) -> Intake:
    """Everything one call brought, stored in one Redis step: emails routed into deliveries (one per
    prospect, or one unmatched or ignored), calls with nothing to log kept as ignored records, and
    emails still to be fetched as queued records of their own; what is to be sent is queued with it.

    With `replay_key` (a signed token, a provider's delivery id), a call whose key was stored before
    writes nothing and is answered as a duplicate of the earlier answer.
    """
    received_at = received_at or datetime.now(UTC)
    threads: dict[str, dict[str, str]] = {}  # what the store said of the threads the emails reply to
    tries, asked_threads = 0, False
    while True:
        tries += 1
        last_try = tries >= ROUTING_TRIES
        routed = _records_for(services, items, provider, received_at, threads, ask_threads=not asked_threads)
        records, versions = routed.records, routed.versions
        if len(versions) > 1 and not last_try:  # the directory changed while this call was routed
            services.directory.forget()
            continue
        summaries = [record.delivery.summary() for record in records]
        try:
            stored = services.store.create_all(
                records,
                directory_version=None if last_try or not versions else versions.pop(),
                replay_key=replay_key,
                replay_answer=json.dumps(Intake(tuple(summaries)).body()) if replay_key else "",
                replay_ttl=replay_ttl,
                thread_candidates=list(routed.thread_candidates),
                thread_writes=routed.thread_writes,
            )
        except NotReplicated as unconfirmed:
            REPLICATION_TIMEOUTS.inc()
            log.warning(
                "stored, but not yet on enough Redis replicas: answered 503", extra={"error": unconfirmed.message}
            )
            raise
        if stored.threads is not None:
            # Nothing was stored: an unmatched email replies to one the relay remembers. Routed
            # again with what it remembers (once: the threads are not asked for again).
            threads = {routed.thread_candidates[key]: remembered for key, remembered in stored.threads.items()}
            asked_threads = True
            tries -= 1
            continue
        if not stored.stale:
            break
        services.directory.forget()
    if stored.replayed is not None:
        earlier = json.loads(stored.replayed)
        return Intake(tuple({**d, "status": DUPLICATE} for d in earlier.get("deliveries", [])), replayed=True)
    if any(stored.holders):
        summaries = [
            _duplicate_of(services, holder, record) if holder else summary
            for record, summary, holder in zip(records, summaries, stored.holders, strict=True)
        ]
        if replay_key:
            answer = Intake(tuple(summaries)).body()
            services.redis.set(replay_key, json.dumps(answer), ex=replay_ttl)
    intake = Intake(tuple(summaries))
    if services.settings.learn_thread_addresses:
        _learn_thread_addresses(services, records, stored.holders)
    if log.isEnabledFor(logging.INFO):
        for message, ids in _ids_by_kind(records).items():
            log.info(message, extra={"provider": provider, "status": intake.status, "deliveries": ids})
    return intake


@dataclass
class _Routed:
    """What routing made of one call: the records to store, the directory versions it read them at
    (one, unless the directory changed meanwhile; none when the call held no email), the thread keys
    to ask the store about (key → Message-ID: emails left unmatched that reply to one), and the
    thread entries to write (key, prospect id, direction, the index of its record: emails logged
    for prospects)."""

    records: list[NewRecord]
    versions: set[str]
    thread_candidates: dict[str, str]
    thread_writes: list[tuple[str, str, str, int]]


def _records_for(
    services: Services,
    items: Sequence[Item],
    provider: str,
    received_at: datetime,
    threads: dict[str, dict[str, str]],
    *,
    ask_threads: bool,
) -> _Routed:
    routed = _Routed([], set(), {}, [])
    for item in items:
        if isinstance(item, Ignored):
            status = UNMATCHED if item.unmatched else IGNORED
            routed.records.append(NewRecord(_unrouted(item, provider, status, received_at), {}, claim=False))
        elif isinstance(item, PendingFetch):
            delivery = _unrouted(item, provider, QUEUED, received_at)
            payload = {FETCH: {"kind": item.kind, "spec": item.spec}}
            routed.records.append(
                NewRecord(delivery, payload, claim=False, enqueue=services.queue.write_for(delivery.id))
            )
        else:
            # The headers are read for threads only when the store has said what it remembers, or
            # when the email turns out unmatched: an email routed by its addresses never needs them.
            refs = references(item) if threads else []
            followed = {mid: threads[mid] for mid in refs if mid in threads}
            thread_ids = sorted({pid for remembered in followed.values() for pid in remembered})
            view, version = services.directory.view_for(item, services.rules.reply_tag_prefix, thread_ids)
            routed.versions.add(version)
            route = route_email(item, services.rules, replace(view, threads=followed), refs)
            first = len(routed.records)
            routed.records += _email_records(services, item, provider, received_at, route, view)
            if route.targets and not route.ignored_reason and remembers(item):
                key = thread_key(item.message_id)
                routed.thread_writes += [
                    (key, target.prospect_id or "", route.direction, first + n)
                    for n, target in enumerate(route.targets)
                ]
            elif ask_threads and not route.targets and not route.ignored_reason:
                routed.thread_candidates.update((thread_key(mid), mid) for mid in refs or references(item))
    return routed


def _email_records(
    services: Services, email: Email, provider: str, received_at: datetime, route: Route, view: DirectoryView
) -> list[NewRecord]:
    """One record per prospect the email is routed to (or one unmatched or ignored)."""
    records = []
    targets = route.targets or (Target(None),)
    addresses = [email.sender or "", *email.recipients]
    # Found by every address, unless that makes too many index entries for one step: an email to
    # a thousand prospects is found, per prospect, by its sender and that prospect's addresses.
    every_address = len(targets) * len(addresses) <= MAX_ADDRESS_ENTRIES_PER_EMAIL
    own = {} if every_address else _recipients_by_prospect(email.recipients, view)
    for target in targets:
        # Always a body the schema accepts, bar a pending agent (a property test holds it); the
        # worker checks it, complete, before sending.
        payload = render_log_email(email, route.message_type, target.agent_username, received_at)
        reason: str | None
        if route.ignored_reason:
            status, reason = IGNORED, route.ignored_reason
        elif target.prospect_id is None:
            status, reason = UNMATCHED, route.unmatched_reason
        else:
            status, reason = QUEUED, None
        delivery = Delivery(
            id=new_delivery_id(),
            status=status,
            type=route.message_type,
            direction=route.direction,
            messageId=email.message_id,
            provider=provider,
            subject=payload["subject"],
            sentTime=payload["sentTime"],
            receivedAt=int(received_at.timestamp() * 1000),
            prospectId=target.prospect_id,
            agentUsername=target.agent_username,
            reason=reason,
            remoteImages=remote_images(payload["body"]),
            truncated=list(email.truncated),
            senderAuth=email.sender_auth.describe(),
            sender=email.sender,
            senderName=email.sender_name,
            recipients=list(email.recipients),
            prospectFoundBy=target.prospect_found_by or None,
            agentFoundBy=target.agent_found_by or None,
            matchedBy=target.matched_by or None,
            threadMessageId=target.thread_message_id or None,
        )
        write = services.queue.write_for(delivery.id) if status == QUEUED else None
        searched = None
        if not every_address:
            searched = tuple(a for a in (email.sender, *own.get(target.prospect_id or "", ())) if a)
        # A virus's body is not kept: nobody is to open or send it.
        kept = None if route.ignored_reason == VIRUS else payload
        records.append(NewRecord(delivery, kept, enqueue=write, searched_addresses=searched))
    return records


def _learn_thread_addresses(services: Services, records: Sequence[NewRecord], holders: Sequence[str | None]) -> None:
    """RELAY_LEARN_THREAD_ADDRESSES: the sender of an inbound email matched by its thread becomes
    one of the prospect's addresses, so that its next email matches directly (audited). Only a sender
    the receiving provider authenticated (anyone can write a From and copy a Message-ID), and only
    while the prospect has fewer than MAX_LEARNED_ADDRESSES addresses."""
    for record, holder in zip(records, holders or [None] * len(records), strict=True):
        delivery = record.delivery
        if holder or delivery.matchedBy != "thread" or delivery.direction != "inbound" or not delivery.sender:
            continue
        if not delivery.prospectId or (delivery.senderAuth or "").split(":")[0] != PASS:
            continue
        stored = services.directory.merge_prospect(
            delivery.prospectId, [delivery.sender], None, up_to=MAX_LEARNED_ADDRESSES
        )
        if delivery.sender.lower() not in stored["emails"]:
            continue  # the prospect has as many addresses as learning may give it
        detail = f"{delivery.sender}, replying to {delivery.threadMessageId}"
        record_action(services.redis, "relay", "learn address from thread", delivery.prospectId, detail)


#: Addresses a prospect may have before learning from threads adds no more.
MAX_LEARNED_ADDRESSES = 10

#: Address index entries one email may write with all of its deliveries' addresses.
MAX_ADDRESS_ENTRIES_PER_EMAIL = 1000


def _recipients_by_prospect(recipients: Sequence[str], view: DirectoryView) -> dict[str, list[str]]:
    """The recipients the directory gives to each prospect, read once for all of an email's deliveries."""
    found: dict[str, list[str]] = {}
    for address in recipients:
        for prospect_id in view.prospects_by_email.get(address.lower(), ()):
            found.setdefault(prospect_id, []).append(address)
    return found


def _duplicate_of(services: Services, holder: str, record: NewRecord) -> dict[str, Any]:
    """The answer for a record whose email was already logged for its prospect, as `holder`."""
    existing = services.store.get(holder)
    if existing is None:  # expired since the claim was compared
        return {**record.delivery.summary(DUPLICATE), "id": holder}
    if existing.status == QUEUED and not existing.enqueued:
        # Stored by an earlier version that queued in a second step, which never confirmed.
        enqueue(services, existing)
    return existing.summary(DUPLICATE)


def _ids_by_kind(records: Sequence[NewRecord]) -> dict[str, list[str]]:
    """Delivery ids for the log, by what they are: emails, emails to fetch, calls with nothing to log."""
    kinds: dict[str, list[str]] = {}
    for record in records:
        payload = record.payload
        kind = "fetch accepted" if payload and FETCH in payload else "email accepted" if payload else "call recorded"
        kinds.setdefault(kind, []).append(record.delivery.id)
    return kinds


def enqueue(services: Services, delivery: Delivery) -> None:
    services.queue.enqueue(delivery.id)
    services.store.mark_enqueued(delivery.id)


def queue_again(services: Services, delivery: Delivery, **changes: Any) -> Delivery:
    """Move a dead or unmatched delivery back to queued and enqueue it; undone if the enqueue fails."""
    old = services.store.transition(delivery.id, QUEUED, allowed_from=(delivery.status,), retryFrom=now_ms(), **changes)
    if old is None:
        raise Conflict("the delivery changed meanwhile; try again")
    try:
        enqueue(services, delivery)
    except redis.RedisError:
        try:
            services.store.transition(delivery.id, delivery.status, allowed_from=(QUEUED,), reason=delivery.reason)
        except redis.RedisError:
            log.warning("could not undo an unqueued replay", extra={"delivery_id": delivery.id})
        raise
    return services.store.get(delivery.id) or delivery


def is_spam_ignored(delivery: Delivery) -> bool:
    """Ignored as spam: kept with its body so that an operator who finds it is not can log it."""
    return delivery.status == IGNORED and (delivery.reason or "").startswith(SPAM_PREFIX)


def replay_delivery(services: Services, delivery_id: str) -> Delivery:
    """Queue a dead delivery (or one ignored as spam, with its prospect) again; its retry window starts anew."""
    delivery = services.store.get(delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    spam = is_spam_ignored(delivery)
    if spam and not delivery.prospectId:
        raise Conflict("this email was ignored as spam before a prospect was found for it: resolve it with one")
    if delivery.status != DEAD and not spam:
        raise Conflict(f"only dead deliveries (or ones ignored as spam) can be replayed; this one is {delivery.status}")
    if services.store.payload(delivery_id) is None:
        raise Conflict("the delivery has no payload left to send")
    # An operator judged a spam email is not spam: its reason no longer holds.
    return queue_again(services, delivery, **({"reason": None} if spam else {}))


def check_prospect_known(services: Services, prospect_id: str) -> None:
    """Resolving to a prospect that neither the directory nor Knock knows queues an email that can only
    fail: Conflict when Knock answers that it has no such prospect, UpstreamUnavailable when Knock
    cannot say. The directory's word is enough, so Knock is asked only about other ids."""
    if services.directory.get_prospect(prospect_id):
        return
    try:
        services.knock.get_prospect(prospect_id)
    except KnockRejected as error:
        if error.status == 404:
            raise Conflict(
                f"Knock has no prospect {prospect_id!r} and the directory does not know it: nothing was queued"
            ) from error
        raise Conflict(f"Knock refused to look up prospect {prospect_id!r} ({error}): nothing was queued") from error
    except KnockTransientError as error:
        raise UpstreamUnavailable(
            f"could not ask Knock about prospect {prospect_id!r} ({error}): nothing was queued; try again"
        ) from error


def resolve_delivery(
    services: Services, delivery_id: str, prospect_id: str, agent_username: str | None, *, check_prospect: bool = True
) -> Delivery:
    """Give an unmatched delivery its prospect (and agent) and queue it; with `check_prospect`, only
    a prospect the directory or Knock knows (see check_prospect_known)."""
    store = services.store
    delivery = store.get(delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    if delivery.status != UNMATCHED and not is_spam_ignored(delivery):
        raise Conflict(
            f"only unmatched deliveries (or ones ignored as spam) can be resolved; this one is {delivery.status}"
        )
    payload = store.payload(delivery_id)
    if payload is None:
        raise Conflict("the delivery has no payload left to send")
    if check_prospect:
        check_prospect_known(services, prospect_id)
    holder = store.claim(delivery.messageId, prospect_id, delivery_id)
    if holder is not None:
        raise Conflict(f"this email is already logged for prospect {prospect_id!r} as delivery {holder}")
    agent = agent_username
    if agent is None and "agent" not in payload:
        record = services.directory.get_prospect(prospect_id)
        agent = record.get("agentUsername") if record else None
    if agent:
        payload["agent"] = {"username": agent}
    store.assign_prospect(delivery_id, prospect_id)
    return queue_again(
        services,
        delivery,
        prospectId=prospect_id,
        agentUsername=agent or delivery.agentUsername,
        payload=payload,
        reason=None,
    )


def _unrouted(item: Ignored | PendingFetch, provider: str, status: str, received_at: datetime) -> Delivery:
    """A record for a call that is not (yet) an email to route: ignored, or to be fetched."""
    return Delivery(
        id=new_delivery_id(),
        status=status,
        type="",
        messageId=item.message_id or "",
        provider=provider,
        subject=item.subject[:MAX_SUBJECT_CHARS],
        sentTime="",
        receivedAt=int(received_at.timestamp() * 1000),
        reason=item.reason if isinstance(item, Ignored) else None,
    )


def complete_fetch(services: Services, delivery: Delivery, fetch: dict[str, Any]) -> list[str]:
    """The worker's step: fetch the email a PendingFetch names and accept it; the ids it was logged as.

    Raises ProviderUnavailable to be retried later, MalformedPayload when there is nothing to log.
    Accepting twice (a worker dying before recording this step) is harmless: the Message-ID
    de-duplicates the second time.
    """
    from relay.providers import FETCHERS

    fetcher = FETCHERS.get(str(fetch.get("kind")))
    if fetcher is None:
        raise MalformedPayload(f"no fetcher for {fetch.get('kind')!r}")
    email = fetcher(dict(fetch.get("spec") or {}), services.settings)
    received = datetime.fromtimestamp(delivery.receivedAt / 1000, tz=UTC)
    intake = accept_email(services, email, delivery.provider, received_at=received)
    return [d["id"] for d in intake.deliveries]
