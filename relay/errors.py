"""The relay's error tree and its HTTP mapping, in one place."""

from __future__ import annotations

from typing import Any


class RelayError(Exception):
    """Base of every error the relay answers to a caller with."""

    status = 500
    default_message = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"error": self.message}
        if self.details is not None:
            payload["details"] = self.details
        return payload

    def headers(self) -> dict[str, str]:
        """Response headers HTTP asks for with this status."""
        return {}


#: `WWW-Authenticate` challenges (a 401 must name one): the partner API's, basic-auth webhooks', Mailgun's.
BEARER_CHALLENGE = 'Bearer realm="knock-relay"'
BASIC_CHALLENGE = 'Basic realm="knock-relay webhooks", charset="UTF-8"'
MAILGUN_CHALLENGE = 'Mailgun-HMAC-SHA256 realm="knock-relay webhooks"'
#: Seconds a caller should wait before retrying a 503.
RETRY_AFTER_SECONDS = 10


class Unauthorized(RelayError):
    """Credentials or signature missing, wrong or stale."""

    status = 401
    default_message = "unauthorized"

    def __init__(self, message: str | None = None, *, challenge: str = BEARER_CHALLENGE) -> None:
        super().__init__(message)
        self.challenge = challenge

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class MalformedPayload(RelayError):
    """Authenticated, but the body cannot be read as an email."""

    status = 400
    default_message = "malformed payload"


class InvalidRequest(RelayError):
    """An API body failed validation; details holds field-level messages."""

    status = 400
    default_message = "invalid request"


class NotFound(RelayError):
    """No such resource (or the API is disabled)."""

    status = 404
    default_message = "not found"


class Conflict(RelayError):
    """The request contradicts the current state of a resource."""

    status = 409
    default_message = "conflict"


class PayloadTooLarge(RelayError):
    """The request is larger than RELAY_MAX_REQUEST_BYTES."""

    status = 413
    default_message = "request too large"


class RetryLater(RelayError):
    """Something the relay needs is away for now; the caller should retry later."""

    status = 503
    default_message = "unavailable, retry later"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


class StoreUnavailable(RetryLater):
    """Redis cannot be reached."""

    default_message = "storage unavailable, retry later"


class NotReplicated(RetryLater):
    """Stored on the Redis primary, but not on as many replicas as RELAY_REDIS_MIN_REPLICAS asks
    within RELAY_REDIS_REPLICA_TIMEOUT_MS: a failover now could lose it, so it is not acknowledged
    (the provider's retry finds it stored and is answered as a duplicate)."""

    default_message = "stored, but not yet on enough Redis replicas: retry later"
    #: What the write answered on the primary.
    reply: Any = None


class ProviderUnavailable(RetryLater):
    """A provider resource the webhook needs (e.g. a Mailgun stored message) is unreachable for now."""

    default_message = "provider unavailable, retry later"


class UpstreamUnavailable(RelayError):
    """Knock could not be reached for a call the API makes synchronously."""

    status = 502
    default_message = "Knock unavailable"
