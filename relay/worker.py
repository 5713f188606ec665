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

from relay.config import ConfigError
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


def stopped_threads(worker: dramatiq.Worker) -> list[str]:
    """Names of the worker's consumer and forwarding threads that are no longer running."""
    threads: list[threading.Thread] = [*worker.consumers.values(), *worker.workers]
    return [thread.name for thread in threads if not thread.is_alive()]


def serve_health(worker: dramatiq.Worker, port: int) -> ThreadingHTTPServer:
    """The worker's small HTTP port: `/healthz` is 200 while every thread it started still runs.

    Liveness deliberately ignores Redis: restarting a worker does not bring Redis back, and the
    worker reconnects by itself.
    """

    class HealthHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/healthz":
                self.answer(404, {"error": "not found"})
                return
            stopped = stopped_threads(worker)
            if stopped:
                self.answer(503, {"status": "failing", "stoppedThreads": stopped})
            else:
                self.answer(200, {"status": "ok"})

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
    register_forward_actor(services.broker, build_forwarder(services))
    worker = dramatiq.Worker(services.broker, worker_threads=threads, worker_timeout=1000)
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
    worker.stop(timeout=int(shutdown_grace_seconds * 1000))
    if health:
        health.shutdown()
    services.broker.close()
    log.info("worker stopped")
