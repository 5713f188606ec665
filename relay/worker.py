"""`python -m relay worker`: consume the delivery queue until SIGTERM, then finish in-flight work."""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

import dramatiq
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend
from prometheus_client import CONTENT_TYPE_LATEST

from relay.circuit import KnockCircuit
from relay.config import ConfigError
from relay.forwarding import FETCH_STEP_SECONDS, Forwarder, RetryPolicy, delivery_lock_seconds
from relay.intake import complete_fetch
from relay.metrics import exposition
from relay.queue import QUEUE_KEY, register_forward_actor
from relay.services import Services
from relay.store import now_ms

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
        lock_seconds=delivery_lock_seconds(s.knock_timeout_seconds, FETCH_STEP_SECONDS),
        fetch_step_seconds=FETCH_STEP_SECONDS,
        complete_fetch=lambda delivery, fetch: complete_fetch(services, delivery, fetch),
        circuit=KnockCircuit(
            services.redis,
            threshold=s.knock_circuit_failures,
            probe_seconds=s.knock_probe_seconds,
            keep_seconds=s.record_ttl_seconds,
        ),
    )


class RetryScheduler(threading.Thread):
    """Queues scheduled retries when they fall due. Never dies: a Redis error is logged and waited out.

    Every worker process runs one; a retry is leased while it is queued, so two schedulers never
    both queue it, and one that dies mid-way leaves it due again when the lease ends.
    """

    LEASE_MS = 60_000
    SWEEP_EVERY_SECONDS = 15.0

    def __init__(self, services: Services, *, interval: float = 0.25) -> None:
        super().__init__(name="retry-scheduler", daemon=True)
        self.store = services.store
        self.queue = services.queue
        self.interval = interval
        self.requeue_after_ms = int(services.settings.requeue_after_seconds * 1000)
        self.sweep_every = min(self.SWEEP_EVERY_SECONDS, services.settings.requeue_after_seconds / 2)
        self.next_sweep = time.monotonic() + self.sweep_every
        self.stopping = threading.Event()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                queued = self.queue_due()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any error
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("retry scheduler waiting for redis", extra={"error": type(exc).__name__})
                self.stopping.wait(min(5.0, 0.5 * failures))
                continue
            if not queued:
                self.stopping.wait(self.interval)

    def queue_due(self) -> int:
        due, lease = self.store.claim_due(now_ms(), self.LEASE_MS)
        for delivery_id in due:
            self.queue.enqueue(delivery_id)
            self.store.mark_enqueued(delivery_id)
            self.store.release_due(delivery_id, lease)
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + self.sweep_every
            self.requeue_stranded()
        return len(due)

    def requeue_stranded(self) -> None:
        """The safety net: queue again what a Redis fault left with no message anywhere. Never a
        delivery a worker holds the lock of (it is being sent: the lock outlasts any attempt, see
        forwarding.delivery_lock_seconds), nor one waiting for a scheduled retry (see
        DeliveryStore.stranded)."""
        if self.queue.waiting():
            return
        for delivery_id in self.store.stranded(self.requeue_after_ms):
            log.warning("queued a stranded delivery again", extra={"delivery_id": delivery_id})
            self.queue.enqueue(delivery_id)
            self.store.mark_enqueued(delivery_id)

    def stop(self) -> None:
        self.stopping.set()


class RelayWorker:
    """One worker process's moving parts: Dramatiq's consumer and forwarding threads, and the retry scheduler."""

    def __init__(self, services: Services, *, threads: int, idle_poll_ms: int = 1000) -> None:
        self.services = services
        register_forward_actor(services.broker, build_forwarder(services))
        self.dramatiq = dramatiq.Worker(services.broker, worker_threads=threads, worker_timeout=idle_poll_ms)
        self.scheduler = RetryScheduler(services)

    def start(self) -> None:
        self.dramatiq.start()
        self.scheduler.start()

    def stop(self, timeout_seconds: float) -> None:
        self.scheduler.stop()
        self.dramatiq.stop(timeout=int(timeout_seconds * 1000))
        self.scheduler.join(timeout=5)
        self.services.broker.close()

    def stopped_threads(self) -> list[str]:
        """Names of the threads that should run and no longer do."""
        threads: list[threading.Thread] = [*self.dramatiq.consumers.values(), *self.dramatiq.workers, self.scheduler]
        return [thread.name for thread in threads if not thread.is_alive()]


def serve_health(worker: RelayWorker, port: int) -> ThreadingHTTPServer:
    """The worker's small HTTP port: `/healthz` is 200 while every thread it started still runs.

    Liveness deliberately ignores Redis: restarting a worker does not bring Redis back, and the
    worker reconnects by itself.
    """

    class HealthHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?")[0]
            if path == "/metrics":
                self.send_metrics()
                return
            if path != "/healthz":
                self.answer(404, {"error": "not found"})
                return
            stopped = worker.stopped_threads()
            if stopped:
                self.answer(503, {"status": "failing", "stoppedThreads": stopped})
            else:
                self.answer(200, {"status": "ok"})

        def send_metrics(self) -> None:
            try:
                data = exposition(worker.services.redis, QUEUE_KEY)
            except Exception:  # noqa: BLE001 - a scrape must not take the worker's port down
                log.exception("metrics scrape failed")
                self.answer(500, {"error": "metrics unavailable"})
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Probes every few seconds would drown the log; failures show in the status."""

    server = ThreadingHTTPServer(("0.0.0.0", port), HealthHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def run_worker(services: Services, *, threads: int, shutdown_grace_seconds: float) -> None:
    worker = RelayWorker(services, threads=threads)
    stopping = threading.Event()
    port = services.settings.worker_port

    def request_stop(signum: int, _: FrameType | None) -> None:
        log.info("worker stopping: finishing in-flight deliveries", extra={"signal": signum})
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        health = serve_health(worker, port) if port else None
    except OSError as error:
        raise ConfigError([f"RELAY_WORKER_PORT: cannot listen on {port} ({error.strerror})"]) from error
    worker.start()
    log.info("worker started", extra={"threads": threads, "port": port or None})
    stopping.wait()
    worker.stop(shutdown_grace_seconds)
    if health:
        health.shutdown()
    log.info("worker stopped")
