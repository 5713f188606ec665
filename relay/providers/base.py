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
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from flask import Request
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from relay.config import Settings
from relay.errors import BASIC_CHALLENGE, MalformedPayload, Unauthorized
from relay.message import Attachment, Email, Ignored, PendingFetch
from relay.request_body import LARGE_BODY_BYTES, forget_body
from relay.untrusted_json import check_shape, loads, loads_checked


class WebhookProvider(ABC):
    #: Short name recorded on deliveries (their `provider` field).
    name: ClassVar[str]
    #: URL path under which the provider posts.
    path: ClassVar[str]
    #: Status for authenticated-but-unreadable posts; some providers stop retrying only on certain codes.
    malformed_status: ClassVar[int] = 400
    #: Status for what a retry could fix (Redis away, replicas not confirming): 503, unless the
    #: provider drops a post answered so and retries only another (Brevo retries 429, never a 5xx).
    retry_status: ClassVar[int] = 503
    #: One line for the OpenAPI document, and how the provider authenticates its calls.
    summary: ClassVar[str]
    authentication: ClassVar[str]
    #: OpenAPI security schemes checked (names from relay/web/openapi.py); empty when the proof is in the body.
    security: ClassVar[tuple[str, ...]] = ()
    #: Media types the provider posts, with the JSON Schema of each body as far as it can be stated.
    media_types: ClassVar[dict[str, dict[str, Any]]]
    #: Whether the provider checks the URL with a HEAD request before it posts (Mandrill does).
    answers_head: ClassVar[bool] = False
    #: The largest body the provider ever posts, where that is far below RELAY_MAX_REQUEST_BYTES
    #: and the proof is inside the body: anything larger is refused (413) before it is read.
    max_body_bytes: ClassVar[int | None] = None

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
    large = len(request.get_data(cache=True)) >= LARGE_BODY_BYTES
    if request.mimetype == "application/x-www-form-urlencoded":
        decoded = _urlencoded_pieces(request.get_data(cache=True))
        if large:
            forget_body(request)  # the pieces hold what the body did: joining them need not hold both
        fields: Form = {}
        for name, pieces in decoded:
            fields.setdefault(name, []).append(FormPart(pieces[0] if len(pieces) == 1 else b"".join(pieces)))
            pieces.clear()
    else:
        fields = _multipart_form(request)
        if large:
            forget_body(request)  # the fields hold what the body did: decoding them need not hold both
    request.environ["relay.form"] = fields
    return fields


#: Most fields one form post may carry. Providers send a few dozen plus one per attachment
#: (RELAY_MAX_MIME_PARTS, at most a few hundred); a flood of empty fields is refused unread.
MAX_FORM_FIELDS = 5000
#: Slice of the body handed to the multipart decoder at a time: its buffer stays this small.
_MULTIPART_SLICE = 1024 * 1024
_FORM_PAIR = re.compile(rb"[^&]+")


def _multipart_form(request: Request, only: frozenset[str] | None = None) -> Form:
    """The fields of a multipart body (only those named in `only`, when given); MalformedPayload
    for any other body, one without a boundary, or one of more than MAX_FORM_FIELDS parts."""
    if request.mimetype != "multipart/form-data":
        raise MalformedPayload(f"expected a form post, got {request.mimetype or 'no content type'}")
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise MalformedPayload("multipart body without a boundary")
    body = request.get_data(cache=True, as_text=False)
    if body.count(b"--" + boundary.encode("latin-1")) > MAX_FORM_FIELDS + 1:
        raise MalformedPayload(f"more than {MAX_FORM_FIELDS} form fields")
    return _multipart_fields(body, boundary.encode("latin-1"), only)


def _urlencoded_pieces(body: bytes) -> list[tuple[str, list[bytes]]]:
    """Each field of a urlencoded body, decoded a piece (a MiB) at a time and not yet joined: the
    caller can let go of the body before it joins them."""
    return [
        (span.name, [form_unquote(body[span.start : span.end], strict=True)])
        if span.end - span.start <= _UNQUOTE_PIECE
        else (span.name, list(unquoted_pieces(body, span)))
        for span in urlencoded_spans(body)
    ]


