"""`python -m relay worker`: consume the delivery queue until SIGTERM, then finish in-flight work."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import dramatiq
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from relay.forwarding import Forwarder, RetryPolicy
from relay.queue import register_forward_actor
from relay.services import Services

log = logging.getLogger(__name__)


def rate_slot_acquirer(services: Services) -> Callable[[], None]:
    """Blocks until a Knock request fits RELAY_KNOCK_RATE_LIMIT, counted across every worker in Redis."""
    limit = services.settings.knock_rate_limit
    if limit <= 0:
        return lambda: None
    limiter = WindowRateLimiter(RedisBackend(client=services.redis), "relay:knock-rate", limit=limit, window=1)

    def acquire() -> None:
        while True:
            with limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    return
            time.sleep(0.05 + random.random() * 0.1)

    return acquire


def build_forwarder(services: Services) -> Forwarder:
    s = services.settings
    return Forwarder(
        store=services.store,
        directory=services.directory,
        knock=services.knock,
        policy=RetryPolicy(
            s.retry_min_backoff_seconds,
            s.retry_max_backoff_seconds,
            s.retry_max_age_seconds,
        ),
        default_agent=s.knock_default_agent_username,
        acquire_rate_slot=rate_slot_acquirer(services),
        lock_seconds=s.knock_timeout_seconds * 2 + 5,
    )


def run_worker(services: Services, *, threads: int, shutdown_grace_seconds: float) -> None:
    register_forward_actor(services.broker, build_forwarder(services))
    worker = dramatiq.Worker(services.broker, worker_threads=threads, worker_timeout=1000)
    stopping = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        log.info("worker stopping: finishing in-flight deliveries", extra={"signal": signum})
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    worker.start()
    log.info("worker started", extra={"threads": threads})
    stopping.wait()
    worker.stop(timeout=int(shutdown_grace_seconds * 1000))
    services.broker.close()
    log.info("worker stopped")
