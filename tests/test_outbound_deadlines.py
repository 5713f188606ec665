"""Every outbound call ends by its total deadline, whatever the server does: a status line, a body or
TLS records trickled one byte a second are cut off, and the server sees the connection closed
long before its trickle would have ended. Against real local servers, with small deadlines."""

from __future__ import annotations

import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay.app import create_app
from relay.errors import ProviderUnavailable
from relay.forwarding import FETCH_STEP_SECONDS, Forwarder, RetryPolicy, delivery_lock_seconds
from relay.intake import complete_fetch
from relay.knock.client import KnockClient, KnockTransientError
from relay.outbound import deadline
from relay.providers.fetch import fetch_answer
from relay.queue import QUEUE_KEY
from relay.services import Services
from relay.store import QUEUED, RETRYING
from relay.worker import RetryScheduler, build_forwarder
from tests.conftest import SnsSigner
from tests.helpers import BEARER, mime, payload, post_mime, svix_headers, wait_until

#: Bytes a trickle sends after the fast part: at one a second, far longer than any deadline here.
TRICKLE = 40


@dataclass
class Trickled:
    """One connection a Trickler served: bytes trickled so far, and how it ended."""

    sent: int = 0
    closed_by_client: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


class Trickler:
    """A TCP server that answers each request with `fast` at once and then `slow` one byte every
    `interval` seconds (the next request on a kept-alive connection with `then`, when given), over
    TLS with `tls` (certificate and key files; each byte its own TLS record). It notes when the
    client closes before a trickle ends."""

    def __init__(self, fast: bytes = b"", slow: bytes = b"", *, then: tuple[bytes, bytes] | None = None,
                 tls: tuple[str, str] | None = None, interval: float = 1.0) -> None:  # fmt: skip
        self.answers = [(fast, slow)] + ([then] if then else [])
        self.interval = interval
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) if tls else None
        if self.tls and tls:
            self.tls.load_cert_chain(*tls)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.connections: list[Trickled] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            record = Trickled()
            self.connections.append(record)
            threading.Thread(target=self._answer, args=(client, record), daemon=True).start()

    def _answer(self, client: socket.socket, record: Trickled) -> None:
        if self.tls:
            try:
                client = self.tls.wrap_socket(client, server_side=True)
            except (OSError, ssl.SSLError):
                return
        with client:
            for fast, slow in self.answers:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = _received(client)
                    if not chunk:
                        return
                    head += chunk
                client.sendall(fast)
                for byte in slow:
                    if _closed(client, self.interval):
                        record.closed_by_client.set()
                        return
                    client.sendall(bytes([byte]))
                    record.sent += 1
                if slow:
                    record.finished.set()

    def close(self) -> None:
        self.listener.close()


def _received(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _closed(sock: socket.socket, wait: float) -> bool:
    """Whether the peer closed `sock` within `wait` seconds (what it sends meanwhile is dropped)."""
    readable, _, _ = select.select([sock], [], [], wait)
    return bool(readable) and not _received(sock)


@pytest.fixture
def trickler() -> Iterator[Callable[..., Trickler]]:
    started: list[Trickler] = []

    def start(*args: Any, **kwargs: Any) -> Trickler:
        server = Trickler(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def cut_off(server: Trickler) -> Trickled:
    """The server's one connection, once it saw the client close it before the trickle ended."""
    (connection,) = server.connections
    wait_until(connection.closed_by_client.is_set, timeout=15)
    assert not connection.finished.is_set() and connection.sent < TRICKLE
    return connection


STATUS_LINE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
BODY = b'{"pad": "' + b"x" * (TRICKLE - 12) + b'"}'


# Provider fetches --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fast", "slow"),
    [
        (b"", STATUS_LINE % len(BODY) + BODY),  # the status line itself, one byte a second
        (STATUS_LINE % len(BODY), BODY),  # the head at once, then the body
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", BODY),  # no length: the end is the close
    ],
    ids=["status-line", "body", "body-without-length"],
)
def test_a_trickling_provider_fetch_ends_at_its_deadline(trickler: Any, fast: bytes, slow: bytes) -> None:
    server = trickler(fast, slow)
    with pytest.raises(ProviderUnavailable, match="no complete answer within the deadline"):
        fetch_answer(server.url + "/emails/1", what="Resend email", limit=65536, deadline_seconds=1.5)
    cut_off(server)


def tls_files(sns: SnsSigner) -> tuple[str, str]:
    """The SNS stand-in's certificate (which `requests` trusts while `sns` is in use) and its key."""
    return sns.ca_file, str(Path(sns.ca_file).with_name("sns-key.pem"))


def test_tls_records_of_one_byte_a_second_are_cut_off_at_the_deadline(trickler: Any, sns: SnsSigner) -> None:
    """Each byte its own TLS record: every read completes well within its timeout, so only the
    deadline ends the call."""
    server = trickler(STATUS_LINE % len(BODY), BODY, tls=tls_files(sns))
    with pytest.raises(ProviderUnavailable, match="no complete answer within the deadline"):
        fetch_answer(server.url + "/emails/1", what="Resend email", limit=65536, deadline_seconds=1.5)
    cut_off(server)


def test_the_same_tls_server_is_read_whole_when_it_does_not_trickle(trickler: Any, sns: SnsSigner) -> None:
    server = trickler(STATUS_LINE % len(BODY), BODY, tls=tls_files(sns), interval=0)
    assert fetch_answer(server.url + "/emails/1", what="Resend email", limit=65536, deadline_seconds=10) == (
        200,
        BODY,
    )


def test_an_enclosing_deadline_ends_a_call_that_has_longer_of_its_own(trickler: Any) -> None:
    """The worker gives a whole fetch one deadline, shorter than its lock, however many calls it makes."""
    server = trickler(STATUS_LINE % len(BODY), BODY)
    with pytest.raises(ProviderUnavailable), deadline(1.5):
        fetch_answer(server.url + "/emails/1", what="Resend email", limit=65536, deadline_seconds=60)
    assert cut_off(server).sent <= 5


# Knock ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fast", "slow"),
    [(b"", STATUS_LINE % 25 + b'{"communicationId": "C1"}'), (STATUS_LINE % len(BODY), BODY)],
    ids=["status-line", "body"],
)
def test_a_trickling_knock_call_ends_at_the_knock_timeout(trickler: Any, fast: bytes, slow: bytes) -> None:
    server = trickler(fast, slow)
    knock = KnockClient(server.url, "key", timeout=1.5)
    with pytest.raises(KnockTransientError, match="timeout after 1.5s"):
        knock.log_email("P1", {"subject": "Hi"})
    cut_off(server)


