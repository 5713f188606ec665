"""Broker setup and the forward actor: Dramatiq's Redis broker keeps the queue durable."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.middleware import Retries, TimeLimit

from relay.config import Settings
from relay.forwarding import Forwarder, forward_once

QUEUE_NAME = "deliveries"
ACTOR_NAME = "forward_delivery"
NAMESPACE = "relay-queue"

# Each broker command has this chance (in a million) to move a dead worker's
# unacknowledged messages back to the queue. Idle workers poll about once a
# second, so one in ten keeps a SIGKILLed worker's delivery from waiting much
# longer than the heartbeat timeout.
MAINTENANCE_CHANCE = MAINTENANCE_SCALE // 10

# Delivery retries are decided by the forwarder (dramatiq.Retry with a delay);
# these bounds only pace unexpected errors such as a Redis blip in the worker.
UNEXPECTED_ERROR_MIN_BACKOFF_MS = 5_000
UNEXPECTED_ERROR_MAX_BACKOFF_MS = 300_000


def build_broker(settings: Settings) -> RedisBroker:
    broker = RedisBroker(
        # Dramatiq decodes message bytes itself, so this client does not decode; the timeouts
        # let a webhook answer 503 rather than hang when Redis stops answering.
        client=redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10),
        namespace=NAMESPACE,
        heartbeat_timeout=int(settings.worker_heartbeat_timeout_seconds * 1000),
        maintenance_chance=MAINTENANCE_CHANCE,
        middleware=[
            TimeLimit(time_limit=int((settings.knock_timeout_seconds * 3 + 60) * 1000)),
            Retries(
                max_retries=None,  # type: ignore[arg-type]
                min_backoff=UNEXPECTED_ERROR_MIN_BACKOFF_MS,
                max_backoff=UNEXPECTED_ERROR_MAX_BACKOFF_MS,
            ),
        ],
    )
    broker.declare_queue(QUEUE_NAME)
    return broker


class DeliveryQueue:
    """What the web side needs of the queue: put a delivery id on it."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    def enqueue(self, delivery_id: str) -> None:
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=QUEUE_NAME,
            actor_name=ACTOR_NAME,
            args=(delivery_id,),
            kwargs={},
            options={},
        )
        self.broker.enqueue(message)


def register_forward_actor(broker: RedisBroker, forwarder: Forwarder) -> dramatiq.Actor:  # type: ignore[type-arg]
    def forward_delivery(delivery_id: str) -> None:
        forward_once(forwarder, delivery_id)

    return dramatiq.actor(  # type: ignore[call-overload]
        forward_delivery,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=QUEUE_NAME,
        max_retries=None,
    )