#: Longest field name read by `urlencoded_spans`: provider field names are a few dozen characters.
MAX_FIELD_NAME_BYTES = 1024


@dataclass(frozen=True)
class FieldSpan:
    """One urlencoded field: its name, decoded, and where its still-encoded value lies in the body."""

    name: str
    start: int
    end: int


def urlencoded_spans(body: bytes) -> list[FieldSpan]:
    """Every field of a urlencoded body, in arrival order, without a copy of any value (for checking
    a signature before the form is read). MalformedPayload past MAX_FORM_FIELDS fields or for a
    name longer than MAX_FIELD_NAME_BYTES."""
    if body.count(b"&") >= MAX_FORM_FIELDS:
        raise MalformedPayload(f"more than {MAX_FORM_FIELDS} form fields")
    spans = []
    for pair in _FORM_PAIR.finditer(body):
        start, end = pair.span()
        equals = body.find(b"=", start, min(end, start + MAX_FIELD_NAME_BYTES + 1))
        if equals == -1 and end - start > MAX_FIELD_NAME_BYTES:
            raise MalformedPayload(f"a form field name longer than {MAX_FIELD_NAME_BYTES} bytes")
        name_end = end if equals == -1 else equals
        name = form_unquote(body[start:name_end], strict=True).decode("utf-8", errors="replace")
        spans.append(FieldSpan(name, end if equals == -1 else equals + 1, end))
    return spans


#: Bytes of an encoded value decoded at a time by `unquoted_pieces`.
_UNQUOTE_PIECE = 1024 * 1024


def unquoted_pieces(body: bytes, span: FieldSpan) -> Iterator[bytes]:
    """A field's decoded value, a piece at a time (never more than a MiB of it in memory), for
    checking a signature: a `%` that starts no escape is refused (`form_unquote`'s `strict`). A
    piece never ends inside a `%XX` escape: it stops before a `%` in its last two bytes."""
    start = span.start
    while start < span.end:
        stop = min(start + _UNQUOTE_PIECE, span.end)
        if stop < span.end:
            escape = body.rfind(b"%", stop - 2, stop)
            stop = escape if escape > start else stop
        yield form_unquote(body[start:stop], strict=True)
        start = stop


def signature_fields(request: Request, names: frozenset[str]) -> Form:
    """Only the form fields named (the few a signature is made of), read without decoding or
    keeping any other: what checking the signature of an unverified post costs stays small."""
    cached: Form | None = request.environ.get("relay.form")
    if cached is not None:
        return {name: parts for name, parts in cached.items() if name in names}
    if request.mimetype != "application/x-www-form-urlencoded":
        return _multipart_form(request, only=names)
    body = request.get_data(cache=True, as_text=False)
    fields: Form = {}
    for span in urlencoded_spans(body):
        if span.name in names:
            fields.setdefault(span.name, []).append(FormPart(b"".join(unquoted_pieces(body, span))))
    return fields


class _PartData:
    """One part's data as werkzeug's decoder hands it over, kept as a span of the body: each piece
    is checked to be the body's next bytes (a comparison, no copy), and the part is one slice of
    the body at the end, so that a 30 MB field is never held as pieces and as their join. A piece
    found nowhere (which a decoder that passes the body's bytes through never gives) is kept as
    it is, and the part joined from pieces."""

    def __init__(self, body: bytes, search_from: int) -> None:
        self.body, self.search_from = body, search_from
        self.start: int | None = None
        self.end = search_from
        self.pieces: list[bytes] | None = None

    def add(self, piece: bytes) -> None:
        if not piece:
            return
        if self.pieces is not None:
            self.pieces.append(piece)
        elif self.start is None:
            found = self.body.find(piece, self.search_from)
            if found < 0:
                self.pieces = [piece]
            else:
                self.start, self.end = found, found + len(piece)
        elif self.body.startswith(piece, self.end):
            self.end += len(piece)
        else:
            self.pieces = [self.body[self.start : self.end], piece]

    def data(self) -> bytes:
        if self.pieces is not None:
            return b"".join(self.pieces)
        return b"" if self.start is None else self.body[self.start : self.end]


