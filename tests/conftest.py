"""Shared fixtures: a real Redis, a real Knock sandbox over HTTP, the app from its factory."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from werkzeug.serving import make_server

from relay.app import create_app
from relay.config import Settings, load_settings
from relay.knock.sandbox import create_sandbox
from relay.services import Services
from relay.worker import RelayWorker
from tests.helpers import (
    BREVO_API_KEY,
    MANDRILL_API_KEY,
    POSTMARK_TOKEN,
    REDIS_URL,
    RESEND_API_KEY,
    SANDBOX_KEY,
    free_port,
    redis_server_binary,
    relay_env,
    wait_until,
)


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.exit(f"no Redis at {REDIS_URL}: run the tests with `python3 dev.py test`", returncode=2)
    return client


@pytest.fixture(autouse=True)
def clean_redis(redis_client: redis.Redis) -> Iterator[None]:
    redis_client.flushdb()
    yield


@dataclass
class Sandbox:
    """The Knock sandbox served over real HTTP, with helpers for its control surface."""

    url: str

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", {"x-api-key": SANDBOX_KEY})
        return requests.request(method, self.url + path, timeout=10, **kwargs)

    def seed(self, prospect_id: str, agent: str = "sandbox.agent") -> None:
        self.call("PUT", f"/_sandbox/prospects/{prospect_id}", json={"agentUsername": agent}).raise_for_status()

    def fault(self, **fault: Any) -> None:
        self.call("POST", "/_sandbox/faults", json=fault).raise_for_status()

    def requests(self, kind: str = "email") -> list[dict[str, Any]]:
        logged = self.call("GET", "/_sandbox/requests").json()["requests"]
        return [r for r in logged if r["kind"] == kind and r["status"] != "started"]

    def started(self) -> list[dict[str, Any]]:
        return [r for r in self.call("GET", "/_sandbox/requests").json()["requests"] if r["status"] == "started"]

    def events(self, prospect_id: str) -> list[dict[str, Any]]:
        """Every email logged for the prospect, all pages."""
        events: list[dict[str, Any]] = []
        cursor: str | None = "0"
        while cursor is not None:
            response = self.call("GET", f"/prospect/{prospect_id}/events", params={"cursor": cursor, "limit": 200})
            if response.status_code != 200:
                return events
            events += response.json()["events"]
            cursor = response.json()["nextCursor"]
        return events

    def prospect(self, prospect_id: str) -> dict[str, Any]:
        return self.call("GET", f"/prospect/{prospect_id}").json()["prospect"]


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    server = make_server("127.0.0.1", free_port(), create_sandbox(SANDBOX_KEY), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Sandbox(f"http://127.0.0.1:{server.server_port}")
    server.shutdown()


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Sandbox:
    sandbox_server.call("POST", "/_sandbox/reset").raise_for_status()
    return sandbox_server


@pytest.fixture
def make_settings(sandbox: Sandbox) -> Callable[..., Settings]:
    def build(**overrides: str) -> Settings:
        return load_settings(relay_env(sandbox.url, **overrides))

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def services(app) -> Services:  # type: ignore[no-untyped-def]
    return app.extensions["relay"]  # type: ignore[no-any-return]


class RunningWorker:
    """The real worker (forward actor, retry scheduler) consuming the real Redis queue, in this process's threads."""

    def __init__(self, settings: Settings) -> None:
        self.services = Services(settings, patient=True)
        self.worker = RelayWorker(self.services, threads=2, idle_poll_ms=100)
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop(10)


@pytest.fixture
def start_worker() -> Iterator[Callable[[Settings], RunningWorker]]:
    running: list[RunningWorker] = []

    def start(settings: Settings) -> RunningWorker:
        worker = RunningWorker(settings)
        running.append(worker)
        return worker

    yield start
    for worker in running:
        worker.stop()


@pytest.fixture
def worker(start_worker: Callable[[Settings], RunningWorker], settings: Settings) -> RunningWorker:
    return start_worker(settings)


@dataclass
class StorageStub:
    """Stands in for Mailgun's message storage and the providers' APIs: serves each one's fixture
    (or what a test put in `answers` for a path), counts requests, can fail."""

    url: str
    seen: list[dict[str, Any]]
    failures: list[int]
    #: Bodies served instead of the fixture, by request path.
    answers: dict[str, bytes] = field(default_factory=dict)


