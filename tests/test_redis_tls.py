"""REDIS_URL may be rediss://: the web side, the queue and the worker all speak TLS to Redis."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from relay.app import create_app
from tests.helpers import basic_auth, free_port, mime, redis_server_binary, wait_for_status, wait_until


@pytest.fixture
def tls_redis_url() -> Iterator[str]:
    binary = redis_server_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs redis-server and openssl")
    folder = Path(tempfile.mkdtemp(prefix="relay-tls-redis-"))
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "",
         "--dir", str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"

    def answers() -> bool:
        if process.poll() is not None:
            pytest.skip("this redis-server was built without TLS")
        try:
            return bool(redis.Redis.from_url(url).ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, timeout=10)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_an_email_travels_through_a_tls_redis(
    tls_redis_url: str, make_settings: Any, start_worker: Callable[..., Any], sandbox: Any
) -> None:
    settings = make_settings(REDIS_URL=tls_redis_url)
    client = create_app(settings).test_client()
    assert client.get("/readyz").json["redis"] == "ok"
    sandbox.seed("P1", agent="pat")
    headers = {"Authorization": "Bearer test-token"}
    assert client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"]}, headers=headers).status_code == 200
    answer = client.post("/webhooks/mime", data=mime(), content_type="message/rfc822", headers=basic_auth())
    assert answer.json["status"] == "queued"
    start_worker(settings)
    wait_for_status(client, answer.json["deliveries"][0]["id"], "delivered")
    assert [event["subject"] for event in sandbox.events("P1")] == ["Is the 2BR still available?"]


@pytest.fixture
def tls_sentinel(tls_redis_url: str) -> Iterator[tuple[int, str]]:
    """A sentinel speaking TLS and asking for a password, watching the TLS Redis; its port and password."""
    binary = redis_server_binary()
    assert binary is not None
    cert = tls_redis_url.split("ssl_ca_certs=")[1]
    data_port = tls_redis_url.split(":")[2].split("/")[0]
    folder = Path(tempfile.mkdtemp(prefix="relay-tls-sentinel-"))
    port, password = free_port(), "sentinel-secret"
    config = folder / "sentinel.conf"
    config.write_text(
        f"port 0\ntls-port {port}\nbind 127.0.0.1\ndir {folder}\ntls-cert-file {cert}\n"
        f"tls-key-file {Path(cert).with_name('key.pem')}\ntls-ca-cert-file {cert}\ntls-auth-clients no\n"
        f"tls-replication yes\nrequirepass {password}\nsentinel monitor relay 127.0.0.1 {data_port} 1\n"
    )
    process = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL)
    sentinel = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=cert, password=password, decode_responses=True
    )

    def watching() -> bool:
        try:
            return bool(sentinel.sentinel_master("relay")["ip"])
        except (redis.RedisError, KeyError):
            return False

    try:
        wait_until(watching, timeout=15)
        yield port, password
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_sentinels_over_tls_with_a_password_name_the_primary(
    tls_redis_url: str, tls_sentinel: tuple[int, str], make_settings: Any
) -> None:
    port, password = tls_sentinel
    # REDIS_URL's address is ignored (nothing listens on port 1); its TLS options apply to both.
    url = "rediss://127.0.0.1:1/0?ssl_ca_certs=" + tls_redis_url.split("ssl_ca_certs=")[1]
    settings = make_settings(REDIS_URL=url, REDIS_SENTINELS=f"127.0.0.1:{port}", REDIS_SENTINEL_MASTER="relay",
                             REDIS_SENTINEL_TLS="true", REDIS_SENTINEL_PASSWORD=password)  # fmt: skip
    client = create_app(settings).test_client()
    ready = client.get("/readyz").json
    assert ready["redis"] == "ok" and ready["topology"]["mode"] == "sentinel"
    assert ready["topology"]["primary"] == "127.0.0.1:" + tls_redis_url.split(":")[2].split("/")[0]
    answer = client.post("/webhooks/mime", data=mime(), content_type="message/rfc822", headers=basic_auth())
    assert answer.status_code == 200, answer.json
    wrong = make_settings(REDIS_URL=url, REDIS_SENTINELS=f"127.0.0.1:{port}", REDIS_SENTINEL_MASTER="relay",
                          REDIS_SENTINEL_TLS="true", REDIS_SENTINEL_PASSWORD="wrong")  # fmt: skip
    refused = create_app(wrong).test_client().get("/readyz")
    assert refused.status_code == 503 and password not in refused.get_data(as_text=True)
