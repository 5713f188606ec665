"""Searches over deliveries: answered from indexes the store's scripts keep, complete past every page
and scan limit, paged newest first, and saying where they stopped when their budget runs out."""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Any

import pytest

from relay.store import (
    DEAD,
    DELIVERED,
    FETCHED,
    UNMATCHED,
    DeliveryStore,
    NewRecord,
    Search,
    subject_words,
)
from relay.store.indexes import SEARCH_BUDGET, address_key, index_keys, provider_key
from tests.helpers import BEARER, post_mime
from tests.records import DAY_MS, delivery_id_at, month_of_mail

NOISE = SEARCH_BUDGET + 5_000  # more records than a search examines per call, and than any page holds


def old_target(now: int, n: int, **changes: Any) -> NewRecord:
    """A record received 29 days ago, changed to be the only match of one filter."""
    record = next(month_of_mail(1, now - 29 * DAY_MS, days=1, seed=1000 + n))
    return NewRecord(replace(record.delivery, messageId=f"target{n}@example.org", **changes), record.payload,
                     claim=False)  # fmt: skip


def test_every_filter_finds_an_old_match_past_every_limit(client: Any, services: Any) -> None:
    now = int(time.time() * 1000)
    targets = {
        "address": old_target(now, 1, recipients=["jamie.lee@example.org"]),
        "provider": old_target(now, 2, provider="mime"),
        "subject": old_target(now, 3, subject="Re: Tour on Saturday?"),
        "prospectId": old_target(now, 4, prospectId="P-OLD"),
        "status": old_target(now, 5, status=FETCHED),
        "messageId": old_target(now, 6),
    }
    assert services.store.create_many([t] for t in targets.values()) == len(targets)
    assert services.store.create_many([r] for r in month_of_mail(NOISE, now)) == NOISE

    queries = {
        "address": {"address": "Jamie Lee <Jamie.Lee@example.org>"},
        "provider": {"provider": "mime"},
        "subject": {"subject": "saturday TOUR"},
        "prospectId": {"prospectId": "P-OLD"},
        "status": {"status": FETCHED},
        "messageId": {"messageId": "<target6@example.org>"},
    }
    for name, query in queries.items():
        answer = client.get("/v1/deliveries", query_string=query, headers=BEARER)
        assert answer.status_code == 200, answer.json
        assert [d["id"] for d in answer.json["deliveries"]] == [targets[name].delivery.id], name
        assert answer.json["nextCursor"] is None and answer.json["stoppedAt"] is None, name

    # The time range alone: the only record received in that minute, 29 days back.
    moment = targets["provider"].delivery.receivedAt
    window = {"since": _iso(moment - 1), "until": _iso(moment)}
    found = client.get("/v1/deliveries", query_string=window, headers=BEARER).json
    assert targets["provider"].delivery.id in [d["id"] for d in found["deliveries"]]

    # Every record, page after page of the largest size: nothing skipped, nothing twice, newest first.
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = client.get("/v1/deliveries", query_string={"limit": 500, **({"cursor": cursor} if cursor else {})},
                          headers=BEARER).json  # fmt: skip
        seen += [(d["receivedAt"], d["id"]) for d in page["deliveries"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == NOISE + len(targets)
    assert seen == sorted(seen, reverse=True)

    # In the console too: the old match is on the first page of results.
    console = client.get("/console/deliveries", query_string={"subject": "saturday"})
    if console.status_code == 302:  # signed out: sign in first
        from tests.test_console import sign_in

        sign_in(client)
        console = client.get("/console/deliveries", query_string={"subject": "saturday"})
    assert f"/console/deliveries/{targets['subject'].delivery.id}" in console.text


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}+00:00"


FILTERS = [
    {},
    {"status": DELIVERED},
    {"status": DEAD},
    {"provider": "sendgrid"},
    {"provider": "brevo", "status": UNMATCHED},
    {"words": "tour"},
    {"words": "parking harbor"},
    {"words": "pet", "provider": "mailgun"},
    {"status": DELIVERED, "provider": "sendgrid", "words": "lease"},
    {"address": "agent7@leasing.example.com"},
    {"address": "agent7@leasing.example.com", "words": "tour"},
    {"prospect_id": "P17"},
    {"since_ms": "third", "until_ms": "two thirds"},
    {"since_ms": "two thirds", "provider": "postmark"},
    {"words": "pet", "status": "retrying"},
    {"words": "pet building"},  # no subject has both: the walk ends without a match
]


@pytest.mark.parametrize("budget", [37, 400, SEARCH_BUDGET])
def test_pages_hold_exactly_what_a_scan_of_every_record_finds(services: Any, budget: int) -> None:
    store: DeliveryStore = services.store
    now = int(time.time() * 1000)
    records = [r.delivery for r in month_of_mail(3_000, now, seed=11)]
    # Deliveries received in the same millisecond: ordered by id within it, none lost at a page edge.
    rng = random.Random(3)
    same_ms = now - 5 * DAY_MS
    records += [replace(records[i], id=delivery_id_at(same_ms, rng), receivedAt=same_ms, messageId=f"tie{i}@x")
                for i in range(0, 300, 10)]  # fmt: skip
    store.create_many([NewRecord(d, None, claim=False)] for d in records)
    third = now - 20 * DAY_MS

    for wanted in FILTERS:
        wanted = {k: {"third": third, "two thirds": now - 10 * DAY_MS}.get(v, v) for k, v in wanted.items()}
        search = Search(**wanted)
        expected = [
            d.id for d in sorted(records, key=lambda d: (d.receivedAt, d.id), reverse=True) if _matches(d, search)
        ]
        found: list[str] = []
        cursor, stops, last_stop = None, 0, None
        for _ in range(10_000):
            page = store.search(search, cursor=cursor, limit=7, budget=budget)
            assert len(page.deliveries) <= 7
            found += [d.id for d in page.deliveries]
            if page.stopped_at is not None:
                stops += 1
                assert last_stop is None or page.stopped_at <= last_stop
                last_stop = page.stopped_at
            cursor = page.next_cursor
            if cursor is None:
                break
        assert found == expected, wanted
        if budget == SEARCH_BUDGET:
            assert stops == 0, wanted


def _matches(delivery: Any, search: Search) -> bool:
    if search.status and delivery.status != search.status:
        return False
    if search.provider and delivery.provider != search.provider:
        return False
    if search.prospect_id and delivery.prospectId != search.prospect_id:
        return False
    if search.address and search.address not in delivery.addresses():
        return False
    if search.words and not set(subject_words(search.words)) <= set(subject_words(delivery.subject)):
        return False
    if search.since_ms is not None and delivery.receivedAt < search.since_ms:
        return False
    return not (search.until_ms is not None and delivery.receivedAt > search.until_ms)


def test_a_search_out_of_budget_says_where_it_stopped_and_goes_on_from_there(client: Any, services: Any) -> None:
    now = int(time.time() * 1000)
    target = old_target(now, 9, subject="Pet policy question at Maple Court")
    services.store.create_many([[target], *([r] for r in month_of_mail(8_000, now, seed=5))])
    services.store.search_budget = 50  # one batch of ids a call
    query: dict[str, Any] = {"subject": "pet maple"}
    pages = 0
    while True:
        pages += 1
        answer = client.get("/v1/deliveries", query_string=query, headers=BEARER).json
        if answer["deliveries"]:
            break
        assert answer["stoppedAt"] is not None and answer["nextCursor"], answer
        query["cursor"] = answer["nextCursor"]
    assert [d["id"] for d in answer["deliveries"]] == [target.delivery.id]
    assert pages > 1


@pytest.mark.parametrize(
    ("query", "field"),
    [({"subject": "!!! ..."}, "subject"), ({"since": "garbage"}, "since"), ({"cursor": "12_<script>"}, "cursor"),
     ({"cursor": "1796590636176_abc\n"}, "cursor")],
)  # fmt: skip
def test_a_search_that_cannot_match_is_refused_with_the_field(client: Any, query: dict[str, str], field: str) -> None:
    answer = client.get("/v1/deliveries", query_string=query, headers=BEARER)
    assert answer.status_code == 400
    assert field in str(answer.json), answer.json


def test_a_range_that_ends_before_it_starts_matches_nothing(client: Any, services: Any) -> None:
    services.store.create_many([r] for r in month_of_mail(10, int(time.time() * 1000)))
    backwards = {"since": "2026-12-06T10:00:00Z", "until": "2026-12-01T00:00:00Z"}
    answer = client.get("/v1/deliveries", query_string=backwards, headers=BEARER)
    assert answer.status_code == 200 and answer.json["deliveries"] == [], answer.json


def test_index_entries_expire_with_their_records(services: Any, redis_client: Any) -> None:
    store: DeliveryStore = services.store
    now = int(time.time() * 1000)
    record = next(month_of_mail(1, now, days=1))
    store.create_all([record])
    keys = index_keys(record.delivery)
    assert address_key(record.delivery.sender or "") in keys
    assert any(":idx:word:" in key for key in keys) and any(":idx:provider:" in key for key in keys)
    for key in keys:
        assert redis_client.zscore(key, record.delivery.id) is not None, key
        assert 0 < redis_client.ttl(key) <= store.record_ttl, key
    store.transition(record.delivery.id, DEAD)
    assert 0 < redis_client.ttl(f"relay:idx:status:{DEAD}") <= store.record_ttl

    # An entry older than the record lifetime is trimmed by the next write to its index.
    stale = next(month_of_mail(1, now - store.record_ttl * 1000 - DAY_MS, days=1, seed=2))
    stale = NewRecord(replace(stale.delivery, provider=record.delivery.provider), None, claim=False)
    provider_index = provider_key(record.delivery.provider)
    redis_client.zadd(provider_index, {stale.delivery.id: stale.delivery.receivedAt})
    store.create_all([NewRecord(replace(record.delivery, id="f" * 32, messageId="later@x"), None, claim=False)])
    assert redis_client.zscore(provider_index, stale.delivery.id) is None


def test_reindex_enters_records_stored_without_the_search_indexes(services: Any, redis_client: Any) -> None:
    store: DeliveryStore = services.store
    now = int(time.time() * 1000)
    records = list(month_of_mail(50, now, seed=21))
    store.create_many([r] for r in records)
    # As an earlier version left them: the record and its status, prospect, Message-ID and `all` entries only.
    for key in redis_client.scan_iter("relay:idx:*"):
        if any(part in key for part in (b":provider:", b":address:", b":word:")):
            redis_client.delete(key)
    wanted = Search(provider=records[7].delivery.provider, address=records[7].delivery.sender)
    assert records[7].delivery.id not in [d.id for d in store.search(wanted, limit=500).deliveries]
    assert store.reindex(batch=7) == 50
    assert records[7].delivery.id in [d.id for d in store.search(wanted, limit=500).deliveries]
    for key in index_keys(records[7].delivery):
        assert 0 < redis_client.ttl(key) <= store.record_ttl


def test_a_cursor_beyond_the_range_starts_at_the_range_end(services: Any) -> None:
    store: DeliveryStore = services.store
    now = int(time.time() * 1000)
    rng = random.Random(5)
    edge = now - DAY_MS
    records = [next(month_of_mail(1, edge, days=1, seed=s)).delivery for s in range(3)]
    records = [replace(d, id=delivery_id_at(edge, rng), receivedAt=edge, messageId=f"edge{n}@x") for n, d in
               enumerate(records)]  # fmt: skip
    store.create_many([NewRecord(d, None, claim=False)] for d in records)
    cursor = f"{now}_{'f' * 32}"
    page = store.search(Search(until_ms=edge), cursor=cursor, limit=10)
    assert sorted(d.id for d in page.deliveries) == sorted(d.id for d in records)
    low = min(d.id for d in records)
    page = store.search(Search(until_ms=edge), cursor=f"{now}_{low}", limit=10)
    assert len(page.deliveries) == 3  # the cursor's id counts only at the cursor's own time


@pytest.mark.parametrize(
    ("subject", "typed", "found"),
    [("Don’t forget the café tour — Saturday", "don't CAFÉ", True), ("Don’t forget", "dont", False),
     ("Cafe\u0301 in İstanbul", "café istanbul", True), ("ﬁnal oﬀer", "final offer", True),
     ("Re: «Loft» … 2BR", "loft 2br", True), ("Tour — Saturday", "—", None),
     ("日本語の件名、です", "日本語の件名", True)],
)  # fmt: skip
def test_words_are_found_as_people_type_them(subject: str, typed: str, found: bool | None) -> None:
    wanted = subject_words(typed)
    if found is None:
        assert wanted == []  # punctuation alone is no word: such a search is refused
    else:
        assert bool(wanted) and (set(wanted) <= set(subject_words(subject))) is found


def test_an_email_to_many_prospects_writes_index_entries_in_proportion(client: Any, redis_client: Any) -> None:
    def address_entries() -> int:
        return sum(redis_client.zcard(key) for key in redis_client.scan_iter("relay:idx:address:*", count=1000))

    counts = {}
    for many in (100, 200):
        redis_client.flushdb()
        renters = [f"renter{n}.{many}@example.net" for n in range(many)]
        for n, address in enumerate(renters):
            client.put(f"/v1/prospects/F{many}-{n}", json={"emails": [address], "agentUsername": "kim"}, headers=BEARER)
        message = {"from": "kim@acme-living.com", "to": renters, "subject": "Holiday hours", "text": "We close at 3."}
        sent = client.post("/v1/messages", headers=BEARER, json=message)
        assert sent.status_code == 202 and len(sent.json["deliveries"]) == many, sent.json
        counts[many] = address_entries()
        # Each prospect's delivery is found by that prospect's address, and by the sender.
        for n in (0, many // 2, many - 1):
            found = client.get("/v1/deliveries", query_string={"address": renters[n]}, headers=BEARER).json
            assert [d["prospectId"] for d in found["deliveries"]] == [f"F{many}-{n}"]
        by_sender = client.get("/v1/deliveries", query_string={"address": "kim@acme-living.com", "limit": 500},
                               headers=BEARER).json  # fmt: skip
        assert len(by_sender["deliveries"]) == many
    assert counts[200] <= 2.2 * counts[100] and counts[200] <= 3 * 200, counts


def test_a_search_pays_for_every_lookup_in_its_budget(services: Any) -> None:
    store: DeliveryStore = services.store
    now = int(time.time() * 1000)
    words = " ".join(f"w{n}" for n in range(20))
    records = [replace(r.delivery, subject=words) for r in month_of_mail(600, now, seed=8)]
    records += [replace(r.delivery, subject="w19 z") for r in month_of_mail(700, now, seed=9)]
    store.create_many([NewRecord(d, None, claim=False)] for d in records)
    # The walk reads w0 (600 ids); each id is in w1 … w19 and not in z: 256 ids cost 256 + 256 × 20
    # lookups, past a budget of 600 after the first batch.
    search = Search(words=words + " z")
    page = store.search(search, limit=10, budget=600)
    assert page.deliveries == [] and page.stopped_at is not None
    assert store.search(search, limit=10, budget=100_000).stopped_at is None


def test_more_words_than_a_subject_is_found_by_match_nothing(client: Any, services: Any) -> None:
    words = [f"w{n}" for n in range(41)]
    services.store.create_many([NewRecord(replace(r.delivery, subject=" ".join(words[:40])), None, claim=False)]
                               for r in month_of_mail(5, int(time.time() * 1000)))  # fmt: skip
    forty = client.get("/v1/deliveries", query_string={"subject": " ".join(words[:40])}, headers=BEARER).json
    assert len(forty["deliveries"]) == 5
    more = client.get("/v1/deliveries", query_string={"subject": " ".join(words)}, headers=BEARER).json
    assert more["deliveries"] == []


def test_a_delivery_given_another_prospect_is_found_under_that_one_only(services: Any) -> None:
    store: DeliveryStore = services.store
    record = next(month_of_mail(1, int(time.time() * 1000), seed=30))
    record = NewRecord(replace(record.delivery, prospectId="OLD"), None, claim=False)
    store.create_all([record])
    store.assign_prospect(record.delivery.id, "NEW")
    assert store.search(Search(prospect_id="OLD")).deliveries == []
    assert [d.id for d in store.search(Search(prospect_id="NEW")).deliveries] == [record.delivery.id]


def test_a_missing_subject_is_no_words(client: Any) -> None:
    raw = b"From: renter@example.com\r\nTo: leasing@acme-living.com\r\nMessage-ID: <ns@x>\r\n\r\nHello\r\n"
    assert post_mime(client, raw).status_code == 200
    found = client.get("/v1/deliveries", query_string={"subject": "no subject"}, headers=BEARER).json
    assert found["deliveries"] == []


def test_a_subject_filter_without_a_word_left_matches_nothing(services: Any) -> None:
    services.store.create_many([r] for r in month_of_mail(5, int(time.time() * 1000)))
    assert services.store.search(Search(words="\u0301\u0301")).deliveries == []  # combining accents alone
    assert len(services.store.search(Search()).deliveries) == 5
