"""What one Redis primary sustains with this relay: Redis CPU and memory per email, and a sizing table.

    .venv/bin/python bench/capacity.py [--emails 3000] [--concurrency 8]
    (or python3 dev.py bench --only capacity)

For RELAY_REDIS_MIN_REPLICAS 0 (a lone primary) and 1 (a primary with one replica), starts its own
redis-server (AOF everysec, noeviction, as production should run), the shipped gunicorn settings,
a Knock stub that answers at once and one worker, then:

  1. posts `--emails` emails (about 3 KB of text each, one prospect) with `--concurrency` clients,
     the worker stopped: Redis CPU time (its process's, from /proc) and memory per accepted email,
     and the webhook's latency;
  2. starts the worker and lets it deliver them all: Redis CPU time per delivery, memory per
     record while the sent body is kept (RELAY_SENT_BODY_TTL_SECONDS, a day by default);
  3. waits until the sent bodies expire: memory per record for the rest of its lifetime.

Redis runs commands on one thread, so one core of it sustains 1 / (CPU per email) emails a second;
that is the saturation figure printed (the web and worker tiers scale out, Redis does not). A
script, not a test: the figures are CPU time, which moves less than throughput on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402

from bench.run import AUTH, BIN, free_port, process, register_prospect, relay_env, wait_http, wait_port  # noqa: E402
from bench.search import memory_by_kind  # noqa: E402
from dev import redis_server_binary  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SENT_BODY_TTL = 4
BODY = "\n".join(f"Line {n}: is the two bedroom on the third floor still available for June?" for n in range(40))


def redis_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def email(n: int, run: str) -> bytes:
    return (
        f"From: Renter <renter@example.com>\r\nTo: Leasing <leasing@acme-living.com>\r\n"
        f"Subject: Apartment question {n}\r\nMessage-ID: <cap-{run}-{n}@example.com>\r\n"
        f"Date: Tue, 31 Mar 2020 16:22:06 -0700\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{BODY}\r\n"
    ).encode()


def start_redis(stack: ExitStack, folder: Path, *extra: str) -> tuple[Any, int]:
    """A redis-server kept as production should run it (AOF everysec, noeviction); process and port."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", *extra]  # fmt: skip
    server = stack.enter_context(process(args, log=folder / "redis.log"))
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return server, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def delivered(client: redis.Redis) -> int:
    return int(client.zcard("relay:idx:status:delivered"))


