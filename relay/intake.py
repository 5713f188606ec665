"""From a normalised email to stored, de-duplicated, queued deliveries."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from relay.deliveries import (
    DEAD,
    DUPLICATE,
    IGNORED,
    QUEUED,
    UNMATCHED,
    Delivery,
    new_delivery_id,
    now_ms,
)
from relay.errors import Conflict, MalformedPayload, NotFound
from relay.forwarding import FETCH
from relay.knock.schema import remote_images, render_log_email, validate_log_email
from relay.message import Email, Ignored, PendingFetch
from relay.routing import Target, route_email
from relay.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Intake:
    """What a webhook answers: an overall status and one summary per delivery."""

    deliveries: tuple[dict[str, Any], ...]

    @property
    def status(self) -> str:
        statuses = [d["status"] for d in self.deliveries]
        for preferred in (QUEUED, UNMATCHED, IGNORED):
            if preferred in statuses:
                return preferred
        return statuses[0] if statuses else IGNORED

    def body(self) -> dict[str, Any]:
        return {"status": self.status, "deliveries": list(self.deliveries)}


def accept_email(services: Services, email: Email, provider: str, received_at: datetime | None = None) -> Intake:
    """Route the email, store one delivery per prospect (or one unmatched/ignored) and queue what can go."""
    received_at = received_at or datetime.now(UTC)
    received_ms = int(received_at.timestamp() * 1000)
    view = services.directory.view_for(email, services.rules.reply_tag_prefix)
    route = route_email(email, services.rules, view)
    targets = route.targets or (Target(None),)
    summaries = []
    for target in targets:
        payload = render_log_email(email, route.message_type, target.agent_username, received_at)
        problems = validate_log_email(payload, agent_pending=target.agent_username is None)
        if problems:
            raise MalformedPayload("email cannot be mapped to a Knock body", details=problems)
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
            receivedAt=received_ms,
            prospectId=target.prospect_id,
            agentUsername=target.agent_username,
            reason=reason,
            remoteImages=remote_images(payload["body"]),
            truncated=list(email.truncated),
            senderAuth=email.sender_auth.describe(),
            sender=email.sender,
            recipients=list(email.recipients),
            prospectFoundBy=target.prospect_found_by or None,
            agentFoundBy=target.agent_found_by or None,
        )
        summaries.append(store_and_queue(services, delivery, payload))
    intake = Intake(tuple(summaries))
    log.info(
        "email accepted",
        extra={
            "provider": provider,
            "status": intake.status,
            "deliveries": [d["id"] for d in summaries],
        },
    )
    return intake


def store_and_queue(
    services: Services, delivery: Delivery, payload: dict[str, Any], *, claim: bool = True
) -> dict[str, Any]:
    """Store the delivery (unless `claim` finds the email already logged for its prospect) and, when it
    is to be sent, its queue message with it, in one Redis step: both are written or neither is, so a
    failure leaves nothing behind and the provider's retry is new."""
    write = services.queue.write_for(delivery.id) if delivery.status == QUEUED else None
    existing = services.store.create(delivery, payload, claim=claim, enqueue=write)
    if existing is not None:
        if existing.status == QUEUED and not existing.enqueued:
            # Stored by an earlier version that queued in a second step, which never confirmed.
            enqueue(services, existing)
        return existing.summary(DUPLICATE)
    return delivery.summary()


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
            services.store.transition(delivery.id, delivery.status, allowed_from=(QUEUED,))
        except redis.RedisError:
            log.warning("could not undo an unqueued replay", extra={"delivery_id": delivery.id})
        raise
    return services.store.get(delivery.id) or delivery


def replay_delivery(services: Services, delivery_id: str) -> Delivery:
    """Queue a dead delivery again; its retry window starts anew."""
    delivery = services.store.get(delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    if delivery.status != DEAD:
        raise Conflict(f"only dead deliveries can be replayed; this one is {delivery.status}")
    if services.store.payload(delivery_id) is None:
        raise Conflict("the delivery has no payload left to send")
    return queue_again(services, delivery)


def replay_dead(services: Services, ids: Iterable[str] | None = None) -> list[str]:
    """Queue every dead delivery again (or those of `ids`, e.g. wrapped in a progress bar); the ids queued."""
    replayed = []
    for delivery_id in services.store.ids_with_status(DEAD) if ids is None else ids:
        try:
            replay_delivery(services, delivery_id)
        except (NotFound, Conflict):
            continue
        replayed.append(delivery_id)
    return replayed


def resolve_delivery(services: Services, delivery_id: str, prospect_id: str, agent_username: str | None) -> Delivery:
    """Give an unmatched delivery its prospect (and agent) and queue it."""
    store = services.store
    delivery = store.get(delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    if delivery.status != UNMATCHED:
        raise Conflict(f"only unmatched deliveries can be resolved; this one is {delivery.status}")
    payload = store.payload(delivery_id)
    if payload is None:
        raise Conflict("the delivery has no payload left to send")
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


def _unrouted(item: Ignored | PendingFetch, provider: str, status: str, received_at: datetime | None) -> Delivery:
    """A record for a call that is not (yet) an email to route: ignored, or to be fetched."""
    return Delivery(
        id=new_delivery_id(),
        status=status,
        type="",
        messageId=item.message_id or "",
        provider=provider,
        subject=item.subject,
        sentTime="",
        receivedAt=int((received_at or datetime.now(UTC)).timestamp() * 1000),
        reason=item.reason if isinstance(item, Ignored) else None,
    )


def record_ignored(services: Services, item: Ignored, provider: str, received_at: datetime | None = None) -> Intake:
    """Keep a record of a call that carries nothing to log, so operators can see it arrived."""
    delivery = _unrouted(item, provider, UNMATCHED if item.unmatched else IGNORED, received_at)
    services.store.create(delivery, {}, claim=False)
    return Intake((delivery.summary(),))


def accept_pending_fetch(
    services: Services, item: PendingFetch, provider: str, received_at: datetime | None = None
) -> Intake:
    """Store what to fetch as a queued delivery of its own; the worker fetches it and logs the email."""
    delivery = _unrouted(item, provider, QUEUED, received_at)
    payload = {FETCH: {"kind": item.kind, "spec": item.spec}}
    summary = store_and_queue(services, delivery, payload, claim=False)
    log.info("fetch accepted", extra={"provider": provider, "delivery_id": delivery.id, "kind": item.kind})
    return Intake((summary,))


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
