"""The worker's own HTTP port: `/healthz` for its liveness probe."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import dramatiq
import requests

from relay.queue import register_forward_actor
from relay.services import Services
from relay.worker import build_forwarder, serve_health
from tests.helpers import free_port, relay_env, wait_until


def test_healthz_is_ok_while_every_thread_runs_and_failing_once_one_stops(settings: Any) -> None:
    services = Services(settings)
    register_forward_actor(services.broker, build_forwarder(services))
    worker = dramatiq.Worker(services.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    server = serve_health(worker, free_port())
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        assert requests.get(f"{url}/other", timeout=5).status_code == 404
        worker.stop(timeout=10_000)
        answer = requests.get(f"{url}/healthz", timeout=5)
        assert answer.status_code == 503
        assert len(answer.json()["stoppedThreads"]) == 4  # two consumers (queue and delay queue), two forwarders
    finally:
        server.shutdown()
        services.broker.close()


def test_worker_process_serves_healthz_and_refuses_a_taken_port(sandbox: Any) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", **relay_env(sandbox.url, RELAY_WORKER_PORT=str(port))}
    worker = subprocess.Popen([sys.executable, "-m", "relay", "worker"], env=env, stdout=subprocess.DEVNULL)
    try:

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout=30, interval=0.2)
        with socket.socket() as taken:
            taken.bind(("0.0.0.0", 0))
            taken.listen()
            env_taken = {**env, "RELAY_WORKER_PORT": str(taken.getsockname()[1])}
            second = subprocess.run([sys.executable, "-m", "relay", "worker"], env=env_taken, capture_output=True,
                                    text=True, timeout=60)  # fmt: skip
        assert second.returncode == 1
        assert second.stderr.startswith("configuration error: RELAY_WORKER_PORT: cannot listen on"), second.stderr
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0