def _multipart_fields(body: bytes, boundary: bytes, only: frozenset[str] | None = None) -> Form:
    """Each part's bytes (of the parts named in `only`, when given), read by werkzeug's decoder fed
    a slice at a time, so that what it buffers stays small; each part's data is then one slice of
    the body (`_PartData`): the peak is the body and that part."""
    fields: Form = {}
    decoder = MultipartDecoder(boundary)
    current: tuple[str, str | None, str | None] | None = None
    part: _PartData | None = None
    read_to = 0
    event = None
    view = memoryview(body)
    slices = [*range(0, len(body), _MULTIPART_SLICE), None]
    try:
        for start in slices:
            decoder.receive_data(None if start is None else bytes(view[start : start + _MULTIPART_SLICE]))
            event = decoder.next_event()
            while not isinstance(event, NeedData | Epilogue):
                if isinstance(event, File | Field):
                    filename = event.filename if isinstance(event, File) else None
                    current = (event.name, filename, event.headers.get("content-type"))
                    # A part without a name (a file alone) is no field a provider sends: not kept.
                    wanted = event.name is not None and (only is None or event.name in only)
                    part = _PartData(body, read_to) if wanted else None
                elif isinstance(event, Data) and current is not None:
                    if part is not None:
                        part.add(event.data)
                    if not event.more_data:
                        name, filename, content_type = current
                        if part is not None:
                            fields.setdefault(name, []).append(FormPart(part.data(), filename, content_type))
                            read_to = max(read_to, part.end)
                        current, part = None, None
                event = decoder.next_event()
            if isinstance(event, Epilogue):
                break
    except ValueError as exc:
        raise MalformedPayload("unreadable multipart body") from exc
    if not isinstance(event, Epilogue):
        raise MalformedPayload("truncated multipart body")
    return fields


#: A `%` that starts no `%XX` escape: it stands for itself.
_LONE_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def form_unquote(value: bytes, *, strict: bool = False) -> bytes:
    """A urlencoded name or value, decoded exactly as `urllib.parse.unquote_to_bytes` would
    (after `+` → space), in C: urllib splits on every `%` and makes objects for each (a value of
    thirty million `%` costs it gigabytes). The bytes binascii's quoted-printable decoder would
    read otherwise (`=`, CR, LF) become escapes, every `%XX` is handed to it as `=XX`, and the
    length tells whether every escape was valid. A `%` that starts no escape stands for itself:
    then each is first written as `%25` (a pass in C, but one step per such `%`), or with
    `strict` the value is refused (MalformedPayload): no provider's encoder writes one."""
    value = value.replace(b"+", b" ")
    escapes = value.count(b"%")
    if not escapes:
        return value
    protected = value.replace(b"=", b"%3D").replace(b"\r", b"%0D").replace(b"\n", b"%0A")
    escapes += (len(protected) - len(value)) // 2
    decoded = binascii.a2b_qp(protected.replace(b"%", b"="))
    if len(decoded) == len(protected) - 2 * escapes:
        return decoded
    if strict:
        raise MalformedPayload("a form value holds a `%` that starts no escape")
    # A piece at a time: the substitution makes objects for each `%`, held only for one piece.
    pieces = []
    start = 0
    while start < len(protected):
        end = min(start + _UNQUOTE_PIECE_BYTES, len(protected))
        if end < len(protected):
            cut = protected.rfind(b"%", end - 2, end)
            end = cut if cut > start else end  # never between a `%` and its two digits
        piece = _LONE_PERCENT.sub(b"%25", protected[start:end])
        pieces.append(binascii.a2b_qp(piece.replace(b"%", b"=")))
        start = end
    return b"".join(pieces)


