"""Broker setup and the forward actor: Dramatiq's Redis broker keeps the queue durable."""

from __future__ import annotations

import random
import socket
import time

import dramatiq
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.middleware import Retries

from relay.config import Settings
from relay.forwarding import Forwarder, forward_once
from relay.redis_connection import connect
from relay.store import QueueWrite

QUEUE_NAME = "deliveries"
ACTOR_NAME = "forward_delivery"
NAMESPACE = "relay-queue"
#: The Redis list Dramatiq\'s broker keeps the waiting messages of the delivery queue in.
QUEUE_KEY = f"{NAMESPACE}:{QUEUE_NAME}"

# Each broker command has this chance (in a million) to move a dead worker's
# unacknowledged messages back to the queue. Idle workers poll about once a
# second, so one in ten keeps a SIGKILLed worker's delivery from waiting much
# longer than the heartbeat timeout.
MAINTENANCE_CHANCE = MAINTENANCE_SCALE // 10

# Delivery retries are scheduled by the forwarder in Redis, never through Dramatiq's delays
# (held in a worker's memory, and dropped when its connection breaks); these bounds only pace
# unexpected errors, i.e. bugs.
UNEXPECTED_ERROR_MIN_BACKOFF_MS = 5_000
UNEXPECTED_ERROR_MAX_BACKOFF_MS = 300_000

# A worker notices a vanished Redis (network cut, host gone) within about 10 + 3 x 5 seconds.
_KEEPALIVE = {
    option: value
    for option, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, option)
}


#: How long a patient (worker) connection waits for a silent Redis before giving up on a reply.
PATIENT_READ_TIMEOUT_SECONDS = 600


def build_broker(settings: Settings, *, patient: bool = False) -> RedisBroker:
    """The broker. A web process gives up on a silent Redis after seconds (the webhook answers 503);
    a `patient` one (the worker) waits it out: a hung Redis that resumes loses nothing, whereas a
    reply given up on can leave a fetched message stranded with the worker (the retry scheduler's
    sweep queues such messages again)."""
    if patient:
        client = connect(
            settings,
            socket_timeout=PATIENT_READ_TIMEOUT_SECONDS,  # None would mean redis-py's default of 5 s
            socket_connect_timeout=5,
            socket_keepalive=True,
            socket_keepalive_options={getattr(socket, name): value for name, value in _KEEPALIVE.items()},
        )
    else:
        # Dramatiq decodes message bytes itself, so neither client decodes responses.
        client = connect(settings, socket_connect_timeout=2, socket_timeout=10)
    broker = RedisBroker(
        client=client,
        namespace=NAMESPACE,
        heartbeat_timeout=int(settings.worker_heartbeat_timeout_seconds * 1000),
        maintenance_chance=MAINTENANCE_CHANCE,
        middleware=[
            Retries(
                max_retries=None,  # type: ignore[arg-type]
                min_backoff=UNEXPECTED_ERROR_MIN_BACKOFF_MS,
                max_backoff=UNEXPECTED_ERROR_MAX_BACKOFF_MS,
            ),
        ],
    )
    broker.declare_queue(QUEUE_NAME)
    return broker


#: The bits of a UUID that name its version (4) and variant (RFC 4122), and their values.
_UUID4_FIXED_BITS = (0xF000 << 64) | (0xC000 << 48)
_UUID4_FIXED_VALUES = (0x4000 << 64) | (0x8000 << 48)


def random_uuid() -> str:
    """A version 4 UUID from `random` (seeded from the system, and again in every forked process):
    the webhook makes two per email, and `uuid.uuid4` makes a system call (releasing the GIL) each.
    Written as `str(uuid.UUID(int=..., version=4))` writes it, without building the UUID."""
    digits = f"{random.getrandbits(128) & ~_UUID4_FIXED_BITS | _UUID4_FIXED_VALUES:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class DeliveryQueue:
    """What the web side needs of the queue: put a delivery id on it."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    def waiting(self) -> int:
        """Messages waiting in the queue (not yet fetched by any worker)."""
        return int(self.broker.client.llen(QUEUE_KEY))

    def enqueue(self, delivery_id: str) -> None:
        self.broker.enqueue(self._message(delivery_id))

    def write_for(self, delivery_id: str) -> QueueWrite:
        """The delivery's message as Dramatiq's Redis broker stores it (its `enqueue` command: the body
        in `<namespace>:<queue>.msgs` under a fresh id, the id pushed onto `<namespace>:<queue>`), so
        that the webhook writes record and message in one Redis step. The worker consumes it as any.

        The body is what `Message(...).encode()` writes, field for field, built without the Message:
        its dataclass and `asdict` cost the webhook more than the encoding itself."""
        redis_message_id = random_uuid()
        fields = {
            "queue_name": QUEUE_NAME,
            "actor_name": ACTOR_NAME,
            "args": [delivery_id],
            "kwargs": {},
            "options": {"redis_message_id": redis_message_id},
            "message_id": random_uuid(),
            "message_timestamp": int(time.time() * 1000),
        }
        return QueueWrite(QUEUE_KEY, f"{QUEUE_KEY}.msgs", redis_message_id, dramatiq.get_encoder().encode(fields))

    @staticmethod
    def _message(delivery_id: str) -> dramatiq.Message[None]:
        return dramatiq.Message(
            queue_name=QUEUE_NAME, actor_name=ACTOR_NAME, args=(delivery_id,), kwargs={}, options={}
        )


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
