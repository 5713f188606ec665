"""Amazon SES messages stored in S3: a receipt rule's S3 action keeps the message in a bucket and
notifies through SNS (SNS itself carries at most 150 KB). The webhook stores the notification as a
pending fetch; the worker reads the object here, from a bucket listed in RELAY_SES_S3_BUCKETS only,
with the credentials of the standard AWS chain (IRSA, instance role, environment).

boto3 is imported by the worker when it first fetches: the web process never needs it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from relay.config import Settings
from relay.errors import MalformedPayload, ProviderUnavailable
from relay.providers.fetch import FETCH_DEADLINE_SECONDS

#: The kind of PendingFetch for a message in S3.
STORED_IN_S3 = "ses-s3-message"
#: Metadata SES writes on an object it encrypted client-side with a KMS key.
_CLIENT_SIDE_ENCRYPTION = ("x-amz-key-v2", "x-amz-cek-alg", "x-amz-wrap-alg")
_READ_CHUNK = 1 << 20

_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()


def _client(endpoint_url: str | None) -> Any:
    """One S3 client per endpoint and process (making one costs tens of milliseconds)."""
    with _clients_lock:
        if endpoint_url not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=5,
                read_timeout=FETCH_DEADLINE_SECONDS,
                retries={"max_attempts": 1, "mode": "standard"},  # the delivery's retry policy retries
            )
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            _clients[endpoint_url] = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        return _clients[endpoint_url]


def read_stored_message(
    bucket: str, key: str, settings: Settings, *, deadline: float = FETCH_DEADLINE_SECONDS
) -> bytes:
    """The object's bytes, within `deadline` seconds in all. MalformedPayload (the delivery goes
    dead, with the reason) for a bucket not allowed, a missing object, access refused, client-side
    encryption or an object over RELAY_MAX_REQUEST_BYTES; ProviderUnavailable (retried) when S3
    cannot answer now, or not within the deadline."""
    from botocore.exceptions import BotoCoreError, ClientError

    if bucket not in settings.ses_s3_buckets:
        raise MalformedPayload(f"S3 bucket {bucket!r} is not in RELAY_SES_S3_BUCKETS: the message was not fetched")
    started = time.monotonic()
    client = _client(settings.ses_s3_endpoint_url)
    try:
        found = _within(deadline, lambda: client.get_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(exc.response.get("Error", {}).get("Code") or status)
        if status == 404 or code in ("NoSuchKey", "NoSuchBucket"):
            raise MalformedPayload(f"the message is not in S3 (s3://{bucket}/{key}: {code})") from exc
        if status == 403 or code == "AccessDenied":
            raise MalformedPayload(
                f"S3 refused to give the message (s3://{bucket}/{key}: {code}); grant s3:GetObject on the bucket"
            ) from exc
        raise ProviderUnavailable(f"S3 answered {status or code}") from exc
    except BotoCoreError as exc:
        raise ProviderUnavailable(f"S3 unreachable: {type(exc).__name__}") from exc
    metadata = {str(name).lower() for name in (found.get("Metadata") or {})}
    if metadata & set(_CLIENT_SIDE_ENCRYPTION):
        found["Body"].close()
        raise MalformedPayload(
            "the message is encrypted with SES's client-side KMS encryption, which the relay does not read: "
            "turn encryption off in the receipt rule's S3 action (S3's own server-side encryption is fine)"
        )
    if int(found.get("ContentLength") or 0) > settings.max_request_bytes:
        found["Body"].close()
        raise MalformedPayload(f"the message is larger than RELAY_MAX_REQUEST_BYTES ({settings.max_request_bytes})")
    return _read_within(found["Body"], int(found.get("ContentLength") or 0), settings.max_request_bytes, started,
                        deadline)  # fmt: skip


#: Calls given up on that are still running (an S3 that keeps trickling holds each); past this
#: many, a fetch is retried later without starting another.
MAX_ABANDONED_CALLS = 8
_abandoned: set[threading.Thread] = set()


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """`call()`'s result, or ProviderUnavailable once `seconds` have passed: boto3's own timeouts
    bound each read, so an S3 that sends its answer's headers a byte at a time would hold the call
    for as long as it likes. The call is left to finish (or time out) on a thread of its own, and
    while MAX_ABANDONED_CALLS such threads still run, no new call is started."""
    with _clients_lock:
        _abandoned.difference_update([thread for thread in _abandoned if not thread.is_alive()])
        if len(_abandoned) >= MAX_ABANDONED_CALLS:
            raise ProviderUnavailable(f"S3 still holds {len(_abandoned)} calls given up on; trying later")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread as it is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="s3-get-object", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        with _clients_lock:
            _abandoned.add(worker)
        raise ProviderUnavailable(f"S3 took more than {seconds:g} s to answer")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _read_within(body: Any, expected: int, limit: int, started: float, deadline: float) -> bytes:
    """Read the object's stream, at most `limit` bytes and `deadline` seconds in all: each read
    takes what has arrived (one receive), so a server that sends a byte at a time is cut off at the
    deadline rather than held for as long as it keeps each read alive."""
    from botocore.exceptions import BotoCoreError

    raw = getattr(body, "_raw_stream", None)  # urllib3's response: read1 returns what has arrived
    read = raw.read1 if raw is not None and hasattr(raw, "read1") else body.read
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise MalformedPayload(f"the message is larger than RELAY_MAX_REQUEST_BYTES ({limit})")
            if time.monotonic() - started > deadline:
                raise ProviderUnavailable(f"S3 took more than {deadline:g} s to send the message")
            chunks.append(chunk)
    except (BotoCoreError, OSError) as exc:
        raise ProviderUnavailable(f"S3 broke off: {type(exc).__name__}") from exc
    finally:
        body.close()
    if expected and size != expected:
        raise ProviderUnavailable(f"S3 sent {size} of the message's {expected} bytes")
    return b"".join(chunks)