def measure(folder: Path, emails: int, concurrency: int, replicas: int) -> dict[str, Any]:
    with ExitStack() as stack:
        primary, port = start_redis(stack, folder / "primary")
        client = redis.Redis(port=port)
        if replicas:
            _, replica_port = start_redis(stack, folder / "replica", "--replicaof", "127.0.0.1", str(port))
            link = redis.Redis(port=replica_port)
            while link.info("replication").get("master_link_status") != "up":
                time.sleep(0.1)
        knock_port, web_port = free_port(), free_port()
        env = relay_env(port, knock_port, RELAY_REDIS_MIN_REPLICAS=str(replicas),
                        RELAY_SENT_BODY_TTL_SECONDS=str(SENT_BODY_TTL), PYTHONPATH=str(ROOT))  # fmt: skip
        stub = [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{knock_port}", "-k", "gthread", "--threads", "32", "-w", "1",
                "--no-control-socket", "bench.knock_stub:app"]  # fmt: skip
        stack.enter_context(process(stub, env, folder / "stub.log"))
        web_command = [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"]
        stack.enter_context(process(web_command, {**env, "PORT": str(web_port)}, folder / "web.log"))
        wait_port(knock_port)
        web = f"http://127.0.0.1:{web_port}"
        wait_http(f"{web}/readyz")
        register_prospect(web)
        time.sleep(1.5)  # AOF and replication settle
        memory_before = int(client.info("memory")["used_memory"])
        cpu_before = redis_cpu(primary.pid)
        latencies = post_all(web, emails, concurrency, f"r{replicas}")
        cpu_ingest = redis_cpu(primary.pid) - cpu_before
        memory_queued = int(client.info("memory")["used_memory"]) - memory_before
        with process([sys.executable, "-m", "relay", "worker", "--threads", "8"], env, folder / "worker.log"):
            cpu_before = redis_cpu(primary.pid)
            deadline = time.monotonic() + 300
            while delivered(client) < emails and time.monotonic() < deadline:
                time.sleep(0.1)
            cpu_delivery = redis_cpu(primary.pid) - cpu_before
            done = delivered(client)
            memory_delivered = int(client.info("memory")["used_memory"]) - memory_before
        time.sleep(SENT_BODY_TTL + 3)  # the sent bodies expire (Redis removes expired keys actively)
        memory_lifetime = int(client.info("memory")["used_memory"]) - memory_before
        keys = memory_by_kind(redis.Redis(port=port, decode_responses=True), emails)
    latencies.sort()
    return {
        "replicas": replicas,
        "emails": emails,
        "delivered": done,
        "redis_cpu_us_ingest": cpu_ingest / emails * 1e6,
        "redis_cpu_us_delivery": cpu_delivery / max(done, 1) * 1e6,
        "bytes_queued": memory_queued / emails,
        "bytes_delivered_with_body": memory_delivered / emails,
        "bytes_lifetime": memory_lifetime / emails,
        "webhook_ms_p50": statistics.median(latencies) * 1000,
        "webhook_ms_p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "keys": keys,
    }


def post_all(web: str, emails: int, concurrency: int, run: str) -> list[float]:
    headers = {"Authorization": AUTH, "Content-Type": "message/rfc822"}
    bodies = [email(n, run) for n in range(emails)]

    def post(chunk: range) -> list[float]:
        session = requests.Session()
        taken = []
        for n in chunk:
            started = time.perf_counter()
            answer = session.post(f"{web}/webhooks/mime", data=bodies[n], headers=headers, timeout=30)
            taken.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise SystemExit(f"webhook answered {answer.status_code}: {answer.text[:200]}")
        return taken

    chunks = [range(lane, emails, concurrency) for lane in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        return [t for lane in pool.map(post, chunks) for t in lane]


def print_report(results: list[dict[str, Any]]) -> None:
    columns = ["RELAY_REDIS_MIN_REPLICAS", "Redis CPU per email (accept + deliver)", "one Redis core sustains",
               "memory per queued email", "per record, body kept", "per record, rest of its life",
               "webhook p50 / p99"]  # fmt: skip
    print("\n| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|")
    for r in results:
        per_email = r["redis_cpu_us_ingest"] + r["redis_cpu_us_delivery"]
        cells = [
            str(r["replicas"]),
            f"{r['redis_cpu_us_ingest']:.0f} + {r['redis_cpu_us_delivery']:.0f} µs",
            f"{1e6 / per_email:,.0f} emails/s",
            f"{r['bytes_queued']:,.0f} B",
            f"{r['bytes_delivered_with_body']:,.0f} B",
            f"{r['bytes_lifetime']:,.0f} B",
            f"{r['webhook_ms_p50']:.1f} / {r['webhook_ms_p99']:.1f} ms",
        ]
        print("| " + " | ".join(cells) + " |")
    print("\nWhat a delivered record keeps, by kind of key (MEMORY USAGE per record, the run without replicas):\n")
    print("| key | keys | bytes per record |\n|---|---|---|")
    for kind, count, size in results[0]["keys"]:
        if size >= 1:
            print(f"| {kind} | {count:,} | {size:,.0f} |")
    lone = results[0]
    per_email_s = (lone["redis_cpu_us_ingest"] + lone["redis_cpu_us_delivery"]) / 1e6
    body_kept = lone["bytes_delivered_with_body"] - lone["bytes_lifetime"]
    print("\nSizing (records kept 30 days, sent bodies 1 day, the defaults):\n")
    print("| emails a day | Redis memory | Redis CPU, daily average | at a peak of 10x the average |")
    print("|---|---|---|---|")
    for per_day in (10_000, 100_000, 1_000_000):
        memory = per_day * 30 * lone["bytes_lifetime"] + per_day * body_kept
        cpu = per_day / 86400 * per_email_s * 100
        print(f"| {per_day:,} | {memory / 2**30:.1f} GB | {cpu:.2f} % of a core | {cpu * 10:.1f} % |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--emails", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="relay-bench-capacity-"))
    results = [measure(folder / f"r{replicas}", args.emails, args.concurrency, replicas) for replicas in (0, 1)]
    for r in results:
        if r["delivered"] < r["emails"]:
            raise SystemExit(f"only {r['delivered']} of {r['emails']} delivered: see the logs in {folder}")
    print(f"machine: {os.cpu_count()} cores; {args.emails} emails per run; logs in {folder}")
    print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
