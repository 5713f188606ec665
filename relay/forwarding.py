"""The worker's side: forward one queued delivery to Knock and record what happened."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from dramatiq import Retry

from relay.deliveries import (
    DEAD,
    DELIVERED,
    PENDING,
    RETRYING,
    UNMATCHED,
    Delivery,
    DeliveryStore,
    now_ms,
)
from relay.directory import Directory
from relay.knock.client import KnockClient, KnockRejected, KnockTransientError
from relay.knock.schema import validate_log_email

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff between bounds, honouring Retry-After, until a maximum age."""

    min_backoff: float = 15.0
    max_backoff: float = 3600.0
    max_age: float = 259200.0

    def delay_for(
        self,
        attempt: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds before attempt `attempt + 1`; `attempt` counts from 1."""
        ceiling = min(self.max_backoff, self.min_backoff * 2 ** max(0, attempt - 1))
        # "Equal jitter": never below half the step, so retries keep spreading out.
        delay = ceiling / 2 + rand() * ceiling / 2
        delay = max(self.min_backoff, delay)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def remaining(self, started_ms: int, now: int | None = None) -> float:
        """Seconds left before a delivery that started at `started_ms` is given up."""
        return self.max_age - ((now if now is not None else now_ms()) - started_ms) / 1000


class Forwarder:
    """Sends a delivery's Knock body; resolves a pending agent first (Knock, then the default)."""

    def __init__(
        self,
        *,
        store: DeliveryStore,
        directory: Directory,
        knock: KnockClient,
        policy: RetryPolicy,
        default_agent: str | None = None,
        acquire_rate_slot: Callable[[], None] = lambda: None,
        lock_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.directory = directory
        self.knock = knock
        self.policy = policy
        self.default_agent = default_agent
        self.acquire_rate_slot = acquire_rate_slot
        self.lock_seconds = lock_seconds

    def forward(self, delivery_id: str) -> str | None:
        """Try once; the resulting status, or raise dramatiq.Retry with the delay for the next try."""
        lock_key = f"relay:lock:{delivery_id}"
        token = uuid.uuid4().hex
        # Two messages for one delivery (a re-enqueue after a lost acknowledgement) must not both send.
        if not self.store.redis.set(lock_key, token, nx=True, px=int(self.lock_seconds * 1000)):
            # Held by a worker sending it now, or by one that died while sending: try when it lapses.
            remaining = self.store.redis.pttl(lock_key)
            raise Retry("delivery is being forwarded elsewhere", delay=max(int(remaining), 0) + 500)
        try:
            return self._forward_locked(delivery_id)
        finally:
            if self.store.redis.get(lock_key) == token:
                self.store.redis.delete(lock_key)

    def _forward_locked(self, delivery_id: str) -> str | None:
        delivery = self.store.get(delivery_id)
        if delivery is None or delivery.status not in PENDING:
            return delivery.status if delivery else None
        payload = self.store.payload(delivery_id)
        if payload is None or not delivery.prospectId:
            self._give_up(delivery, "nothing to send: payload or prospect missing")
            return DEAD

        if "agent" not in payload:
            try:
                agent = self._resolve_agent(delivery.prospectId)
            except KnockTransientError as exc:
                self._retry_later(delivery, f"agent lookup: {exc.message}", exc.retry_after)
            if agent is None:
                self.store.transition(delivery.id, UNMATCHED, allowed_from=PENDING, reason="no agent")
                log.info("delivery unmatched: no agent", extra={"delivery_id": delivery.id})
                return UNMATCHED
            payload["agent"] = {"username": agent}
            self.store.update_fields(delivery.id, agentUsername=agent, payload=payload)

        problems = validate_log_email(payload)
        if problems:
            self._give_up(delivery, f"invalid Knock body: {problems}")
            return DEAD

        self.acquire_rate_slot()
        attempts = delivery.attempts + 1
        self.store.update_fields(delivery.id, attempts=attempts)
        started = time.monotonic()
        try:
            communication_id = self.knock.log_email(delivery.prospectId, payload)
        except KnockTransientError as exc:
            log.info(
                "Knock answered transiently",
                extra={"delivery_id": delivery.id, "status": exc.status},
            )
            self._retry_later(delivery, exc.message, exc.retry_after, attempts)
        except KnockRejected as exc:
            self._give_up(delivery, exc.message)
            return DEAD
        self.store.transition(
            delivery.id,
            DELIVERED,
            allowed_from=PENDING,
            drop_payload=True,
            communicationId=communication_id or "",
            deliveredAt=now_ms(),
            lastError=None,
        )
        log.info(
            "delivered to Knock",
            extra={
                "delivery_id": delivery.id,
                "elapsed_ms": int((time.monotonic() - started) * 1000),
            },
        )
        return DELIVERED

    def _resolve_agent(self, prospect_id: str) -> str | None:
        cached = self.directory.known_knock_agent(prospect_id)
        if cached:
            return cached
        try:
            agent = self.knock.agent_of_prospect(prospect_id)
        except KnockRejected:
            agent = None
        if agent:
            self.directory.remember_knock_agent(prospect_id, agent)
            return agent
        return self.default_agent

    def _give_up(self, delivery: Delivery, error: str) -> None:
        self.store.transition(delivery.id, DEAD, allowed_from=PENDING, lastError=error)
        log.warning("delivery dead", extra={"delivery_id": delivery.id})

    def _retry_later(
        self,
        delivery: Delivery,
        error: str,
        retry_after: float | None,
        attempts: int | None = None,
    ) -> NoReturn:
        """Schedule the next try, or mark the delivery dead once it is older than the maximum age."""
        attempts = attempts if attempts is not None else delivery.attempts
        remaining = self.policy.remaining(delivery.retryFrom or delivery.receivedAt)
        if remaining <= 0:
            self._give_up(delivery, error)
            raise _GaveUp()
        delay = min(self.policy.delay_for(max(1, attempts), retry_after), remaining)
        self.store.transition(delivery.id, RETRYING, allowed_from=PENDING, lastError=error)
        raise Retry(error, delay=max(1, int(delay * 1000)))


class _GaveUp(Exception):
    """Internal: the delivery went dead while retrying; the actor treats it as done."""


def forward_once(forwarder: Forwarder, delivery_id: str) -> str | None:
    """Actor body: `Retry` reaches Dramatiq (which re-enqueues with delay); giving up is done."""
    try:
        return forwarder.forward(delivery_id)
    except _GaveUp:
        return DEAD


__all__ = ["Forwarder", "RetryPolicy", "forward_once"]
