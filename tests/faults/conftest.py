"""Real faults for real processes: a Redis of the test's own (AOF on) that can be stopped, hung and
restarted, a TCP proxy in front of it that can be cut, and the relay's processes on top."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.conftest import Sandbox
from tests.e2e.conftest import BIN, spawn, stop
from tests.helpers import SANDBOX_KEY, basic_auth, free_port, redis_server_binary, relay_env, wait_until


class RedisServer:
    """A redis-server with AOF (everysec) on a fixed port and folder, so it can restart with its data."""

    def __init__(self, binary: str, *settings: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="relay-fault-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        #: Further redis-server settings (`--replicaof host port`, …).
        self.settings = settings

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder), "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", *self.settings],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, timeout=20, interval=0.05)

    def stop(self) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits, as in an orderly restart."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=20)

    def kill(self) -> None:
        """SIGKILL: the host is gone, with whatever it had not yet written or sent to a replica."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def hang(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.resume()
            self.process.kill()
            self.process.wait(timeout=10)


class TcpProxy:
    """Forwards a local port to a target; `cut()` drops every connection and refuses new ones until `mend()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut_off = threading.Event()
        self.closing = threading.Event()
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut_off.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self.cut_off.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def cut(self) -> None:
        self.cut_off.set()
        with self.lock:
            for sock in self.connections:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.connections.clear()

    def mend(self) -> None:
        self.cut_off.clear()

    def close(self) -> None:
        self.closing.set()
        self.cut()
        self.listener.close()


@pytest.fixture
def fault_redis() -> Iterator[RedisServer]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary: run the tests with `python3 dev.py test`")
    server = RedisServer(binary)
    server.start()
    yield server
    server.close()


@dataclass
class FaultStack:
    """Sandbox, gunicorn and workers as separate processes on the test's own Redis."""

    sandbox: Sandbox
    web_url: str
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self, redis_url: str | None = None, threads: int = 4) -> subprocess.Popen[bytes]:
        env = {**self.env, "RELAY_WORKER_PORT": str(free_port())}
        if redis_url:
            env["REDIS_URL"] = redis_url
        worker = spawn([sys.executable, "-m", "relay", "worker", "--threads", str(threads)], env,
                       self.logs / f"worker-{len(self.workers)}.log")  # fmt: skip
        self.workers.append(worker)
        return worker

    def post(self, raw: bytes, timeout: float = 10) -> requests.Response:
        headers = {**basic_auth(), "Content-Type": "message/rfc822"}
        return requests.post(f"{self.web_url}/webhooks/mime", data=raw, headers=headers, timeout=timeout)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.env['RELAY_API_TOKEN']}"}
        return requests.request(method, self.web_url + path, headers=headers, timeout=10, **kwargs)

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        return self.api("GET", f"/v1/deliveries/{delivery_id}").json()  # type: ignore[no-any-return]


def start_fault_stack(tmp_path: Path, redis_url: str, **overrides: str) -> FaultStack:
    sandbox_port, web_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = relay_env(
        sandbox_url,
        REDIS_URL=redis_url,
        PORT=str(web_port),
        WEB_CONCURRENCY="2",
        RELAY_WORKER_HEARTBEAT_TIMEOUT_SECONDS="3",
        RELAY_MAX_REQUEST_BYTES="65536",
        RELAY_REQUEUE_AFTER_SECONDS="4",
        **overrides,
    )
    stack = FaultStack(Sandbox(sandbox_url), f"http://127.0.0.1:{web_port}", env, tmp_path)
    sandbox_args = [sys.executable, "-m", "relay", "sandbox", "--port", str(sandbox_port), "--api-key", SANDBOX_KEY]
    stack.processes.append(spawn(sandbox_args, env, tmp_path / "sandbox.log"))
    stack.processes.append(spawn([str(BIN / "gunicorn"), "wsgi:app"], env, tmp_path / "web.log"))

    def up(url: str) -> bool:
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(lambda: up(f"{sandbox_url}/healthz") and up(f"{stack.web_url}/readyz"), timeout=30, interval=0.2)
    return stack


@pytest.fixture
def fault_stack(tmp_path: Path, fault_redis: RedisServer) -> Iterator[FaultStack]:
    stack = start_fault_stack(tmp_path, fault_redis.url)
    yield stack
    for process in [*stack.workers, *stack.processes]:
        if process.poll() is None:
            stop(process, timeout=15)


def web_worker_pids(stack: FaultStack) -> list[int]:
    """gunicorn's worker processes (children of its master)."""
    master = stack.processes[1].pid
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


__all__ = ["FaultStack", "RedisServer", "TcpProxy", "os", "start_fault_stack", "time", "web_worker_pids"]
