"""Real processes: `python -m relay sandbox`, `gunicorn wsgi:app`, `python -m relay worker`, Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Sandbox, SnsSigner, StorageStub, serve_storage
from tests.helpers import SANDBOX_KEY, free_port, provider_api_env, relay_env, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


REPLY_TAG_SECRET = "e2e-reply-tag-secret-0001"


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@dataclass
class Stack:
    url: str
    sandbox: Sandbox
    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = {**self.env, "RELAY_WORKER_PORT": str(free_port())}
        worker = spawn([sys.executable, "-m", "relay", "worker", "--threads", "2"], env, self.logs / "worker.log")
        self.workers.append(worker)
        return worker

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.env['RELAY_API_TOKEN']}", **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        return self.api("GET", f"/v1/deliveries/{delivery_id}").json()  # type: ignore[no-any-return]

    def wait_for_status(self, delivery_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(lambda: (d := self.delivery(delivery_id))["status"] == status and d, timeout=timeout)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def storage_stub() -> Iterator[StorageStub]:
    """Mailgun's message storage, for `delivered` events posted to the real web process."""
    stub, server = serve_storage()
    yield stub
    server.shutdown()


#: What the worker's boto3 reads from the standard chain, for the S3 server below.
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
S3_BUCKET = "relay-inbound"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3 API (moto's standalone server) with the bucket SES's S3 action writes to; its URL."""
    import boto3

    port = free_port()
    process = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               env={**AWS_TEST_CREDENTIALS, "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")  # fmt: skip

    def created() -> bool:
        try:
            client.create_bucket(Bucket=S3_BUCKET)
            return True
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    try:
        wait_until(created, timeout=30, interval=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, storage_stub: StorageStub, sns_server: SnsSigner, s3_server: str
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    sandbox_port, web_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = relay_env(
        sandbox_url,
        PORT=str(web_port),
        WEB_CONCURRENCY="2",
        # A killed worker's messages return after the heartbeat lapses (60 s in production).
        RELAY_WORKER_HEARTBEAT_TIMEOUT_SECONDS="3",
        **provider_api_env(storage_stub.url),
        # SES through SNS: the signing certificate comes from a local HTTPS stand-in the processes trust.
        RELAY_SNS_CERTIFICATE_ORIGINS=sns_server.origin,
        REQUESTS_CA_BUNDLE=sns_server.ca_file,
        # SES through S3: the stored message comes from a real S3 API server.
        RELAY_SES_S3_BUCKETS=S3_BUCKET,
        RELAY_SES_S3_ENDPOINT_URL=s3_server,
        **AWS_TEST_CREDENTIALS,
        # Reply tags are signed; the providers' fixtures still carry unsigned ones, which route while
        # unsigned tags are accepted (a wrong signature never does).
        RELAY_REPLY_TAG_SECRET=REPLY_TAG_SECRET,
        RELAY_ACCEPT_UNSIGNED_REPLY_TAGS="true",
        RELAY_REPLY_MAILBOX="leasing@reply.acme-living.com",
    )
    sandbox = spawn(
        [sys.executable, "-m", "relay", "sandbox", "--port", str(sandbox_port), "--api-key", SANDBOX_KEY],
        env,
        logs / "sandbox.log",
    )
    web = spawn([str(BIN / "gunicorn"), "wsgi:app"], env, logs / "web.log")
    stack = Stack(f"http://127.0.0.1:{web_port}", Sandbox(sandbox_url), env, logs)

    def up(url: str) -> bool:
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(lambda: up(f"{sandbox_url}/_sandbox/health") and up(f"{stack.url}/readyz"), timeout=30, interval=0.2)
        yield stack
    finally:
        for process in [*stack.workers, web, sandbox]:
            stop(process)


@pytest.fixture
def e2e(stack: Stack) -> Iterator[Stack]:
    stack.sandbox.call("POST", "/_sandbox/reset").raise_for_status()
    worker = stack.start_worker()
    yield stack
    for process in stack.workers:
        stop(process)
    stack.workers.clear()
    assert worker.returncode is not None