def serve_storage() -> tuple[StorageStub, Any]:
    from flask import Flask, Response, request

    from tests.helpers import payload

    app = Flask("mailgun-storage-stub")
    stub = StorageStub("", [], [])

    def answer(name: str, key_ok: bool) -> Response:
        stub.seen.append({"path": request.path, "auth": request.authorization, "accept": request.headers.get("Accept"),
                          "query": request.query_string.decode()})  # fmt: skip
        if stub.failures:
            status = stub.failures.pop(0)  # a redirect points elsewhere on this server: it must not be followed
            return Response("busy", status=status, headers={"Location": "/elsewhere"} if status in (301, 302) else {})
        if not key_ok:
            return Response('{"error": "bad key"}', status=401, mimetype="application/json")
        return Response(stub.answers.get(request.path) or payload(name), mimetype="application/json")

    @app.get("/v3/domains/<domain>/messages/<key>")
    def stored_message(domain: str, key: str) -> Response:
        return answer("mailgun/stored-message.json", True)

    @app.get("/messages/outbound/<message_id>/details")
    def postmark_details(message_id: str) -> Response:
        return answer(
            "postmark/outbound-details.json", request.headers.get("X-Postmark-Server-Token") == POSTMARK_TOKEN
        )

    @app.get("/emails/receiving/<email_id>")
    def resend_received(email_id: str) -> Response:
        return answer("resend/received-email.json", request.headers.get("Authorization") == f"Bearer {RESEND_API_KEY}")

    @app.get("/emails/<email_id>")
    def resend_sent(email_id: str) -> Response:
        return answer("resend/sent-email.json", request.headers.get("Authorization") == f"Bearer {RESEND_API_KEY}")

    @app.post("/api/1.0/messages/content.json")
    def mandrill_content() -> Response:
        asked = request.get_json(silent=True) or {}
        if asked.get("id") == "unknown":
            stub.seen.append({"path": request.path})
            return Response('{"status": "error", "code": 11, "name": "Unknown_Message", "message": "No message"}',
                            status=500, mimetype="application/json")  # fmt: skip
        return answer("mandrill/content.json", asked.get("key") == MANDRILL_API_KEY)

    @app.get("/v3/smtp/emails")
    def brevo_list() -> Response:
        return answer("brevo/email-list.json", request.headers.get("api-key") == BREVO_API_KEY)

    @app.get("/v3/smtp/emails/<uuid>")
    def brevo_content(uuid: str) -> Response:
        return answer("brevo/email-content.json", request.headers.get("api-key") == BREVO_API_KEY)

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stub.url = f"http://127.0.0.1:{server.server_port}"
    return stub, server


@pytest.fixture
def storage() -> Iterator[StorageStub]:
    stub, server = serve_storage()
    yield stub
    server.shutdown()


@pytest.fixture
def outside_storage() -> Iterator[StorageStub]:
    """A second storage server on an origin that is not allow-listed."""
    stub, server = serve_storage()
    yield stub
    server.shutdown()


@pytest.fixture
def own_redis() -> Iterator[Callable[..., str]]:
    """Start a redis-server of the test's own with the given settings (`own_redis("--appendonly", "yes")`); its URL."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary: run the tests with `python3 dev.py test`")
    started: list[subprocess.Popen[bytes]] = []

    def start(*settings: str) -> str:
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="relay-test-redis-")
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "", *settings],
            stdout=subprocess.DEVNULL,
        )
        started.append(process)
        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), timeout=10)
        return f"redis://127.0.0.1:{port}/0"

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@dataclass
class SnsSigner:
    """Stands in for SNS: an RSA key whose certificate a local HTTPS server hands out, and that
    signs messages the way SNS documents (v1 SHA1, v2 SHA256 over `Key\\nValue\\n`)."""

    origin: str
    ca_file: str
    key: Any
    seen: list[str]

    @property
    def cert_url(self) -> str:
        return f"{self.origin}/SimpleNotificationService-test.pem"

    def sign(self, message: dict[str, Any], version: str = "1", cert_url: str | None = None) -> dict[str, Any]:
        import base64

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        message = {**message, "SignatureVersion": version, "SigningCertURL": cert_url or self.cert_url}
        fields = (
            ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
            if message["Type"] == "Notification"
            else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        )
        text = "".join(f"{name}\n{message[name]}\n" for name in fields if name in message)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {**message, "Signature": base64.b64encode(signature).decode()}


def self_signed_certificate(directory: Path, stem: str) -> tuple[Any, bytes, Path, Path]:
    """A fresh RSA key and a self-signed certificate for 127.0.0.1 (named `sns.test`), written to
    `<stem>.pem` and `<stem>-key.pem` in `directory`: (key, certificate PEM, both paths)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return key, pem, cert_file, key_file


def serve_sns(directory: Path) -> tuple[SnsSigner, Any]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate: it serves that certificate as
    the SNS signing certificate and answers subscription confirmations."""
    from flask import Flask, Response, request

    key, pem, cert_file, key_file = self_signed_certificate(directory, "sns")
    app = Flask("sns-stub")
    signer = SnsSigner("", str(cert_file), key, [])

    @app.get("/", defaults={"name": ""})
    @app.get("/<path:name>")
    def anything(name: str) -> Response:
        signer.seen.append(request.full_path)
        if name.endswith(".pem"):
            return Response(pem, mimetype="application/x-pem-file")
        return Response("<ConfirmSubscriptionResponse/>", mimetype="text/xml")

    server = make_server("127.0.0.1", free_port(), app, threaded=True, ssl_context=(str(cert_file), str(key_file)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    signer.origin = f"https://127.0.0.1:{server.server_port}"
    return signer, server


@pytest.fixture(scope="session")
def sns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SnsSigner]:
    signer, server = serve_sns(tmp_path_factory.mktemp("sns"))
    yield signer
    server.shutdown()


@pytest.fixture
def sns(sns_server: SnsSigner, monkeypatch: pytest.MonkeyPatch) -> SnsSigner:
    """The SNS stand-in, trusted by `requests` in this process for the test's duration."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sns_server.ca_file)
    sns_server.seen.clear()
    return sns_server
