"""Redis round trips on the hot paths, counted by Redis itself, and what makes them safe to fold.

Redis' slow log, with its threshold at zero, lists every command a client sent; the commands a
script runs inside it are listed too, but as the script's (client `?:0`), so the client's entries
are its round trips.
"""

from __future__ import annotations

import hashlib
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from relay.app import create_app
from relay.directory import Directory
from relay.intake import accept_items
from relay.mime import parse_mime
from relay.services import Services
from relay.store import DELIVERED, QUEUED
from relay.store.scripts import _CREATE
from relay.worker import build_forwarder
from tests.conftest import Sandbox
from tests.helpers import BEARER, authenticated, mailgun_signature, mime, payload, post_mime, signed_urlencoded

ROUTE = "/webhooks/mailgun/inbound"
URLENCODED = "application/x-www-form-urlencoded"


def round_trips(url: str, action: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run `action`; what it returned and the commands clients sent Redis meanwhile, in order."""
    admin = redis.Redis.from_url(url, decode_responses=True)
    admin.config_set("slowlog-max-len", 10_000)
    admin.config_set("slowlog-log-slower-than", 0)
    admin.slowlog_reset()
    result = action()
    entries = admin.slowlog_get(10_000)
    admin.config_set("slowlog-log-slower-than", 10_000)
    sent = []
    for entry in reversed(entries):  # redis-py hands these over as bytes
        command = bytes(entry["command"]).split()[0].decode().lower()
        if bytes(entry["client_address"]).startswith(b"?") or command in ("slowlog", "config"):
            continue
        sent.append(command)
    return result, sent


def test_an_email_between_known_addresses_is_stored_in_one_round_trip(own_redis: Any, make_settings: Any) -> None:
    url = own_redis()
    client = create_app(make_settings(REDIS_URL=url)).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    assert post_mime(client, mime(message_id="<first@example.com>")).json["status"] == QUEUED

    answer, sent = round_trips(url, lambda: post_mime(client, mime(message_id="<second@example.com>")))
    assert answer.json["status"] == QUEUED
    assert sent == ["evalsha"]  # record, claim, indexes and queue message: one script


def test_a_signed_mailgun_post_is_stored_in_one_round_trip_with_its_token(own_redis: Any, make_settings: Any) -> None:
    url = own_redis()
    client = create_app(make_settings(REDIS_URL=url)).test_client()
    body = payload("mailgun/route-parsed.urlencoded")
    first = client.post(ROUTE, data=signed_urlencoded(body, mailgun_signature()), content_type=URLENCODED)
    assert first.status_code == 200

    signature = mailgun_signature()
    post = signed_urlencoded(body.replace(b"Message-Id=", b"Message-Id=x"), signature)
    answer, sent = round_trips(url, lambda: client.post(ROUTE, data=post, content_type=URLENCODED))
    assert answer.json["status"] != "duplicate"
    assert sent == ["evalsha"]  # the token check and its record ride in the same script

    retry, sent = round_trips(url, lambda: client.post(ROUTE, data=post, content_type=URLENCODED))
    assert retry.json["status"] == "duplicate"
    assert retry.json["deliveries"][0]["id"] == answer.json["deliveries"][0]["id"]
    assert sent == ["evalsha"]


def test_a_directory_change_made_elsewhere_is_seen_by_the_next_email(own_redis: Any, make_settings: Any) -> None:
    """Each web process keeps what it read of the directory; another process's change must still count."""
    url = own_redis()
    web = create_app(make_settings(REDIS_URL=url)).test_client()
    other_process = create_app(make_settings(REDIS_URL=url)).test_client()
    first = post_mime(web, mime(sender="New Renter <new@example.com>", message_id="<a@example.com>"))
    assert first.json["status"] == "unmatched"  # and `web` now remembers that no prospect has this address

    other_process.put("/v1/prospects/P9", json={"emails": ["new@example.com"], "agentUsername": "pat"},
                      headers=BEARER)  # fmt: skip
    second = post_mime(web, mime(sender="New Renter <new@example.com>", message_id="<b@example.com>"))
    assert second.json["status"] == QUEUED
    assert second.json["deliveries"][0]["prospectId"] == "P9"

    other_process.delete("/v1/prospects/P9", headers=BEARER)
    third = post_mime(web, mime(sender="New Renter <new@example.com>", message_id="<c@example.com>"))
    assert third.json["status"] == "unmatched"


class _ChangingWhileRouted(list):  # type: ignore[type-arg]
    """A call's emails; while the call's first routing pass is between its first and second email,
    `change` runs (the directory changes meanwhile). Later passes see the emails alone."""

    def __init__(self, emails: list[Any], change: Callable[[], Any]) -> None:
        super().__init__(emails)
        self.change: Callable[[], Any] | None = change

    def __iter__(self) -> Any:
        for n, email in enumerate(list.__iter__(self)):
            if n == 1 and self.change:
                self.change()
                self.change = None
            yield email


def test_emails_of_one_call_routed_across_a_directory_change_are_all_routed_again(
    own_redis: Any, make_settings: Any
) -> None:
    """Routing read the first email's prospect before a change, the second's after: the call must
    not be stored with the first routed by the old directory. Which of the two versions a wrong
    implementation would compare is a coin toss, so the call is made ten times."""
    url = own_redis()
    web = create_app(make_settings(REDIS_URL=url))
    other_process = create_app(make_settings(REDIS_URL=url)).test_client()
    services = web.extensions["relay"]
    for n in range(10):
        other_process.put(f"/v1/prospects/P{n}", json={"emails": [f"renter{n}@example.com"], "agentUsername": "pat"},
                          headers=BEARER)  # fmt: skip
        emails = [
            parse_mime(mime(sender=f"renter{n}@example.com", message_id=f"<a{n}@example.com>")),
            parse_mime(mime(sender=f"newcomer{n}@example.com", message_id=f"<b{n}@example.com>")),
        ]
        moved = _ChangingWhileRouted(emails, lambda n=n: other_process.delete(f"/v1/prospects/P{n}", headers=BEARER))
        intake = accept_items(services, moved, "mime")
        assert moved.change is None  # the directory did change between the two emails
        assert [d["status"] for d in intake.deliveries] == ["unmatched", "unmatched"], n


def test_a_flushed_directory_is_not_taken_for_the_one_remembered(own_redis: Any, make_settings: Any) -> None:
    url = own_redis()
    web = create_app(make_settings(REDIS_URL=url)).test_client()
    web.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    assert post_mime(web, mime(message_id="<a@example.com>")).json["status"] == QUEUED
    redis.Redis.from_url(url).flushall()
    assert post_mime(web, mime(message_id="<b@example.com>")).json["status"] == "unmatched"


def test_a_delivery_is_sent_in_three_round_trips_and_leaves_no_lock(
    own_redis: Any, make_settings: Any, sandbox: Sandbox
) -> None:
    """Lock and read in one script, the attempt mark, the outcome with the lock's release in another."""
    sandbox.seed("P1", agent="pat")
    url = own_redis()
    settings = make_settings(REDIS_URL=url)
    client = create_app(settings).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    warm_up, delivery_id = (post_mime(client, mime(message_id=f"<{n}@example.com>")).json["deliveries"][0]["id"]
                            for n in ("warm-up", "sent"))  # fmt: skip
    forwarder = build_forwarder(services := Services(settings, patient=True))
    assert forwarder.forward(warm_up) == DELIVERED  # connected, scripts loaded

    status, sent = round_trips(url, lambda: forwarder.forward(delivery_id))
    assert status == DELIVERED
    assert len(sandbox.events("P1")) == 2
    assert sent == ["evalsha", "hset", "evalsha"]
    assert services.redis.exists(services.store.lock_key(delivery_id)) == 0


def test_a_delivery_locked_by_another_worker_is_left_to_it(own_redis: Any, make_settings: Any) -> None:
    url = own_redis()
    settings = make_settings(REDIS_URL=url)
    client = create_app(settings).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    delivery_id = post_mime(client, mime(message_id="<locked@example.com>")).json["deliveries"][0]["id"]
    services = Services(settings, patient=True)
    services.redis.set(services.store.lock_key(delivery_id), "another-worker", px=30_000)

    assert build_forwarder(services).forward(delivery_id) is None
    record = services.store.get(delivery_id)
    assert record is not None and record.status == QUEUED and record.attempts == 0
    assert services.redis.get(services.store.lock_key(delivery_id)) == "another-worker"
    due = services.redis.zscore("relay:due", delivery_id)
    assert due is not None  # tried again once the other worker's lock lapses


def test_an_email_for_two_prospects_is_stored_whole_in_one_round_trip(own_redis: Any, make_settings: Any) -> None:
    url = own_redis()
    client = create_app(make_settings(REDIS_URL=url)).test_client()
    for prospect, address in (("P1", "first@example.com"), ("P2", "second@example.org")):
        client.put(f"/v1/prospects/{prospect}", json={"emails": [address], "agentUsername": "pat"}, headers=BEARER)
    outbound = mime(sender="Dana <dana@acme-living.com>", to="first@example.com, second@example.org",
                    extra_headers=authenticated())  # fmt: skip
    post_mime(client, mime(sender="Dana <dana@acme-living.com>", to="first@example.com, second@example.org",
                           message_id="<warm-up@example.com>", extra_headers=authenticated()))  # fmt: skip

    answer, sent = round_trips(url, lambda: post_mime(client, outbound))
    assert sorted(d["prospectId"] for d in answer.json["deliveries"]) == ["P1", "P2"]
    assert sent == ["evalsha"]


def test_a_retry_of_a_post_answered_duplicate_is_answered_the_same(own_redis: Any, make_settings: Any) -> None:
    """The first call with this token found its email already logged (another token); its retry
    gets that same answer from the token, in one round trip."""
    url = own_redis()
    client = create_app(make_settings(REDIS_URL=url)).test_client()
    body = payload("mailgun/route-parsed.urlencoded")
    first = client.post(ROUTE, data=signed_urlencoded(body, mailgun_signature()), content_type=URLENCODED)
    again = signed_urlencoded(body, mailgun_signature())
    duplicate = client.post(ROUTE, data=again, content_type=URLENCODED)
    assert duplicate.json["status"] == "duplicate"

    retry, sent = round_trips(url, lambda: client.post(ROUTE, data=again, content_type=URLENCODED))
    assert retry.json == duplicate.json
    assert [d["id"] for d in retry.json["deliveries"]] == [d["id"] for d in first.json["deliveries"]]
    assert sent == ["evalsha"]


def test_a_copy_of_the_directory_is_dropped_when_old_even_without_a_new_version(services: Any) -> None:
    """A change that writes no version (a relay from before versions, a hand edit) is seen once the
    copy is older than its limit."""
    redis_client = services.redis
    directory = Directory(redis_client, copy_seconds=0.3)
    email = parse_mime(mime(sender="Someone <someone@example.com>"))
    view, _ = directory.view_for(email, "prospect")
    assert view.prospects_by_email == {}
    redis_client.sadd("relay:prospects-by-email:someone@example.com", "P7")  # as an older relay writes it
    redis_client.set("relay:prospect:P7", '{"prospectId": "P7", "emails": ["someone@example.com"]}')
    assert directory.view_for(email, "prospect")[0].prospects_by_email == {}  # the copy still answers
    time.sleep(0.35)
    assert directory.view_for(email, "prospect")[0].prospects_by_email == {"someone@example.com": ("P7",)}


def test_a_script_redis_forgot_is_loaded_again_and_the_email_stored(own_redis: Any, make_settings: Any) -> None:
    """A restarted Redis has no scripts: the webhook's lean call hands over to the full one, which
    loads the script; nothing is answered 503 for it."""
    url = own_redis()
    client = create_app(make_settings(REDIS_URL=url)).test_client()
    assert post_mime(client, mime(message_id="<before@example.com>")).json["status"] == "unmatched"
    admin = redis.Redis.from_url(url)
    admin.script_flush()

    answer = post_mime(client, mime(message_id="<after@example.com>"))
    assert answer.status_code == 200 and answer.json["status"] == "unmatched"
    assert admin.exists(f"relay:delivery:{answer.json['deliveries'][0]['id']}")


class _DropFirstCall:
    """A TCP proxy to Redis that closes the client's connection, unanswered, the first time a
    command holding `marker` arrives: a connection that breaks in the middle of that command."""

    def __init__(self, target_port: int, marker: bytes) -> None:
        self.target_port = target_port
        self.marker = marker
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while True:
                for sock in select.select([client, upstream], [], [], 5)[0]:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client and self.marker in data and not self.dropped:
                        self.dropped += 1
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.listener.close()


def test_a_connection_broken_during_the_webhooks_script_is_503_and_the_next_post_is_stored(
    own_redis: Any, make_settings: Any
) -> None:
    """The webhook's lean script call fails as redis-py's own does: 503, nothing half-written, and
    the broken connection is not handed to the next call."""
    url = own_redis()
    create_sha = hashlib.sha1(_CREATE.encode()).hexdigest().encode()
    proxy = _DropFirstCall(int(url.rsplit(":", 1)[1].split("/")[0]), create_sha)
    try:
        client = create_app(make_settings(REDIS_URL=proxy.url)).test_client()
        client.get("/readyz")  # the app's first connection is made and pooled
        admin = redis.Redis.from_url(url)
        broken = post_mime(client, mime(sender="Nobody <nobody@example.net>", message_id="<broken@example.com>"))
        assert proxy.dropped == 1
        assert broken.status_code == 503
        assert admin.keys("relay:delivery:*") == [] and admin.zcard("relay:idx:all") == 0
        answer = post_mime(client, mime(sender="Nobody <nobody@example.net>", message_id="<broken@example.com>"))
        assert answer.status_code == 200
        assert admin.exists(f"relay:delivery:{answer.json['deliveries'][0]['id']}")
    finally:
        proxy.close()


def test_enqueue_refused_after_the_record_is_stored_answers_503_and_keeps_nothing(
    own_redis: Any, make_settings: Any
) -> None:
    """The web side may write the relay's records but Redis refuses it the queue's keys (an ACL)."""
    url = own_redis()
    admin = redis.Redis.from_url(url)
    admin.acl_setuser("relay-web", enabled=True, passwords=["+pw"], keys=["relay:*"], commands=["+@all"])
    restricted = url.replace("redis://", "redis://relay-web:pw@")
    client = create_app(make_settings(REDIS_URL=restricted)).test_client()
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=BEARER)
    raw = mime(message_id="<refused@example.com>")
    first = post_mime(client, raw)
    assert first.status_code == 503 and first.headers["Retry-After"]
    assert admin.keys("relay:delivery:*") == [] and admin.keys("relay:dedup:*") == []
    assert admin.zcard("relay:idx:all") == 0

    admin.acl_setuser("relay-web", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    retry = post_mime(client, raw)  # the provider's retry is new, not a duplicate of a ghost
    assert retry.status_code == 200 and retry.json["status"] == "queued"
    assert len(admin.keys("relay:delivery:*")) == 1
