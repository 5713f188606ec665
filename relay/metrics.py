"""Prometheus metrics: counters where things happen, gauges read from Redis when scraped.

The web tier runs several gunicorn processes, so its counters use prometheus_client's
multiprocess mode: `PROMETHEUS_MULTIPROC_DIR` names a folder the processes write to (the
gunicorn settings create and clean one when it is not set) and `/metrics` adds them up. The
worker is one process and serves its own `/metrics` on its HTTP port.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from relay.circuit import STATE_KEY as CIRCUIT_KEY
from relay.store import DEAD, POSSIBLE_DUPLICATES_KEY, PREFIX, QUEUED, RETRYING, UNMATCHED

WEBHOOKS = Counter("relay_webhooks_total", "Webhook calls by provider and outcome.", ["provider", "outcome"])
DELIVERIES = Counter("relay_deliveries_total", "Forwarding steps by outcome.", ["outcome"])
KNOCK_RESPONSES = Counter(
    "relay_knock_responses_total", "Knock's answers to logged emails by status class.", ["status_class"]
)
REPLICATION_TIMEOUTS = Counter(
    "relay_replication_timeouts_total",
    "Webhooks answered 503 because their records were not on RELAY_REDIS_MIN_REPLICAS replicas in time.",
)
OUTCOME_REPLICATION_WAITS = Counter(
    "relay_outcome_replication_waits_total",
    "Times the worker waited for a delivery's recorded outcome to reach RELAY_REDIS_MIN_REPLICAS replicas.",
)
KNOCK_CIRCUIT_OPENED = Counter(
    "relay_knock_circuit_opened_total", "Times Knock failed every call and the workers stopped sending."
)
KNOCK_LOOKUPS = Counter(
    "relay_knock_lookups_total",
    "Looks in Knock's events for an email an interrupted attempt may have logged, by outcome "
    "(found: recorded delivered; absent: sent; unreadable: sent and flagged possibleDuplicate).",
    ["outcome"],
)
POSSIBLE_DUPLICATES = Counter(
    "relay_possible_duplicates_total", "Deliveries sent again after an attempt whose outcome was never recorded."
)
DELIVERY_LATENCY = Histogram(
    "relay_delivery_latency_seconds",
    "From receipt by the relay to Knock's 2xx.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)


def status_class(status: int | None) -> str:
    """`2xx`, `4xx`, `5xx`, or `error` for a timeout or a connection that failed."""
    return f"{status // 100}xx" if status else "error"


@dataclass(frozen=True)
class Backlog:
    """What is waiting and what needs a person (for the gauges and the console)."""

    depth: int
    oldest_age_seconds: float
    retrying: int
    dead: int
    unmatched: int
    possible_duplicates: int
    #: Since when (ms) the Knock circuit has been open (0: not known), None when it is closed.
    knock_circuit_opened_at: int | None = None


def read_backlog(client: redis.Redis, queue_key: str) -> Backlog:
    """One round trip to Redis."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(queue_key)
    pipe.zrange(f"{PREFIX}idx:status:{QUEUED}", 0, 0, withscores=True)
    for status in (RETRYING, DEAD, UNMATCHED):
        pipe.zcard(f"{PREFIX}idx:status:{status}")
    pipe.zcard(POSSIBLE_DUPLICATES_KEY)
    pipe.hmget(CIRCUIT_KEY, "state", "openedAt")
    depth, oldest, retrying, dead, unmatched, doubles, (circuit, opened_at) = pipe.execute()
    age = max(0.0, time.time() - oldest[0][1] / 1000) if oldest else 0.0
    opened = None
    if circuit in ("open", b"open"):
        try:
            opened = int(opened_at)
        except (TypeError, ValueError):
            opened = 0  # open, since a time no one wrote down
    return Backlog(int(depth), age, int(retrying), int(dead), int(unmatched), int(doubles), opened)


class RedisGauges(Collector):
    """What is waiting and what needs a person, read from Redis in one round trip per scrape."""

    def __init__(self, client: redis.Redis, queue_key: str) -> None:
        self.client = client
        self.queue_key = queue_key

    def collect(self) -> Iterator[Metric]:
        try:
            backlog = read_backlog(self.client, self.queue_key)
        except redis.RedisError:
            return  # the scrape still shows the counters; `relay_up`-style alerts see Redis via /readyz
        yield GaugeMetricFamily("relay_queue_depth", "Messages waiting in the delivery queue.", value=backlog.depth)
        yield GaugeMetricFamily(
            "relay_queue_oldest_age_seconds",
            "Age of the oldest delivery waiting to be sent.",
            value=backlog.oldest_age_seconds,
        )
        yield GaugeMetricFamily("relay_deliveries_retrying", "Deliveries waiting for a retry.", value=backlog.retrying)
        yield GaugeMetricFamily("relay_deliveries_dead", "Dead deliveries (kept for replay).", value=backlog.dead)
        yield GaugeMetricFamily(
            "relay_deliveries_unmatched", "Deliveries waiting for a prospect.", value=backlog.unmatched
        )
        yield GaugeMetricFamily(
            "relay_knock_circuit_open",
            "1 while Knock fails every call and the workers only probe it, else 0.",
            value=int(backlog.knock_circuit_opened_at is not None),
        )
        yield GaugeMetricFamily(
            "relay_deliveries_possible_duplicate",
            "Deliveries flagged possibleDuplicate (record lifetime).",
            value=backlog.possible_duplicates,
        )


def exposition(client: redis.Redis, queue_key: str) -> bytes:
    """The text a scrape gets: this process's (or, in multiprocess mode, every process's) counters and the gauges."""
    counters = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)  # type: ignore[no-untyped-call]
    gauges = CollectorRegistry()
    gauges.register(RedisGauges(client, queue_key))
    return generate_latest(counters) + generate_latest(gauges)
