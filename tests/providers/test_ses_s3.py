"""Amazon SES through S3: a receipt rule's S3 action stores the message and notifies through SNS;
the worker fetches the object from a real S3 API server (moto's standalone server on a loopback
port, spoken to by boto3 over HTTP with real signatures) and logs the email."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from relay.app import create_app
from relay.errors import ProviderUnavailable
from relay.providers.ses_s3 import read_stored_message
from tests.conftest import SnsSigner
from tests.e2e.conftest import BIN
from tests.helpers import (
    BEARER,
    SES_PATH,
    free_port,
    logged_as,
    payload_json,
    ses_notification,
    ses_post,
    wait_for_status,
    wait_until,
)

BUCKET = "relay-inbound"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def start_s3(*, authenticated_after: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server; with `authenticated_after`, requests after that many are checked against
    its own IAM, where the test's credentials do not exist (S3 answers 403)."""
    port = free_port()
    env = {**CREDENTIALS, "PATH": "/usr/bin:/bin"}
    if authenticated_after is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(authenticated_after)
    process = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            boto3.client("s3", endpoint_url=url, **_client_credentials()).list_buckets()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return process.poll() is None and False

    wait_until(answers, timeout=30, interval=0.2)
    return process, url


def _client_credentials() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # the standard chain the worker reads
    process, url = start_s3()
    client = boto3.client("s3", endpoint_url=url, **_client_credentials())
    client.create_bucket(Bucket=BUCKET)
    yield url, client
    process.terminate()
    process.wait(timeout=10)


def stored_message() -> bytes:
    """The email of the SES fixture, as SES's S3 action stores it (the raw MIME)."""
    return base64.b64decode(payload_json("ses/received-event.json")["content"])


def s3_notification(sns: SnsSigner, bucket: str, key: str, **receipt: Any) -> dict[str, Any]:
    """SES's notification of a message it stored in S3; `receipt` adds to its receipt (verdicts)."""
    event = payload_json("ses/received-event.json")
    del event["content"]
    event["receipt"].update(receipt)
    event["receipt"]["action"] = {"type": "S3", "topicArn": event["receipt"]["action"]["topicArn"],
                                  "bucketName": bucket, "objectKey": key}  # fmt: skip
    return ses_notification(sns, Message=json.dumps(event))


@pytest.fixture
def s3_settings(make_settings: Any, sns: SnsSigner, s3: tuple[str, Any]) -> Any:
    return make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin, RELAY_SES_S3_BUCKETS=BUCKET,
                         RELAY_SES_S3_ENDPOINT_URL=s3[0])  # fmt: skip


def post(client: Any, sns: SnsSigner, bucket: str, key: str, **receipt: Any) -> str:
    """The pending fetch an S3 notification is stored as (`receipt` adds to its receipt)."""
    answer = client.post(SES_PATH, **ses_post(s3_notification(sns, bucket, key, **receipt)))
    assert answer.status_code == 200, answer.json
    (pending,) = answer.json["deliveries"]
    return str(pending["id"])


def test_a_message_stored_in_s3_is_fetched_and_logged(
    s3_settings: Any, s3: tuple[str, Any], sns: SnsSigner, start_worker: Callable[..., Any], sandbox: Any
) -> None:
    s3[1].put_object(Bucket=BUCKET, Key="inbound/abc", Body=stored_message())
    sandbox.seed("4WXU6U2J", agent="pat")
    client = create_app(s3_settings).test_client()
    fetch_id = post(client, sns, BUCKET, "inbound/abc")
    start_worker(s3_settings)
    logged = logged_as(client, fetch_id)
    assert logged["prospectId"] == "4WXU6U2J" and logged["messageId"] == "CAF=visit-4711@mail.example.com"
    wait_for_status(client, logged["id"], "delivered")
    assert [e["subject"] for e in sandbox.events("4WXU6U2J")] == [logged["subject"]]
    # The same notification again (SNS retries): one email.
    again = client.post(SES_PATH, **ses_post(s3_notification(sns, BUCKET, "inbound/abc"))).json
    assert again["status"] == "duplicate"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing object", "the message is not in S3"),
        ("bucket not allowed", "is not in RELAY_SES_S3_BUCKETS"),
        ("client-side encryption", "client-side KMS encryption"),
        ("larger than the cap", "larger than RELAY_MAX_REQUEST_BYTES"),
    ],
)
def test_what_the_relay_will_never_read_goes_dead_with_the_reason(
    s3_settings: Any, s3: tuple[str, Any], sns: SnsSigner, start_worker: Callable[..., Any], case: str, reason: str
) -> None:
    bucket, key = BUCKET, f"inbound/{case.replace(' ', '-')}"
    if case == "bucket not allowed":
        bucket = "someone-elses"
        s3[1].create_bucket(Bucket=bucket)
        s3[1].put_object(Bucket=bucket, Key=key, Body=stored_message())
    elif case == "client-side encryption":
        s3[1].put_object(Bucket=BUCKET, Key=key, Body=b"\x00sealed",
                         Metadata={"x-amz-key-v2": "AQID", "x-amz-cek-alg": "AES/GCM/NoPadding"})  # fmt: skip
    elif case == "larger than the cap":
        s3[1].put_object(Bucket=BUCKET, Key=key, Body=stored_message() + b"x" * 70_000)
    client = create_app(s3_settings).test_client()
    fetch_id = post(client, sns, bucket, key)
    start_worker(s3_settings)
    dead = wait_for_status(client, fetch_id, "dead")
    assert reason in dead["lastError"], dead["lastError"]


