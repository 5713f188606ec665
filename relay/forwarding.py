"""The worker's side: forward one queued delivery to Knock and record what happened."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from relay.circuit import KnockCircuit
from relay.directory import Directory
from relay.errors import MalformedPayload, NotReplicated, ProviderUnavailable
from relay.knock.client import KnockClient, KnockRejected, KnockTransientError
from relay.knock.schema import validate_log_email
from relay.metrics import (
    DELIVERIES,
    DELIVERY_LATENCY,
    KNOCK_CIRCUIT_OPENED,
    KNOCK_LOOKUPS,
    KNOCK_RESPONSES,
    OUTCOME_REPLICATION_WAITS,
    POSSIBLE_DUPLICATES,
    status_class,
)
from relay.outbound import deadline
from relay.providers.fetch import FETCH_DEADLINE_SECONDS
from relay.store import (
    DEAD,
    DELIVERED,
    FETCHED,
    PENDING,
    RETRYING,
    UNMATCHED,
    Delivery,
    DeliveryStore,
    now_ms,
)

log = logging.getLogger(__name__)

#: Payload key of a delivery that stands for an email still to be fetched (see intake.accept_items).
FETCH = "fetch"
#: Seconds the worker gives one pending fetch in all, however many calls its provider needs (Brevo
#: lists, then reads: two calls of at most FETCH_DEADLINE_SECONDS each).
FETCH_STEP_SECONDS = 2 * FETCH_DEADLINE_SECONDS
#: Knock's deadlines one attempt may spend: the look at its events for an earlier attempt (no page
#: asked after one deadline, so two at most), the agent lookup, then the log call.
KNOCK_CALLS_PER_ATTEMPT = 4
#: What the delivery lock outlasts the network time of an attempt by: the Redis steps around it.
LOCK_MARGIN_SECONDS = 5.0


def delivery_lock_seconds(knock_deadline: float, fetch_step: float = FETCH_STEP_SECONDS) -> float:
    """How long the worker's lock on a delivery lasts: longer than an attempt can spend on the
    network (each Knock call ends by its deadline, a fetch by the step's), so the lock never lapses
    while the attempt is in flight. While it holds, a second message for the delivery waits for it,
    and the retry scheduler's safety net, which skips locked deliveries, never queues it again."""
    return max(KNOCK_CALLS_PER_ATTEMPT * knock_deadline, fetch_step) + LOCK_MARGIN_SECONDS


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


@dataclass
class HeldLock:
    """The worker's lock on the delivery it is sending, released with the outcome or at the end."""

    key: str
    token: str
    released: bool = False


class Forwarder:
    """Sends a delivery's Knock body; resolves a pending agent first (Knock, then the default).

    Retries are scheduled in Redis (`DeliveryStore.schedule`) and queued again by the worker's
    `RetryScheduler` when due, not held in the worker's memory, so a Redis outage or a worker
    restart forgets none. Once Knock has answered, the outcome is written until Redis takes it:
    a failed write is retried, never the send.
    """

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
        redis_wait: Callable[[int], None] | None = None,
        complete_fetch: Callable[[Delivery, dict[str, Any]], list[str]] | None = None,
        fetch_step_seconds: float = FETCH_STEP_SECONDS,
        circuit: KnockCircuit | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.knock = knock
        self.policy = policy
        self.default_agent = default_agent
        self.acquire_rate_slot = acquire_rate_slot
        self.lock_seconds = lock_seconds
        self.redis_wait = redis_wait or wait_for_redis
        self.complete_fetch = complete_fetch
        self.fetch_step_seconds = fetch_step_seconds
        self.circuit = circuit

    def forward(self, delivery_id: str) -> str | None:
        """Try once; the resulting status (RETRYING when a retry was scheduled)."""
        lock = HeldLock(self.store.lock_key(delivery_id), uuid.uuid4().hex)
        # Two messages for one delivery (a re-enqueue after a lost acknowledgement) must not both send.
        probe_ms = self.circuit.probe_ms if self.circuit else 30_000
        held_for, delivery, payload, knock = self.store.lock_and_read(
            delivery_id, lock.token, int(self.lock_seconds * 1000), probe_ms
        )
        if knock.isdigit():  # Knock is down: nothing was locked or read; it waits for the probe
            self.store.schedule(delivery_id, self.circuit.wait_until(int(knock)) if self.circuit else int(knock))
            return None
        if held_for is not None:
            # Held by a worker sending it now, or by one that died while sending: try when it lapses.
            self.store.schedule(delivery_id, now_ms() + held_for + 500)
            return None
        try:
            return self._forward_locked(delivery, payload, lock, knock)
        finally:
            if not lock.released:
                try:
                    self.store.release_lock(lock.key, lock.token)
                except redis.RedisError:
                    pass  # the lock lapses by itself

    def _forward_locked(
        self, delivery: Delivery | None, payload: dict[str, Any] | None, lock: HeldLock, knock: str = "send"
    ) -> str | None:
        """`knock` is what the Knock circuit allows (see Locked)."""
        if delivery is None or delivery.status not in PENDING:
            return delivery.status if delivery else None
        if payload is not None and FETCH in payload:
            return self._fetch(delivery, payload[FETCH])
        if payload is None or not delivery.prospectId:
            return self._give_up(delivery, "nothing to send: payload or prospect missing")

        if delivery.inFlight is not None:
            # The attempt before this one was sent (or about to be) and its outcome never recorded,
            # or it failed in a way that may come after Knock stored it: Knock may hold the email.
            try:
                if self._found_in_knock(delivery, payload, lock):
                    return DELIVERED
            except KnockTransientError as exc:  # Knock cannot say now: ask again later, send nothing
                self._knock_failed(exc)
                error = f"looking in Knock for an earlier attempt: {exc.message}"
                return self._retry_later(delivery, error, exc.retry_after, maybe_stored=True)
        if "agent" not in payload:
            try:
                agent, found_by = self._resolve_agent(delivery.prospectId)
            except KnockTransientError as exc:
                self._knock_failed(exc)
                return self._retry_later(delivery, f"agent lookup: {exc.message}", exc.retry_after)
            if agent is None:
                self._transition(delivery.id, UNMATCHED, allowed_from=PENDING, reason="no agent")
                log.info("delivery unmatched: no agent", extra={"delivery_id": delivery.id})
                DELIVERIES.labels(UNMATCHED).inc()
                return UNMATCHED
            payload["agent"] = {"username": agent}
            self.store.update_fields(delivery.id, agentUsername=agent, agentFoundBy=found_by, payload=payload)

        problems = validate_log_email(payload)
        if problems:
            return self._give_up(delivery, f"invalid Knock body: {problems}")

        self.acquire_rate_slot()
        attempt = delivery.attempts + 1
        self.store.begin_attempt(delivery.id, attempt)  # nothing is sent unless this is stored
        started = time.monotonic()
        try:
            communication_id = self.knock.log_email(delivery.prospectId, payload)
        except KnockTransientError as exc:
            self._knock_failed(exc)
            call = self._log_attempt(delivery, attempt, exc.status, started, exc.message)
            error, retry_after = exc.message, exc.retry_after
            # A timeout, a broken connection or a 5xx (a proxy's, say) may come after Knock stored the
            # email: the attempt stays marked in flight, so the next one looks in Knock first.
            maybe_stored = exc.status is None or exc.status >= 500
            return self._record(
                lambda: self._retry_later(delivery, error, retry_after, attempt, call, maybe_stored=maybe_stored)
            )
        except KnockRejected as exc:
            call = self._log_attempt(delivery, attempt, exc.status, started, exc.message)
            rejection = exc.message
            return self._record(lambda: self._give_up(delivery, rejection, call))
        call = self._log_attempt(delivery, attempt, 200, started, communication_id or None)
        if knock != "send":  # a success after failures resets them, a probe's closes the circuit
            self._knock_answered()
        self._record(
            lambda: self._transition(
                delivery.id,
                DELIVERED,
                allowed_from=PENDING,
                drop_payload=True,
                attempt=call,
                release_lock=(lock.key, lock.token),
                communicationId=communication_id or "",
                deliveredAt=now_ms(),
                lastError=None,
                inFlight=None,
            )
        )
        lock.released = True
        DELIVERIES.labels(DELIVERED).inc()
        DELIVERY_LATENCY.observe(max(0.0, (now_ms() - delivery.receivedAt) / 1000))
        log.info("delivered to Knock", extra={"delivery_id": delivery.id})
        return DELIVERED

    def _fetch(self, delivery: Delivery, fetch: dict[str, Any]) -> str:
        """Fetch the email a webhook named (e.g. Mailgun's stored message) and log it as its own deliveries."""
        if self.complete_fetch is None:
            return self._give_up(delivery, "this process cannot fetch messages")
        self.store.update_fields(delivery.id, attempts=delivery.attempts + 1)
        try:
            with deadline(self.fetch_step_seconds):  # shorter than the lock: see delivery_lock_seconds
                created = self.complete_fetch(delivery, fetch)
        except ProviderUnavailable as exc:
            log.info("fetch failed transiently", extra={"delivery_id": delivery.id, "error": exc.message})
            return self._retry_later(delivery, exc.message, None, delivery.attempts + 1)
        except MalformedPayload as exc:
            return self._give_up(delivery, exc.message)
        self._transition(
            delivery.id, FETCHED, allowed_from=PENDING, drop_payload=True, lastError=None,
            reason="logged as " + (", ".join(created) or "nothing"),
        )  # fmt: skip
        log.info("fetched and accepted", extra={"delivery_id": delivery.id, "deliveries": created})
        DELIVERIES.labels(FETCHED).inc()
        return FETCHED

    def _record(self, write: Callable[[], T]) -> T:
        """Run a write that records what Knock said, again and again until Redis takes it."""
        failures = 0
        while True:
            try:
                return write()
            except redis.RedisError as exc:
                failures += 1
                log.warning(
                    "recording Knock's answer failed; retrying the write, not the send",
                    extra={"error": type(exc).__name__, "failures": failures},
                )
                self.redis_wait(failures)

    def _transition(self, delivery_id: str, status: str, **changes: Any) -> None:
        """`store.transition`; when RELAY_REDIS_MIN_REPLICAS replicas did not confirm it in time, the
        change stands on the primary and this waits until they do (a failover meanwhile could lose
        it): the delivery is not done with until its outcome would survive one."""
        try:
            self.store.transition(delivery_id, status, **changes)
        except NotReplicated as unconfirmed:
            self._await_replicas(delivery_id, unconfirmed.message)

    def _await_replicas(self, delivery_id: str, reason: str) -> None:
        failures = 0
        while True:
            failures += 1
            OUTCOME_REPLICATION_WAITS.inc()
            log.warning(
                "outcome not yet on enough Redis replicas; waiting",
                extra={"delivery_id": delivery_id, "error": reason, "failures": failures},
            )
            self.redis_wait(failures)
            try:
                self.store.replication_barrier(self.store.outcome_replicas)
                return
            except NotReplicated as unconfirmed:
                reason = unconfirmed.message
            except redis.RedisError as exc:
                reason = type(exc).__name__

    def _found_in_knock(self, delivery: Delivery, payload: dict[str, Any], lock: HeldLock) -> bool:
        """Look for the email among the prospect's events in Knock; when it is there, record the
        delivery delivered (nothing is sent again). When Knock will not list them (a 4xx, a card
        longer than the lookup reads), the email is sent again and flagged possibleDuplicate;
        KnockTransientError when Knock cannot answer now."""
        assert delivery.prospectId
        try:
            communication_id = self.knock.find_logged_email(delivery.prospectId, payload)
        except KnockRejected as exc:
            KNOCK_LOOKUPS.labels("unreadable").inc()
            if not delivery.possibleDuplicate:
                self.store.mark_possible_duplicate(delivery.id)
                POSSIBLE_DUPLICATES.inc()
            log.warning(
                "possible duplicate: an earlier attempt may have reached Knock and its events could not be read",
                extra={"delivery_id": delivery.id, "attempt": delivery.inFlight, "error": exc.message},
            )
            return False
        if communication_id is None:
            KNOCK_LOOKUPS.labels("absent").inc()
            log.info("the earlier attempt did not reach Knock: sending", extra={"delivery_id": delivery.id})
            return False
        KNOCK_LOOKUPS.labels("found").inc()
        self._transition(
            delivery.id,
            DELIVERED,
            allowed_from=PENDING,
            drop_payload=True,
            release_lock=(lock.key, lock.token),
            communicationId=communication_id,
            deliveredAt=now_ms(),
            lastError=None,
            inFlight=None,
            reason="found among the prospect's events in Knock: the earlier attempt had logged it",
        )
        lock.released = True
        DELIVERIES.labels(DELIVERED).inc()
        log.info("already in Knock: recorded delivered, not sent again", extra={"delivery_id": delivery.id})
        return True

    def _knock_failed(self, error: KnockTransientError) -> None:
        """An outage's failure (5xx, timeout, no connection; 429 is pacing) counts toward the circuit."""
        if self.circuit is None or (error.status is not None and error.status < 500):
            return
        try:
            if self.circuit.failed():
                KNOCK_CIRCUIT_OPENED.inc()
                log.warning(
                    "Knock circuit opened: sending stops until a probe succeeds", extra={"error": error.message}
                )
        except redis.RedisError as exc:  # the delivery's own retry is what matters
            log.warning("Knock circuit not updated", extra={"error": type(exc).__name__})

    def _knock_answered(self) -> None:
        if self.circuit is None:
            return
        try:
            if self.circuit.succeeded():
                log.info("Knock circuit closed: a probe succeeded, waiting deliveries drain")
        except redis.RedisError as exc:
            log.warning("Knock circuit not updated", extra={"error": type(exc).__name__})

    def _log_attempt(
        self, delivery: Delivery, attempt: int, status: int | None, started: float, answer: str | None
    ) -> dict[str, Any]:
        """Log the call and return its timeline entry, written together with the outcome."""
        latency_ms = log_attempt(delivery, attempt, status, started)
        return self.store.attempt_entry(attempt, status, latency_ms, answer)

    def _resolve_agent(self, prospect_id: str) -> tuple[str | None, str]:
        """The agent Knock has for the prospect (cached), else the default; and which it was."""
        cached = self.directory.known_knock_agent(prospect_id)
        if cached:
            return cached, "the prospect's agent in Knock"
        try:
            agent = self.knock.agent_of_prospect(prospect_id)
        except KnockRejected:
            agent = None
        if agent:
            self.directory.remember_knock_agent(prospect_id, agent)
            return agent, "the prospect's agent in Knock"
        return self.default_agent, "KNOCK_DEFAULT_AGENT_USERNAME"

    def _give_up(
        self, delivery: Delivery, error: str, call: dict[str, Any] | None = None, *, in_flight: int | None = None
    ) -> str:
        """Dead; `in_flight` keeps the last attempt marked (Knock may hold it: a replay looks first)."""
        self._transition(delivery.id, DEAD, allowed_from=PENDING, attempt=call, lastError=error, inFlight=in_flight)
        DELIVERIES.labels(DEAD).inc()
        log.warning("delivery dead", extra={"delivery_id": delivery.id})
        return DEAD

    def _retry_later(
        self,
        delivery: Delivery,
        error: str,
        retry_after: float | None,
        attempts: int | None = None,
        call: dict[str, Any] | None = None,
        *,
        maybe_stored: bool = False,
    ) -> str:
        """Schedule the next try, or mark the delivery dead once it is older than the maximum age.
        `call` is the Knock call that led here, for the delivery's timeline; `maybe_stored` keeps the
        attempt marked in flight (Knock may hold the email)."""
        attempts = attempts if attempts is not None else delivery.attempts
        started_ms = delivery.retryFrom or delivery.receivedAt
        remaining = self.policy.remaining(started_ms)
        if remaining <= 0 and self.circuit is not None:
            remaining += self.circuit.open_seconds_since(started_ms)  # Knock's outages do not count
        if remaining <= 0:
            return self._give_up(delivery, error, call, in_flight=attempts if maybe_stored else None)
        delay = min(self.policy.delay_for(max(1, attempts), retry_after), remaining)
        # Never sooner than Retry-After, even when the maximum age comes first: then it goes dead later.
        if retry_after is not None:
            delay = max(delay, retry_after)
        if maybe_stored:  # Knock may still be storing what it stopped answering: look once it is done
            delay = max(delay, self.knock.timeout)
        self._transition(
            delivery.id,
            RETRYING,
            allowed_from=PENDING,
            lastError=error,
            inFlight=attempts if maybe_stored else None,
            schedule_at=now_ms() + max(1, int(delay * 1000)),
            attempt=call,
        )
        DELIVERIES.labels(RETRYING).inc()
        return RETRYING


T = TypeVar("T")


def log_attempt(delivery: Delivery, attempt: int, status: int | None, started: float) -> float:
    """One line and one count per call to Knock: its status (None: timeout or no connection) and latency."""
    KNOCK_RESPONSES.labels(status_class(status)).inc()
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    log.info(
        "Knock answered",
        extra={"delivery_id": delivery.id, "attempt": attempt, "knock_status": status, "knock_ms": latency_ms},
    )
    return latency_ms


def wait_for_redis(failures: int) -> None:
    """Back off while Redis is away: 0.5 s, doubling, at most 10 s."""
    time.sleep(min(10.0, 0.5 * 2 ** min(failures - 1, 5)))


def forward_once(forwarder: Forwarder, delivery_id: str) -> str | None:
    """Actor body. A Redis error before anything was sent is waited out and the attempt made again:
    the message stays with this worker rather than going back through the broker mid-outage."""
    failures = 0
    while True:
        try:
            return forwarder.forward(delivery_id)
        except redis.RedisError as exc:
            failures += 1
            log.warning(
                "redis unavailable while forwarding; waiting",
                extra={"delivery_id": delivery_id, "error": type(exc).__name__, "failures": failures},
            )
            forwarder.redis_wait(failures)


__all__ = ["Forwarder", "RetryPolicy", "forward_once", "wait_for_redis"]
