"""What every webhook provider shares: verify the call, then parse it into Emails.

A provider module subclasses `WebhookProvider` and fills in `verify_request`
and `parse_request`; the web layer owns the rest of the flow (size cap,
quarantine of unreadable bodies, routing and queueing).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from abc import ABC, abstractmethod
from typing import ClassVar

from flask import Request

from relay.config import Settings
from relay.errors import Unauthorized
from relay.message import Email


class WebhookProvider(ABC):
    #: Short name recorded on deliveries (`provider` field) and in metrics.
    name: ClassVar[str]
    #: URL path under which the provider posts.
    path: ClassVar[str]
    #: Status for authenticated-but-unreadable posts; some providers stop retrying only on certain codes.
    malformed_status: ClassVar[int] = 400

    @abstractmethod
    def verify_request(self, request: Request, settings: Settings) -> None:
        """Raise Unauthorized unless the request carries valid credentials or a valid signature."""

    @abstractmethod
    def parse_request(self, request: Request, settings: Settings) -> list[Email]:
        """The emails in the request; raise MalformedPayload when it cannot be read."""


def basic_auth_matches(header: str | None, pairs: tuple[tuple[str, str], ...]) -> bool:
    """Constant-time check of an `Authorization: Basic` header against every configured pair."""
    if not header or not header[:6].lower() == "basic ":
        return False
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = decoded.partition(b":")
    if not sep:
        return False
    matched = False
    for expected_user, expected_password in pairs:
        # No short-circuit: every pair is compared, so timing does not tell which one was close.
        user_ok = hmac.compare_digest(user, expected_user.encode())
        password_ok = hmac.compare_digest(password, expected_password.encode())
        matched |= user_ok & password_ok
    return matched


class BasicAuthProvider(WebhookProvider):
    """Providers without native signing, protected by RELAY_WEBHOOK_BASIC_AUTH in the URL."""

    def verify_request(self, request: Request, settings: Settings) -> None:
        if not settings.webhook_basic_auth:
            if settings.insecure_webhooks:
                return
            raise Unauthorized("webhook authentication is not configured (RELAY_WEBHOOK_BASIC_AUTH)")
        if not basic_auth_matches(request.headers.get("Authorization"), settings.webhook_basic_auth):
            raise Unauthorized("missing or wrong basic auth credentials")
