"""The worker's own HTTP port: `/healthz` for its liveness probe."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import requests

from relay.services import Services
from relay.worker import RelayWorker, serve_health
from tests.helpers import free_port, relay_env, wait_until


def test_healthz_is_ok_while_every_thread_runs_and_failing_once_one_stops(settings: Any) -> None:
    worker = RelayWorker(Services(settings, patient=True), threads=2)
    worker.start()
    server = serve_health(worker, free_port())
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert requests.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        assert requests.get(f"{url}/other", timeout=5).status_code == 404
        worker.scheduler.stop()
        worker.scheduler.join(timeout=5)
        answer = requests.get(f"{url}/healthz", timeout=5)
        assert (answer.status_code, answer.json()["stoppedThreads"]) == (503, ["retry-scheduler"])
        worker.stop(10)
        # two consumers (queue and delay queue), two forwarding threads, the scheduler
        assert len(requests.get(f"{url}/healthz", timeout=5).json()["stoppedThreads"]) == 5
    finally:
        server.shutdown()


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