def test_a_kept_alive_knock_connection_is_cut_off_too(trickler: Any) -> None:
    """The second call reuses the first one's connection: its socket is watched all the same."""
    answer = STATUS_LINE % 25 + b'{"communicationId": "C1"}'
    server = trickler(answer, b"", then=(b"", answer))
    knock = KnockClient(server.url, "key", timeout=1.5)
    assert knock.log_email("P1", {"subject": "Hi"}) == "C1"
    with pytest.raises(KnockTransientError, match="timeout after 1.5s"):
        knock.log_email("P1", {"subject": "Hi"})
    cut_off(server)  # one connection: the kept-alive one


# The worker: the lock outlasts the deadlines; the safety net leaves live work alone ----------------


def test_the_delivery_lock_outlasts_every_deadline_of_an_attempt(make_settings: Any) -> None:
    for knock_timeout in ("0.1", "1", "10", "30"):
        forwarder = build_forwarder(Services(make_settings(RELAY_KNOCK_TIMEOUT_SECONDS=knock_timeout), patient=True))
        assert forwarder.lock_seconds > 2 * float(knock_timeout)  # an agent lookup, then the log call
        assert forwarder.lock_seconds > forwarder.fetch_step_seconds == FETCH_STEP_SECONDS
    assert delivery_lock_seconds(1, 3) > 3 and delivery_lock_seconds(4, 3) > 8


def test_a_fetch_in_flight_keeps_its_lock_and_the_safety_net_leaves_it_alone(trickler: Any, make_settings: Any) -> None:
    """A provider trickling its answer: the fetch ends by its step's deadline with the lock still
    held, and meanwhile the stranded-delivery sweep does not queue the delivery again."""
    server = trickler(STATUS_LINE % len(BODY), BODY)
    settings = make_settings(RELAY_RESEND_API_URL=server.url, RELAY_REQUEUE_AFTER_SECONDS="1")
    services = Services(settings, patient=True)
    client = create_app(settings).test_client()
    data = payload("resend/received.json")
    (pending,) = client.post("/webhooks/resend", data=data, content_type="application/json",
                             headers=svix_headers(data)).json["deliveries"]  # fmt: skip
    forwarder = Forwarder(store=services.store, directory=services.directory, knock=services.knock,
                          policy=RetryPolicy(0.2, 1, 3600), lock_seconds=delivery_lock_seconds(1, 3),
                          complete_fetch=lambda d, f: complete_fetch(services, d, f), fetch_step_seconds=3)  # fmt: skip
    outcome: list[str | None] = []
    in_flight = threading.Thread(target=lambda: outcome.append(forwarder.forward(pending["id"])))
    in_flight.start()
    wait_until(lambda: server.connections)
    services.redis.delete(QUEUE_KEY)  # its message taken by this worker: the queue is empty
    queued_at = services.redis.hget(services.store.record_key(pending["id"]), "queuedAt")
    time.sleep(1.1)  # older than RELAY_REQUEUE_AFTER_SECONDS: a stranded delivery, but for its lock
    assert services.redis.pttl(services.store.lock_key(pending["id"])) > 1000
    RetryScheduler(services).requeue_stranded()
    assert services.queue.waiting() == 0
    assert services.redis.hget(services.store.record_key(pending["id"]), "queuedAt") == queued_at
    in_flight.join(timeout=30)
    assert outcome == [RETRYING]
    record = services.store.get(pending["id"])
    assert record is not None and "no complete answer within the deadline" in (record.lastError or "")
    cut_off(server)


def test_the_sweep_queues_a_lost_delivery_once_no_lock_holds_it(make_settings: Any) -> None:
    """The other side of the rule above, so that it cannot pass by the sweep doing nothing at all."""
    settings = make_settings(RELAY_REQUEUE_AFTER_SECONDS="1")
    services = Services(settings, patient=True)
    client = create_app(settings).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    (summary,) = post_mime(client, mime()).json["deliveries"]
    assert summary["status"] == QUEUED
    services.redis.delete(QUEUE_KEY)  # the message lost with a worker whose Redis reply never came
    time.sleep(1.1)
    services.redis.set(services.store.lock_key(summary["id"]), "a worker sending it", px=60_000)
    RetryScheduler(services).requeue_stranded()
    assert services.queue.waiting() == 0  # locked: being sent, not lost
    services.redis.delete(services.store.lock_key(summary["id"]))
    RetryScheduler(services).requeue_stranded()
    assert services.queue.waiting() == 1
    assert json.loads(services.redis.hget(f"{QUEUE_KEY}.msgs", services.redis.lindex(QUEUE_KEY, 0)))["args"] == [
        summary["id"]
    ]
