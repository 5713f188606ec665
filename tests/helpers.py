"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Callable
from typing import Any

REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL", "redis://localhost:6379/15")
API_TOKEN = "test-token"
BASIC_USER, BASIC_PASS = "relay", "s3cret"
SANDBOX_KEY = "sandbox-key"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def basic_auth(user: str = BASIC_USER, password: str = BASIC_PASS) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; its value, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def relay_env(sandbox_url: str, **overrides: str) -> dict[str, str]:
    """A production-like environment pointing at the sandbox, with short retry bounds."""
    env = {
        "RELAY_ENV": "production",
        "REDIS_URL": REDIS_URL,
        "KNOCK_BASE_URL": sandbox_url,
        "KNOCK_API_KEY": SANDBOX_KEY,
        "RELAY_API_TOKEN": API_TOKEN,
        "RELAY_WEBHOOK_BASIC_AUTH": f"old:rotated-out,{BASIC_USER}:{BASIC_PASS}",
        "RELAY_MAILBOX_DOMAINS": "acme-living.com,reply.acme-living.com,frontdesk@gmail.com",
        "RELAY_AUTOMATED_SENDERS": "noreply@acme-living.com,*@notify.acme-living.com",
        "RELAY_RETRY_MIN_BACKOFF_SECONDS": "0.2",
        "RELAY_RETRY_MAX_BACKOFF_SECONDS": "1",
        "RELAY_KNOCK_TIMEOUT_SECONDS": "5",
        "RELAY_MAX_REQUEST_BYTES": "65536",
    }
    env.update(overrides)
    return env


def delivery(client: Any, delivery_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/deliveries/{delivery_id}", headers=BEARER)
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


def wait_for_status(client: Any, delivery_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
    return wait_until(lambda: (d := delivery(client, delivery_id))["status"] == status and d, timeout=timeout)  # type: ignore[no-any-return]


def mime(
    *,
    sender: str = "Renter <renter@example.com>",
    to: str = "Leasing <leasing@acme-living.com>",
    subject: str = "Is the 2BR still available?",
    body: str = "Hi, is the two bedroom still available?\nThanks",
    message_id: str | None = "<m1@example.com>",
    date: str | None = "Tue, 31 Mar 2020 16:22:06 -0700",
    extra_headers: str = "",
) -> bytes:
    """A small RFC 5322 message for tests that only vary its headers."""
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    if date:
        lines.append(f"Date: {date}")
    lines += [h for h in extra_headers.split("\n") if h]
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "", body]
    return "\r\n".join(lines).encode()


def post_mime(client: Any, raw: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post("/webhooks/mime", data=raw, content_type="message/rfc822", headers=headers or basic_auth())
