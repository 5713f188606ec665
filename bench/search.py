"""Searches and console pages over a month of mail: server time per request and memory per record.

    .venv/bin/python bench/search.py [--records 300000] [--samples 200]

Starts its own redis-server, loads `--records` generated deliveries spread over 30 days
(tests/records.py: 88 % delivered, the rest queued, retrying, dead, unmatched or ignored; eleven
providers; 20,000 renters and 200 agents; subjects from ten templates), then times every console
page and /v1/deliveries query through the app's WSGI callable in this process (Flask's test client:
the time the app spends, without a network) `--samples` times each after a warm-up, and prints
a Markdown table: median and 99th percentile per request, and Redis memory per record by kind of key.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from dev import free_port, redis_answers, redis_server_binary  # noqa: E402
from relay.app import create_app  # noqa: E402
from relay.config import load_settings  # noqa: E402
from relay.store import DEAD, UNMATCHED, Search  # noqa: E402
from tests.helpers import BEARER, CONSOLE_PASSWORD, CONSOLE_USER, relay_env  # noqa: E402
from tests.records import DAY_MS, month_of_mail  # noqa: E402


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    folder = tempfile.mkdtemp(prefix="relay-bench-search-")
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", folder],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if redis_answers(url):
            return process, url
        time.sleep(0.1)
    raise SystemExit("could not start redis-server")


def memory_by_kind(client: redis.Redis, records: int) -> list[tuple[str, int, float]]:
    """(kind of key, keys, bytes per record) from MEMORY USAGE of every key, largest first."""
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    batch: list[str] = []

    def measure() -> None:
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key, samples=0)
        for key, size in zip(batch, pipe.execute(), strict=True):
            parts = key.split(":")
            kind = ":".join(parts[1:3]) if parts[1] == "idx" else parts[1]
            sizes[kind] += size or 0
            counts[kind] += 1
        batch.clear()

    for key in client.scan_iter(count=5000):
        batch.append(key)
        if len(batch) == 2000:
            measure()
    measure()
    return [(kind, counts[kind], size / records) for kind, size in sizes.most_common()]


def timed(call: Any, samples: int) -> tuple[float, float]:
    """Median and 99th percentile in ms of `samples` calls, after two warm-up calls."""
    call(), call()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * len(times)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    server, url = start_redis()
    try:
        settings = load_settings(relay_env("http://127.0.0.1:9", REDIS_URL=url))
        app = create_app(settings)
        relay = app.extensions["relay"]
        client = app.test_client()
        store = relay.store
        before = int(relay.redis.info("memory")["used_memory"])
        now = int(time.time() * 1000)
        started = time.monotonic()
        written = store.create_many([record] for record in month_of_mail(args.records, now))
        loaded = time.monotonic() - started
        used = int(relay.redis.info("memory")["used_memory"]) - before
        print(f"loaded {written:,} records in {loaded:.0f} s; Redis memory {used / 2**20:,.0f} MiB, "
              f"{used / written:,.0f} bytes per record with its indexes", file=sys.stderr)  # fmt: skip

        sign_in = client.get("/console/sign-in").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', sign_in)
        assert token, "no CSRF token on the sign-in page"
        signed = client.post("/console/sign-in", data={"csrf_token": token.group(1), "name": CONSOLE_USER,
                                                       "password": CONSOLE_PASSWORD})  # fmt: skip
        assert signed.status_code == 302, signed.status_code

        middle = store.search(Search(until_ms=now - 15 * DAY_MS), limit=1).next_cursor
        some_dead = store.search(Search(status=DEAD), limit=1).deliveries[0]
        some_unmatched = store.search(Search(status=UNMATCHED), limit=1).deliveries[0]
        address = some_dead.sender or ""
        since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime((now - 20 * DAY_MS) / 1000))
        until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime((now - 19 * DAY_MS) / 1000))
        queries = {
            "every delivery": {},
            "status=dead": {"status": "dead"},
            "provider=mailjet": {"provider": "mailjet"},
            f"address={address.split('@')[0]}@…": {"address": address},
            "subject=parking": {"subject": "parking"},
            "subject=pet maple (no match: budget)": {"subject": "pet maple"},
            "a day 20 days back": {"since": since, "until": until},
            "status=delivered provider=sendgrid subject=lease": {
                "status": "delivered", "provider": "sendgrid", "subject": "lease"},
            "messageId": {"messageId": some_dead.messageId},
            "prospectId": {"prospectId": some_dead.prospectId or "P1"},
            "page 15 days back (cursor)": {"cursor": middle},
        }  # fmt: skip
        rows: list[tuple[str, float, float]] = []

        def get(path: str, **params: Any) -> Any:
            answer = client.get(path, query_string=params, headers=BEARER)
            assert answer.status_code == 200, (path, params, answer.status_code)
            return answer

        rows.append(("console: overview", *timed(lambda: get("/console/"), args.samples)))
        for name, query in queries.items():
            rows.append((f"console: deliveries, {name}", *timed(lambda q=query: get("/console/deliveries", **q),
                                                                  args.samples)))  # fmt: skip
        rows.append(("console: a dead delivery", *timed(lambda: get(f"/console/deliveries/{some_dead.id}"),
                                                         args.samples)))  # fmt: skip
        rows.append(("console: an unmatched delivery",
                     *timed(lambda: get(f"/console/deliveries/{some_unmatched.id}"), args.samples)))  # fmt: skip
        for name, query in queries.items():
            api_query = {**query, "limit": 50}
            for moment in ("since", "until"):
                if moment in api_query:
                    api_query[moment] += ":00Z"
            rows.append((f"/v1/deliveries, {name}", *timed(lambda q=api_query: get("/v1/deliveries", **q),
                                                            args.samples)))  # fmt: skip
        rows.append(("overview counts (7 statuses × 2 ranges, 24 hours, Knock answers)",
                     *timed(lambda: (store.count_by_status(now - DAY_MS), store.count_by_status(now - 7 * DAY_MS),
                                     store.received_per_hour(24), store.knock_answers_since(now - DAY_MS)),
                            args.samples)))  # fmt: skip

        print(f"\n{written:,} records; {args.samples} requests each after two warm-ups.\n")
        print("| Request | Median ms | p99 ms |")
        print("|---|---:|---:|")
        for name, median, p99 in rows:
            print(f"| {name} | {median:.1f} | {p99:.1f} |")
        print(f"\nRedis memory: {used / written:,.0f} bytes per record with its indexes ({used / 2**20:,.0f} MiB).\n")
        print("| Keys | Count | Bytes per record |")
        print("|---|---:|---:|")
        for kind, count, per_record in memory_by_kind(relay.redis, written):
            print(f"| {kind} | {count:,} | {per_record:,.0f} |")
        worst = max(max(p99 for _, _, p99 in rows), 0.0)
        slowest = max(median for _, median, _ in rows)
        print(f"\nslowest median {slowest:.1f} ms (target 50), worst p99 {worst:.1f} ms (target 150)")
        return 0 if slowest <= 50 and worst <= 150 else 1
    finally:
        server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
