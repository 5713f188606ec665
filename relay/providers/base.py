"""What every webhook provider shares: verify the call, then parse it into Emails.

A provider module subclasses `WebhookProvider` and fills in `verify_request`
and `parse_request`; the web layer owns the rest of the flow (size cap,
quarantine of unreadable bodies, routing and queueing).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes

from flask import Request
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from relay.config import Settings
from relay.errors import BASIC_CHALLENGE, MalformedPayload, Unauthorized
from relay.message import Email, Ignored, PendingFetch
from relay.untrusted_json import loads


class WebhookProvider(ABC):
    #: Short name recorded on deliveries (their `provider` field).
    name: ClassVar[str]
    #: URL path under which the provider posts.
    path: ClassVar[str]
    #: Status for authenticated-but-unreadable posts; some providers stop retrying only on certain codes.
    malformed_status: ClassVar[int] = 400
    #: One line for the OpenAPI document, and how the provider authenticates its calls.
    summary: ClassVar[str]
    authentication: ClassVar[str]
    #: OpenAPI security schemes checked (names from relay/web/openapi.py); empty when the proof is in the body.
    security: ClassVar[tuple[str, ...]] = ()
    #: Media types the provider posts, with the JSON Schema of each body as far as it can be stated.
    media_types: ClassVar[dict[str, dict[str, Any]]]
    #: Whether the provider checks the URL with a HEAD request before it posts (Mandrill does).
    answers_head: ClassVar[bool] = False

    @abstractmethod
    def verify_request(self, request: Request, settings: Settings) -> None:
        """Raise Unauthorized unless the request carries valid credentials or a valid signature."""

    @abstractmethod
    def parse_request(self, request: Request, settings: Settings) -> Sequence[Email | Ignored | PendingFetch]:
        """The emails in the request (or what to fetch them from); MalformedPayload when it cannot be read."""

    def replay_token(self, request: Request) -> str | None:
        """An id the provider repeats when it retries this very call (signed tokens), if any."""
        return None


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


#: Request-body shapes for the OpenAPI document: the fields are each provider's, read leniently.
FORM_BODY: dict[str, dict[str, Any]] = {
    "multipart/form-data": {"type": "object"},
    "application/x-www-form-urlencoded": {"type": "object"},
}
JSON_BODY: dict[str, dict[str, Any]] = {"application/json": {"type": "object"}}


class BasicAuthProvider(WebhookProvider):
    """Providers without native signing, protected by RELAY_WEBHOOK_BASIC_AUTH in the URL."""

    security: ClassVar[tuple[str, ...]] = ("basic",)
    authentication: ClassVar[str] = "HTTP basic auth (RELAY_WEBHOOK_BASIC_AUTH), put in the URL given to the provider."

    def verify_request(self, request: Request, settings: Settings) -> None:
        if not settings.webhook_basic_auth:
            if settings.insecure_webhooks:
                return
            raise Unauthorized(
                "webhook authentication is not configured (RELAY_WEBHOOK_BASIC_AUTH)", challenge=BASIC_CHALLENGE
            )
        if not basic_auth_matches(request.headers.get("Authorization"), settings.webhook_basic_auth):
            raise Unauthorized("missing or wrong basic auth credentials", challenge=BASIC_CHALLENGE)


@dataclass(frozen=True)
class FormPart:
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self, charset: str | None = "utf-8") -> str:
        """The part decoded with the charset the provider names (unknown charsets fall back to UTF-8)."""
        try:
            return self.data.decode(charset or "utf-8", errors="replace")
        except LookupError:
            return self.data.decode("utf-8", errors="replace")


Form = dict[str, list[FormPart]]


def read_form(request: Request) -> Form:
    """Form fields as raw bytes, multipart or urlencoded.

    Flask would decode every field as UTF-8; SendGrid posts each part in its
    original charset without saying so on the part, so decoding waits until
    the provider knows which charset applies. Parsed once per request.
    """
    cached: Form | None = request.environ.get("relay.form")
    if cached is not None:
        return cached
    fields = _parse_form(request)
    request.environ["relay.form"] = fields
    return fields


def _parse_form(request: Request) -> Form:
    body = request.get_data(cache=True, as_text=False)
    fields: Form = {}
    if request.mimetype == "multipart/form-data":
        boundary = request.mimetype_params.get("boundary")
        if not boundary:
            raise MalformedPayload("multipart body without a boundary")
        decoder = MultipartDecoder(boundary.encode("latin-1"))
        try:
            decoder.receive_data(body)
            decoder.receive_data(None)
            current: tuple[str, str | None, str | None] | None = None
            chunks: list[bytes] = []
            while True:
                event = decoder.next_event()
                if isinstance(event, NeedData | Epilogue):
                    break
                if isinstance(event, File | Field):
                    filename = event.filename if isinstance(event, File) else None
                    current, chunks = (event.name, filename, event.headers.get("content-type")), []
                elif isinstance(event, Data) and current is not None:
                    chunks.append(event.data)
                    if not event.more_data:
                        name, filename, content_type = current
                        fields.setdefault(name, []).append(FormPart(b"".join(chunks), filename, content_type))
                        current = None
        except ValueError as exc:
            raise MalformedPayload("unreadable multipart body") from exc
        if not isinstance(event, Epilogue):
            raise MalformedPayload("truncated multipart body")
    elif request.mimetype == "application/x-www-form-urlencoded":
        for pair in body.split(b"&"):
            if not pair:
                continue
            raw_name, _, value = pair.partition(b"=")
            key = form_unquote(raw_name).decode("utf-8", errors="replace")
            fields.setdefault(key, []).append(FormPart(form_unquote(value)))
    else:
        raise MalformedPayload(f"expected a form post, got {request.mimetype or 'no content type'}")
    return fields


def form_unquote(value: bytes) -> bytes:
    """A urlencoded name or value, decoded exactly as `urllib.parse.unquote_to_bytes` would
    (after `+` → space), but in C when it can be: every `%XX` becomes `=XX` for binascii's
    quoted-printable decoder. Only when the text holds no `=`, CR or LF (which that decoder reads
    otherwise) and every escape was valid (the length tells) is its result used."""
    value = value.replace(b"+", b" ")
    escapes = value.count(b"%")
    if not escapes:
        return value
    if b"=" not in value and b"\r" not in value and b"\n" not in value:
        decoded = binascii.a2b_qp(value.replace(b"%", b"="))
        if len(decoded) == len(value) - 2 * escapes:
            return decoded
    return unquote_to_bytes(value)


def form_value(form: Form, name: str, charset: str | None = "utf-8") -> str | None:
    parts = form.get(name)
    return parts[0].text(charset) if parts else None


def json_object(raw: str | bytes | None, what: str) -> dict[str, Any]:
    """A JSON object from a field or body, or MalformedPayload naming it."""
    if not raw:
        return {}
    try:
        value = loads(raw)
    except ValueError as exc:
        raise MalformedPayload(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise MalformedPayload(f"{what} must be a JSON object")
    return value


def request_json(request: Request) -> dict[str, Any]:
    """The JSON object body; Flask caches the parse, so a signature check before this costs nothing."""
    if request.mimetype != "application/json":
        raise MalformedPayload(f"expected application/json, got {request.mimetype or 'no content type'}")
    value = request.get_json(force=True, silent=True)
    if not isinstance(value, dict) or not value:
        raise MalformedPayload("body must be a non-empty JSON object")
    return value


# Provider JSON is untrusted: these read a value only when it has the expected type.
def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def body_digest(request: Request) -> str:
    """A replay token for providers whose retries repeat the exact post but carry no id of their own."""
    return hashlib.sha256(request.get_data(cache=True)).hexdigest()


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header; None for another scheme or no header."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


def any_secret_matches(presented: bytes, expected: list[bytes]) -> bool:
    """Constant-time comparison against every candidate (rotation lists), without short-circuit."""
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(presented, candidate)
    return matched


def require_secrets(secrets: tuple[str, ...], setting: str, settings: Settings, challenge: str) -> bool:
    """True when the provider's secrets are configured and must be checked; False when they are
    not but RELAY_INSECURE_WEBHOOKS lets the call through; Unauthorized otherwise."""
    if secrets:
        return True
    if settings.insecure_webhooks:
        return False
    raise Unauthorized(f"webhook authentication is not configured ({setting})", challenge=challenge)


def request_json_value(request: Request) -> Any:
    """The JSON body, whatever its top-level type; MalformedPayload when it is not JSON."""
    if request.mimetype != "application/json":
        raise MalformedPayload(f"expected application/json, got {request.mimetype or 'no content type'}")
    try:
        return loads(request.get_data(cache=True))
    except ValueError as exc:
        raise MalformedPayload("body is not valid JSON") from exc


def headers_from_mapping(raw: Any, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Header pairs from a provider's `{"Name": "value" | ["value", ...]}` object."""
    pairs = []
    for name, value in as_dict(raw).items():
        if not isinstance(name, str) or name.lower() in skip:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                pairs.append((name, item))
    return pairs


def base64_size(encoded: str) -> int:
    """Bytes a base64 text decodes to, without decoding it."""
    compact = len(encoded) - sum(encoded.count(c) for c in "\r\n \t")
    return max(0, compact * 3 // 4 - encoded.rstrip().count("=", -2))