#: Bytes of a form value with lone `%`s decoded at a time (see form_unquote).
_UNQUOTE_PIECE_BYTES = 64 * 1024


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
    """The JSON object body (see `parsed_json_body`)."""
    if request.mimetype != "application/json":
        raise MalformedPayload(f"expected application/json, got {request.mimetype or 'no content type'}")
    try:
        value = parsed_json_body(request)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not value:
        raise MalformedPayload("body must be a non-empty JSON object")
    return value


def parsed_json_body(request: Request) -> Any:
    """The body parsed as JSON, once per request (ValueError when it is not JSON). The parser
    reads text, so a large body is decoded first and its bytes let go (relay.web.forget_body)
    before the parse: the body, its text and what is parsed from it are never held at once.
    Only for a verified request: nothing may read the body's bytes again."""
    cached = request.environ.get("relay.json", _NOT_PARSED)
    if cached is not _NOT_PARSED:
        return cached
    data = request.get_data(cache=True)
    if len(data) < LARGE_BODY_BYTES:
        value = loads(data)
    else:
        check_shape(data)
        text = data.decode("utf-8-sig")  # as json.loads reads bytes: a byte-order mark is dropped
        del data
        forget_body(request)
        value = loads_checked(text)
    request.environ["relay.json"] = value
    return value


_NOT_PARSED = object()


# Provider JSON is untrusted: these read a value only when it has the expected type.
def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


#: Most events one post may carry: Mandrill batches at most 1,000, SparkPost and Brevo fewer. Each
#: becomes a delivery and a step of the script that stores them, so a post of a quarter of a million
#: empty events would hold a web thread, and Redis, for seconds.
MAX_EVENTS_PER_POST = 1000


def event_batch(value: Any, not_a_list: str) -> list[Any]:
    """A provider's batch of events; MalformedPayload (`not_a_list`) when it is no list, or when it
    holds more than MAX_EVENTS_PER_POST events."""
    if not isinstance(value, list):
        raise MalformedPayload(not_a_list)
    if len(value) > MAX_EVENTS_PER_POST:
        raise MalformedPayload(f"{len(value)} events in one post; a provider sends at most {MAX_EVENTS_PER_POST}")
    return value


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
        return parsed_json_body(request)
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


def inline_image(content_type: str | None, content_id: str | None, disposition: str | None = None) -> bool:
    """Whether an attachment a provider lists is an image the HTML shows by its Content-ID, which
    the email leaves out as raw MIME does (relay.mime): an image with a Content-ID not marked
    `attachment`. Any other file with a Content-ID (Apple Mail gives every attachment one) is
    listed by its name."""
    return (
        bool(content_id)
        and (content_type or "").strip().lower().startswith("image/")
        and (disposition or "").split(";")[0].strip().lower() != "attachment"
    )


def listed_attachments(entries: Any) -> list[Attachment]:
    """Attachments as Postmark and Brevo list them (`[{"Name", "ContentType", "ContentLength",
    "ContentID"}]`, or names alone), less the inline images."""
    found = []
    for entry in as_list(entries):
        a: dict[str, Any] = {"Name": entry} if isinstance(entry, str) else as_dict(entry)
        if inline_image(as_str(a.get("ContentType")), as_str(a.get("ContentID"))):
            continue
        size = a["ContentLength"] if isinstance(a.get("ContentLength"), int) else 0
        found.append(Attachment(as_str(a.get("Name")) or "attachment", size,
                                as_str(a.get("ContentType")) or "application/octet-stream"))  # fmt: skip
    return found


def base64_size(encoded: str) -> int:
    """Bytes a base64 text decodes to, without decoding it."""
    compact = len(encoded) - sum(encoded.count(c) for c in "\r\n \t")
    return max(0, compact * 3 // 4 - encoded.rstrip().count("=", -2))