def test_access_refused_by_s3_goes_dead_and_says_what_to_grant(
    make_settings: Any, sns: SnsSigner, start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    process, url = start_s3(authenticated_after=3)  # the readiness probe, the bucket, the object
    try:
        client = boto3.client("s3", endpoint_url=url, **_client_credentials())
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="inbound/denied", Body=stored_message())
        settings = make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin, RELAY_SES_S3_BUCKETS=BUCKET,
                                 RELAY_SES_S3_ENDPOINT_URL=url + "/")  # fmt: skip
        web = create_app(settings).test_client()
        fetch_id = post(web, sns, BUCKET, "inbound/denied")
        start_worker(settings)
        dead = wait_for_status(web, fetch_id, "dead")
        assert "S3 refused to give the message" in dead["lastError"] and "s3:GetObject" in dead["lastError"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_s3_that_does_not_answer_is_retried(
    make_settings: Any, sns: SnsSigner, start_worker: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin, RELAY_SES_S3_BUCKETS=BUCKET,
                             RELAY_SES_S3_ENDPOINT_URL=nowhere)  # fmt: skip
    web = create_app(settings).test_client()
    fetch_id = post(web, sns, BUCKET, "inbound/later")
    start_worker(settings)
    retrying = wait_for_status(web, fetch_id, "retrying")
    assert "S3 unreachable" in retrying["lastError"]
    assert web.get(f"/v1/deliveries/{fetch_id}", headers=BEARER).json["status"] in ("retrying", "queued")


class TricklingS3:
    """A server that answers any GetObject with its headers at once, then one byte a second; or,
    with `headers_too`, sends even its status line and headers a byte a second."""

    def __init__(self, *, headers_too: bool = False) -> None:
        self.headers_too = headers_too
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closing = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closing.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\nContent-Type: message/rfc822\r\n\r\n"
            if not self.headers_too:
                connection.sendall(head)
            for byte in head if self.headers_too else b"":
                if self.closing.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(1)
            while not self.closing.is_set():
                try:
                    connection.sendall(b"x")
                except OSError:
                    return
                time.sleep(1)

    def close(self) -> None:
        self.closing.set()
        self.listener.close()


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_an_s3_that_sends_a_byte_at_a_time_is_cut_off_at_the_deadline(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, headers_too: bool
) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = TricklingS3(headers_too=headers_too)
    try:
        settings = make_settings(RELAY_SES_S3_BUCKETS=BUCKET, RELAY_SES_S3_ENDPOINT_URL=server.url)
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="took more than 4 s"):
            read_stored_message(BUCKET, "inbound/slow", settings, deadline=4)
        assert time.monotonic() - started < 4 + 3  # not the hours 50,000 bytes would take
    finally:
        server.close()


def test_a_20_mb_message_is_read_within_twice_its_size(make_settings: Any, s3: tuple[str, Any]) -> None:
    body = stored_message() + b"\r\n" + b"a" * (20 * 1024 * 1024)
    s3[1].put_object(Bucket=BUCKET, Key="inbound/large", Body=body)
    settings = make_settings(RELAY_SES_S3_BUCKETS=BUCKET, RELAY_SES_S3_ENDPOINT_URL=s3[0],
                             RELAY_MAX_REQUEST_BYTES=str(30 * 1024 * 1024))  # fmt: skip
    tracemalloc.start()
    try:
        read = read_stored_message(BUCKET, "inbound/large", settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read == body
    assert peak < 2.5 * len(body), peak / len(body)


def test_a_virus_stored_in_s3_is_ignored_once_fetched_and_never_sent(
    s3_settings: Any, s3: tuple[str, Any], sns: SnsSigner, start_worker: Callable[..., Any], sandbox: Any
) -> None:
    """SES scans the message before storing it: the notification's virus verdict travels with the fetch."""
    s3[1].put_object(Bucket=BUCKET, Key="inbound/virus", Body=stored_message())
    sandbox.seed("4WXU6U2J", agent="pat")
    client = create_app(s3_settings).test_client()
    fetch_id = post(client, sns, BUCKET, "inbound/virus", virusVerdict={"status": "FAIL"})
    start_worker(s3_settings)
    logged = logged_as(client, fetch_id)
    assert (logged["status"], logged["reason"]) == ("ignored", "virus")
    assert sandbox.events("4WXU6U2J") == []
