"""The relay's benchmark: one command, every figure in BENCHMARKS.md.

    python3 dev.py bench   (or .venv/bin/python bench/run.py [--seconds 5] [--repeat 3]
                                   [--only ingest,worker,memory,instructions,hostile,search,capacity,attribution])

Starts everything on free loopback ports (its own redis-server, a fast Knock stub, the relay
under the shipped gunicorn settings, a bare Flask app and django-anymail's Mailgun view under the
same settings) and reports:

  (a) the bare-Flask ceiling in req/s;
  (b) req/s, p50/p99 latency and CPU ms per request of the web workers (read from /proc) for
      /webhooks/mime, Mailgun route parsed fields and Mailgun route body-mime, each request with
      its own Message-ID and signed token (bodies generated before the load, load from wrk);
  (c) the ratios to bare Flask (its runs and the relay's alternate; the median of the pairs'
      ratios) and to anymail;
  (d) deliveries/s of one worker process against a fast stub and a 50 ms stub, by thread count
      (timed from its first delivery; with its start too);
  (e) peak RSS growth of a web worker for a 5 MB and a 25 MB email;
  (f) Redis commands per webhook and per delivery (INFO commandstats deltas);
  (g) instructions per request of the relay, bare Flask and anymail in process, counted by
      valgrind's callgrind (bench/instructions.py): the figure that does not move with load.

Needs `wrk` and `valgrind` (Debian packages) and installs bench/requirements.txt (Django, django-anymail) into
the running interpreter's environment when missing. It is a script, not a test: numbers on a
shared machine move; instruction counts do not, CPU time per request moves less than req/s.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIGNING_KEY = "bench-signing-key"
BASIC = ("relay", "bench-secret")
AUTH = "Basic " + base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()
TICKS = os.sysconf("SC_CLK_TCK")
sys.path.insert(0, str(ROOT))


# Processes -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[Any]:
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.5)  # the workers boot after the master listens
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not open")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def status_kib(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match[1]) if match else 0


def redis_commands(port: int) -> dict[str, int]:
    import redis

    stats = redis.Redis(port=port).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    return {k: v for k, v in delta.items() if k not in ("info", "ping", "flushdb", "config|get")}


# Payloads --------------------------------------------------------------------------------------

HTML = (
    "<html><body>"
    + "".join(
        f'<p style="color:#333;font-family:Arial">Line {n}: the two-bedroom on Maple Street is still available; '
        f'tours run Friday at 10am and Saturday at noon. <a href="https://acme-living.com/u/{n}">Listing</a></p>'
        for n in range(30)
    )
    + "</body></html>"
)
TEXT = "\n".join(f"Line {n}: the two-bedroom on Maple Street is still available; tours Friday." for n in range(30))


def headers_for(n: int, unique: str) -> list[tuple[str, str]]:
    return [
        (
            "Received",
            f"from mail-{n}.example.com (mail-{n}.example.com [203.0.113.{n % 250}]) by mx.acme-living.com "
            f"with ESMTPS id {unique}; Tue, 31 Mar 2020 16:22:06 -0700",
        ),
        ("Received", "by mail-{n}.example.com with SMTP id x; Tue, 31 Mar 2020 16:22:05 -0700"),
        (
            "DKIM-Signature",
            "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=20200101; h=from:to:subject:date;"
            " bh=" + "A" * 44 + "; b=" + "B" * 340,
        ),
        ("Authentication-Results", "mx.acme-living.com; dkim=pass header.d=example.com; spf=pass"),
        ("From", "Renter Person <renter@example.com>"),
        ("To", "Leasing Office <leasing@acme-living.com>"),
        ("Subject", "=?utf-8?q?Is_the_2BR_still_available=3F_=E2=80=93_tour?="),
        ("Date", "Tue, 31 Mar 2020 16:22:06 -0700"),
        ("Message-ID", f"<{unique}@mail.example.com>"),
        ("MIME-Version", "1.0"),
        ("X-Mailer", "Bench Mail 1.0"),
        ("List-Unsubscribe", "<mailto:unsubscribe@example.com>"),
        ("Thread-Index", "AQHV" + "x" * 40),
        ("Content-Type", 'multipart/alternative; boundary="bench-boundary"'),
    ]


def mime_bytes(n: int, unique: str) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers_for(n, unique))
    body = (
        f"\r\n--bench-boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{TEXT}\r\n"
        f"--bench-boundary\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{HTML}\r\n--bench-boundary--\r\n"
    )
    return (head + body).encode()


def mailgun_signature() -> dict[str, str]:
    timestamp, token = str(int(time.time())), uuid.uuid4().hex
    digest = hmac.new(SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": digest}


def mailgun_parsed(n: int, unique: str) -> bytes:
    headers = [list(pair) for pair in headers_for(n, unique) if pair[0] != "Content-Type"]
    fields = {
        "recipient": "leasing@acme-living.com",
        "sender": "renter@example.com",
        "from": "renter@example.com",
        "subject": "Is the 2BR still available?",
        "body-plain": TEXT,
        "body-html": HTML,
        "stripped-text": TEXT[:200],
        "message-headers": json.dumps(headers),
        "Message-Id": f"<{unique}@mail.example.com>",
        **mailgun_signature(),
    }
    return urlencode(fields).encode()


def mailgun_mime(n: int, unique: str) -> bytes:
    fields = {
        "recipient": "leasing@acme-living.com",
        "sender": "renter@example.com",
        "body-mime": mime_bytes(n, unique).decode(),
        **mailgun_signature(),
    }
    return urlencode(fields).encode()


SCENARIOS: dict[str, tuple[str, str, Callable[[int, str], bytes]]] = {
    # name: (relay path, content type, body maker); anymail handles the two Mailgun ones.
    "mime": ("/webhooks/mime", "message/rfc822", mime_bytes),
    "mailgun-parsed": ("/webhooks/mailgun/inbound", "application/x-www-form-urlencoded", mailgun_parsed),
    "mailgun-mime": ("/webhooks/mailgun/inbound", "application/x-www-form-urlencoded", mailgun_mime),
}
ANYMAIL_PATH = "/anymail/mailgun/inbound/"


def write_bodies(folder: Path, name: str, maker: Callable[[int, str], bytes], count: int) -> Path:
    path = folder / f"{name}.bodies"
    with path.open("wb") as out:
        for n in range(count):
            out.write(maker(n, f"{name}-{n}-{uuid.uuid4().hex}") + b"\0")
    return path


# Load ------------------------------------------------------------------------------------------


def run_wrk(
    url: str, bodies: Path, content_type: str, seconds: int, connections: int = 8, skip: int = 0
) -> dict[str, float]:
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(ROOT / "bench" / "bodies.lua"),
            "-H",
            f"Content-Type: {content_type}",
            "-H",
            f"Authorization: {AUTH}",
            url,
            "--",
            str(bodies),
            str(skip),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    text = result.stdout

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", text, re.M)
        if not match:
            return float("nan")
        return float(match[1]) * {"us": 0.001, "ms": 1, "s": 1000}[match[2]]

    requests = int(re.search(r"(\d+) requests in", text)[1])  # type: ignore[index]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text)[1]),  # type: ignore[index]
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(non_2xx[1]) if non_2xx else 0,
    }


def measure(url: str, master: int, bodies: Path, content_type: str, seconds: int, redis_port: int | None = None,  # type: ignore[no-untyped-def]
            skip: int = 0):  # fmt: skip
    workers = children(master)
    before_cpu, before_cmd = cpu_seconds(workers), redis_commands(redis_port) if redis_port else {}
    stats = run_wrk(url, bodies, content_type, seconds, skip=skip)
    stats["cpu_ms"] = (cpu_seconds(workers) - before_cpu) * 1000 / max(stats["requests"], 1)
    stats["rss_mib"] = sum(status_kib(pid, "VmRSS") for pid in workers) / 1024
    if redis_port:
        delta = command_delta(before_cmd, redis_commands(redis_port))
        stats["redis"] = {k: round(v / max(stats["requests"], 1), 2) for k, v in sorted(delta.items())}
    return stats


def measure_median(repeat: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """`measure` `repeat` times in a row, each run on bodies of its own (a repeated Message-ID or
    token would be a cheaper duplicate); the run with the median CPU ms per request, with the
    spread of all runs."""
    return median_run([measure(*args, **kwargs, skip=i * 12_000) for i in range(repeat)])


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median CPU ms per request, with the CPU and req/s of every run."""
    chosen = dict(sorted(runs, key=lambda r: r["cpu_ms"])[len(runs) // 2])
    chosen["cpu_ms_runs"] = [round(r["cpu_ms"], 2) for r in runs]  # in the order they ran
    chosen["rps_runs"] = [round(r["rps"]) for r in runs]
    return chosen


# The stack -------------------------------------------------------------------------------------


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server") or os.environ.get("RELAY_TEST_REDIS_SERVER")
    if not binary:
        raise SystemExit("redis-server is needed (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def relay_env(redis_port: int, knock_port: int, **extra: str) -> dict[str, str]:
    return {
        "RELAY_ENV": "production",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "KNOCK_BASE_URL": f"http://127.0.0.1:{knock_port}",
        "KNOCK_API_KEY": "bench-key",
        "RELAY_API_TOKEN": "bench-token",
        "RELAY_WEBHOOK_BASIC_AUTH": f"{BASIC[0]}:{BASIC[1]}",
        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
        "RELAY_MAILBOX_DOMAINS": "acme-living.com",
        "KNOCK_DEFAULT_AGENT_USERNAME": "bench.agent",
        "RELAY_TRUSTED_AUTHSERV_IDS": "mx.acme-living.com",
        "RELAY_WORKER_PORT": "0",
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": "2",
        "RELAY_WEB_THREADS": "4",
        **extra,
    }


def gunicorn(app: str, port: int, env: dict[str, str], log: Path) -> Any:
    return process([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app], {**env, "PORT": str(port)}, log)


def register_prospect(web: str) -> None:
    request = urllib.request.Request(
        f"{web}/v1/prospects/P1",
        data=json.dumps({"emails": ["renter@example.com"], "agentUsername": "pat"}).encode(),
        method="PUT",
        headers={"Authorization": "Bearer bench-token", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()


def ensure_peer_installed() -> bool:
    try:
        import anymail  # noqa: F401
        import django  # noqa: F401
    except ImportError:
        print("installing bench/requirements.txt (Django, django-anymail) ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(ROOT / "bench" / "requirements.txt")], check=False
        )
    try:
        import anymail  # noqa: F401, F811
    except ImportError:
        return False
    return True


# Parts -----------------------------------------------------------------------------------------


def bench_ingest(folder: Path, redis_port: int, seconds: int, report: dict[str, Any], repeat: int = 1) -> None:
    """Bare Flask and the relay run side by side, and their loads alternate (bare, relay, bare,
    relay, ...) so that each relay run has a bare run of the same minute to be divided by: on a
    shared machine the speed of the whole machine drifts by a factor of two within minutes, which
    a ratio of runs taken minutes apart would read as a change of either app."""
    count = 12_000 * repeat
    bodies = {name: write_bodies(folder, name, maker, count) for name, (_, _, maker) in SCENARIOS.items()}
    env = relay_env(redis_port, free_port())
    bare_port, relay_port, anymail_port = free_port(), free_port(), free_port()
    with (
        gunicorn("bench.bare_app:app", bare_port, env, folder / "bare.log") as bare,
        gunicorn("wsgi:app", relay_port, env, folder / "relay.log") as relay,
    ):
        wait_port(bare_port)
        wait_http(f"http://127.0.0.1:{relay_port}/readyz")
        register_prospect(f"http://127.0.0.1:{relay_port}")
        for name, (path, ctype, _) in SCENARIOS.items():
            bare_runs, relay_runs = [], []
            for i in range(repeat):
                skip = i * 12_000
                bare_runs.append(measure(f"http://127.0.0.1:{bare_port}{path}", bare.pid, bodies[name], ctype,
                                         seconds, skip=skip))  # fmt: skip
                relay_runs.append(measure(f"http://127.0.0.1:{relay_port}{path}", relay.pid, bodies[name], ctype,
                                          seconds, redis_port, skip=skip))  # fmt: skip
            report["bare"][name] = median_run(bare_runs)
            report["relay"][name] = median_run(relay_runs)
            ratios = [r["rps"] / b["rps"] for b, r in zip(bare_runs, relay_runs, strict=True)]
            report["relay"][name]["rps_ratio_runs"] = [round(x, 2) for x in ratios]
            report["relay"][name]["rps_ratio"] = sorted(ratios)[len(ratios) // 2]
            if any(r["requests"] > 12_000 for r in relay_runs):
                report["notes"].append(f"{name}: more requests than pre-generated bodies; later ones were duplicates")
        # p99 at half the measured maximum: wrk's fixed connections cannot pace, so fewer of them.
        half = run_wrk(
            f"http://127.0.0.1:{relay_port}/webhooks/mime",
            write_bodies(folder, "half", mime_bytes, count),
            "message/rfc822",
            seconds,
            connections=2,
        )
        report["relay"]["mime-2-connections"] = half
    if ensure_peer_installed():
        anymail_env = {
            **env,
            "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
            "BENCH_BASIC_AUTH": f"{BASIC[0]}:{BASIC[1]}",
            "PYTHONPATH": str(ROOT),
        }
        with gunicorn("bench.anymail_site:application", anymail_port, anymail_env, folder / "anymail.log") as peer:
            wait_port(anymail_port)
            for name in ("mailgun-parsed", "mailgun-mime"):
                fresh = write_bodies(folder, f"anymail-{name}", SCENARIOS[name][2], count)
                url = f"http://127.0.0.1:{anymail_port}{ANYMAIL_PATH}"
                report["anymail"][name] = measure_median(repeat, url, peer.pid, fresh, SCENARIOS[name][1], seconds)
    else:
        report["notes"].append("django-anymail could not be installed: no peer figures")


#: Requests posted in the two callgrind runs of each app and path; their difference is measured.
INSTRUCTION_COUNTS = (100, 300)


def callgrind_instructions(args: list[str], env: dict[str, str]) -> int:
    """Instructions a run of bench/instructions.py executed, as valgrind's callgrind counts them."""
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         str(ROOT / "bench" / "instructions.py"), *args],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    collected = re.search(r"Collected : (\d+)", result.stderr)
    if result.returncode != 0 or not collected:
        raise SystemExit(f"callgrind run {args} failed:\n{result.stderr[-3000:]}")
    return int(collected[1])


def bench_instructions(folder: Path, redis_port: int, report: dict[str, Any]) -> None:
    """Instructions per request of each app, in process, through its WSGI callable: a figure that
    does not move with the machine's load, where CPU time here moves by a factor of two."""
    if not shutil.which("valgrind"):
        report["notes"].append("valgrind is not installed: no instruction counts (apt-get install valgrind)")
        return
    metrics = folder / "instructions-metrics"
    metrics.mkdir(exist_ok=True)
    env = {
        **os.environ,
        **relay_env(redis_port, free_port()),
        "BENCH_BASIC_AUTH": f"{BASIC[0]}:{BASIC[1]}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "PYTHONPATH": str(ROOT),
    }
    apps = ["bare", "relay"] + (["anymail"] if ensure_peer_installed() else [])
    jobs = [(which, name) for which in apps for name in SCENARIOS if not (which == "anymail" and name == "mime")]
    low, high = INSTRUCTION_COUNTS

    def per_request(job: tuple[str, str]) -> float:
        which, name = job
        fewer, more = (callgrind_instructions([which, name, str(n), str(high)], env) for n in (low, high))
        return (more - fewer) / (high - low)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for (which, name), figure in zip(jobs, pool.map(per_request, jobs), strict=True):
            report["instructions"].setdefault(which, {})[name] = figure


def delivered_count(client: Any, launched: float, limit: float = 300) -> int:
    if time.monotonic() - launched > limit:
        raise SystemExit("worker benchmark did not finish")
    return int(client.zcard("relay:idx:status:delivered"))


def bench_worker(folder: Path, redis_port: int, report: dict[str, Any], count: int = 3000) -> None:
    import redis

    from relay.config import load_settings
    from relay.intake import accept_email
    from relay.mime import parse_mime
    from relay.services import Services

    for delay_ms, threads_list in ((0, (1, 4, 8)), (50, (1, 4, 8, 16, 32))):
        knock_port = free_port()
        stub_env = {
            "BENCH_STUB_DELAY_MS": str(delay_ms),
            "WEB_CONCURRENCY": "2",
            "RELAY_WEB_THREADS": "64",
            "PYTHONPATH": str(ROOT),
        }
        with process(
            [
                str(BIN / "gunicorn"),
                "-b",
                f"127.0.0.1:{knock_port}",
                "-k",
                "gthread",
                "--threads",
                "64",
                "-w",
                "2",
                "--no-control-socket",
                "bench.knock_stub:app",
            ],
            stub_env,
            folder / "stub.log",
        ):
            wait_port(knock_port)
            env = relay_env(redis_port, knock_port)
            for threads in threads_list:
                redis.Redis(port=redis_port).flushdb()
                services = Services(load_settings(env))
                services.directory.put_prospect("P1", ["renter@example.com"], "pat")
                n = count if delay_ms == 0 else min(count, threads * 60)
                for i in range(n):
                    accept_email(services, parse_mime(mime_bytes(i, f"w{delay_ms}-{threads}-{i}")), "bench")
                before = redis_commands(redis_port)
                launched = time.monotonic()
                with process(
                    [sys.executable, "-m", "relay", "worker", "--threads", str(threads)], env, folder / "worker.log"
                ) as worker:
                    client = redis.Redis(port=redis_port)
                    # Throughput of a running worker: timed from its first delivery, so that the
                    # process's start (imports, connections: a second or so) is not counted.
                    while (first := delivered_count(client, launched)) == 0:
                        time.sleep(0.005)
                    started, cpu_started = time.monotonic(), cpu_seconds([worker.pid])
                    while delivered_count(client, launched) < n:
                        time.sleep(0.02)
                    elapsed = time.monotonic() - started
                    cpu = cpu_seconds([worker.pid]) - cpu_started
                    with_start = n / (time.monotonic() - launched)
                delta = command_delta(before, redis_commands(redis_port))
                key = f"stub {delay_ms} ms, {threads} threads"
                timed = n - first
                report["worker"][key] = {
                    "deliveries": n,
                    "per_second": round(timed / elapsed, 1),
                    "per_second_with_start": round(with_start, 1),
                    "cpu_ms": round(cpu * 1000 / timed, 2),
                    "redis": {k: round(v / n, 2) for k, v in sorted(delta.items())},
                }
                print(f"  worker {key}: {timed / elapsed:.0f}/s ({with_start:.0f}/s with its start)", file=sys.stderr)


#: Requests posted after the large email, to see that a worker's memory does not grow with them.
MORE_REQUESTS = 10_000


def bench_memory(folder: Path, redis_port: int, report: dict[str, Any]) -> None:
    for size_mb in (5, 25):
        attachment = base64.encodebytes(os.urandom(size_mb * 1024 * 1024 * 3 // 4)).replace(b"\n", b"\r\n")
        raw = (
            mime_bytes(0, f"big-{size_mb}")
            .replace(
                b"--bench-boundary--\r\n",
                b"--bench-boundary\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; "
                b'filename="lease.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                + attachment
                + b"--bench-boundary--\r\n",
            )
            .replace(b"multipart/alternative", b"multipart/mixed")
        )
        port = free_port()
        env = relay_env(redis_port, free_port(), WEB_CONCURRENCY="1")
        with gunicorn("wsgi:app", port, env, folder / "memory.log") as relay:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            (worker,) = children(relay.pid)
            for _ in range(3):  # warm up: imports and first requests
                post(port, mime_bytes(1, uuid.uuid4().hex))
            rss_before = status_kib(worker, "VmRSS")
            status = post(port, raw)
            peak = status_kib(worker, "VmHWM")
            report["memory"][f"{size_mb} MB"] = {
                "body_mib": round(len(raw) / 2**20, 1),
                "status": status,
                "peak_growth_mib": round((peak - rss_before) / 1024, 1),
                "ratio": round((peak - rss_before) * 1024 / len(raw), 2),
            }
            if size_mb == 5:
                # RSS after each half: growth in the first half only is warm-up, in both a leak.
                rss = [status_kib(worker, "VmRSS")]
                for _ in range(2):
                    for _ in range(MORE_REQUESTS // 2):
                        post(port, mime_bytes(2, uuid.uuid4().hex))
                    rss.append(status_kib(worker, "VmRSS"))
                report["memory"][f"rss after {MORE_REQUESTS:,} more requests"] = {
                    "growth_mib": round((rss[2] - rss[0]) / 1024, 1),
                    "second_half_growth_mib": round((rss[2] - rss[1]) / 1024, 1),
                }


def post(port: int, raw: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/webhooks/mime",
        data=raw,
        method="POST",
        headers={"Content-Type": "message/rfc822", "Authorization": AUTH},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return int(answer.status)


# Report ----------------------------------------------------------------------------------------


def print_ingest(report: dict[str, Any]) -> None:
    print("\n## Ingest (10 KB email, wrk -t1 -c8)\n")
    print(
        "| path | relay req/s | p50 ms | p99 ms | relay CPU ms/req | bare req/s | bare CPU ms/req | "
        "relay ÷ bare | anymail req/s | anymail CPU ms/req | relay ÷ anymail |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in SCENARIOS:
        relay, bare = report["relay"].get(name), report["bare"].get(name)
        if not relay or not bare:
            continue
        peer = report["anymail"].get(name)
        peer_cells = (
            f"{peer['rps']:.0f} | {peer['cpu_ms']:.2f} | {relay['rps'] / peer['rps']:.2f}" if peer else "– | – | –"
        )
        print(
            f"| {name} | {relay['rps']:.0f} | {relay['p50']:.1f} | {relay['p99']:.1f} | {relay['cpu_ms']:.2f} | "
            f"{bare['rps']:.0f} | {bare['cpu_ms']:.2f} | {relay.get('rps_ratio', relay['rps'] / bare['rps']):.2f} | "
            f"{peer_cells} |"
        )
    spread = [(side, name, row["cpu_ms_runs"]) for side in ("relay", "bare", "anymail")
              for name, row in report[side].items() if len(row.get("cpu_ms_runs", [])) > 1]  # fmt: skip
    if spread:
        print("\nCPU ms/req of every run, in the order they ran (the median run is in the table):")
        for side, name, runs in spread:
            print(f"- {side} {name}: {runs}")
    ratios = [(name, row["rps_ratio_runs"]) for name, row in report["relay"].items() if row.get("rps_ratio_runs")]
    if ratios:
        print("\nrelay ÷ bare req/s of each pair of runs (bare and relay alternate; the table has the median):")
        for name, runs in ratios:
            print(f"- {name}: {runs}")
    half = report["relay"].get("mime-2-connections")
    if half:
        print(
            f"\n/webhooks/mime with 2 connections: {half['rps']:.0f} req/s, p50 {half['p50']:.1f} ms, "
            f"p99 {half['p99']:.1f} ms"
        )
    print("\nRedis commands per webhook (scripts count once, plus the commands they run):")
    for name in SCENARIOS:
        if name in report["relay"]:
            print(f"- {name}: {report['relay'][name].get('redis')}")


def print_report(report: dict[str, Any]) -> None:
    if report["relay"]:
        print_ingest(report)
    if report["worker"]:
        print(
            "\n## Worker (one process; timed from its first delivery)\n\n"
            "| Knock stub | deliveries/s | with the process's start | CPU ms/delivery | Redis commands/delivery |"
        )
        print("|---|---|---|---|---|")
        for key, row in report["worker"].items():
            figures = f"{row['per_second']} | {row['per_second_with_start']} | {row['cpu_ms']}"
            print(f"| {key} | {figures} | {row['redis']} |")
    if report["memory"]:
        print("\n## Memory (one web worker)\n")
        for key, row in report["memory"].items():
            print(f"- {key}: {row}")
    if report["instructions"]:
        counts = report["instructions"]
        print("\n## Instructions per request (callgrind, in process, no HTTP server)\n")
        print("| path | relay | bare Flask | anymail | relay ÷ bare | relay ÷ anymail |")
        print("|---|---|---|---|---|---|")
        for name in SCENARIOS:
            relay, bare = counts.get("relay", {}).get(name), counts.get("bare", {}).get(name)
            if relay is None or bare is None:
                continue
            peer = counts.get("anymail", {}).get(name)
            peer_figure, peer_ratio = (f"{peer / 1e6:.2f} M", f"{relay / peer:.2f}") if peer else ("–", "–")
            figures = f"{relay / 1e6:.2f} M | {bare / 1e6:.2f} M | {peer_figure}"
            print(f"| {name} | {figures} | {relay / bare:.1f} | {peer_ratio} |")
    for note in report["notes"]:
        print(f"\nnote: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="load per scenario")
    parser.add_argument("--only", default="ingest,worker,memory,instructions")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--repeat", type=int, default=1, help="runs per ingest scenario; the median is reported")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if parts & {"ingest", "worker", "memory"} and not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    report: dict[str, Any] = {
        "bare": {}, "relay": {}, "anymail": {}, "worker": {}, "memory": {}, "instructions": {}, "notes": [],
    }  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    redis_proc, redis_port = start_redis(folder)
    try:
        if "ingest" in parts:
            bench_ingest(folder, redis_port, args.seconds, report, max(1, args.repeat))
        if "worker" in parts:
            bench_worker(folder, redis_port, report)
        if "memory" in parts:
            bench_memory(folder, redis_port, report)
        if "instructions" in parts:
            bench_instructions(folder, redis_port, report)
        if "hostile" in parts:
            # Hostile input per endpoint and shape; its own processes and Redis (see bench/hostile.py).
            hostile = subprocess.run([sys.executable, str(Path(__file__).with_name("hostile.py"))], cwd=ROOT)
            report["notes"].append(f"bench/hostile.py exited {hostile.returncode} (0: every shape within target)")
        if "attribution" in parts:
            # Unmatched rate on a generated conversation corpus, before and with threads (bench/attribution.py).
            attribution = subprocess.run([sys.executable, str(Path(__file__).with_name("attribution.py"))], cwd=ROOT)
            report["notes"].append(f"bench/attribution.py exited {attribution.returncode}")
        if "capacity" in parts:
            # What one Redis primary sustains; its own Redis, replica and processes (see bench/capacity.py).
            capacity = subprocess.run([sys.executable, str(Path(__file__).with_name("capacity.py"))], cwd=ROOT)
            report["notes"].append(f"bench/capacity.py exited {capacity.returncode}")
        if "search" in parts:
            # Searches over a month of mail; its own Redis (see bench/search.py).
            search = subprocess.run([sys.executable, str(Path(__file__).with_name("search.py"))], cwd=ROOT)
            report["notes"].append(f"bench/search.py exited {search.returncode} (0: every request within target)")
    finally:
        redis_proc.terminate()
    print(f"machine: {os.cpu_count()} cores, {platform_line()}; logs in {folder}")
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def platform_line() -> str:
    import platform

    return f"Python {platform.python_version()}, {platform.platform()}"


if __name__ == "__main__":
    sys.exit(main())
