"""The normalised email every provider produces. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses, parsedate_to_datetime

from relay.errors import MalformedPayload

_WHITESPACE = re.compile(r"\s+")

#: Header and user-variable names that carry explicit routing metadata (SPEC §5.5).
METADATA_HEADERS = {
    "x-knock-prospect-id": "prospect_id",
    "x-knock-agent-username": "agent_username",
    "x-knock-message-type": "message_type",
}


@dataclass(frozen=True)
class Attachment:
    filename: str
    size: int
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Metadata:
    """Routing decisions stated by the sender instead of inferred (SPEC §5.5)."""

    prospect_id: str | None = None
    agent_username: str | None = None
    message_type: str | None = None

    def merged(self, other: Metadata) -> Metadata:
        """Values of `other` win where present."""
        return Metadata(
            prospect_id=other.prospect_id or self.prospect_id,
            agent_username=other.agent_username or self.agent_username,
            message_type=other.message_type or self.message_type,
        )


@dataclass(frozen=True)
class Email:
    message_id: str
    sender: str | None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    envelope_to: tuple[str, ...] = ()
    envelope_from: str | None = None
    subject: str = ""
    date: datetime | None = None
    text: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    provider_timestamp: datetime | None = None
    metadata: Metadata = field(default_factory=Metadata)

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every recipient address once, in the order first seen."""
        unique: dict[str, str] = {}
        for address in self.to + self.cc + self.bcc + self.envelope_to:
            unique.setdefault(address.lower(), address)
        return tuple(unique.values())

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None


@dataclass(frozen=True)
class Ignored:
    """A webhook call that carries no email to log (e.g. a Mailgun `opened` event); recorded as ignored."""

    reason: str
    message_id: str | None = None
    subject: str = ""


def normalise_message_id(value: str | None) -> str | None:
    """Strip white space and angle brackets; None when nothing is left."""
    if not value:
        return None
    cleaned = _WHITESPACE.sub("", value).strip("<>")
    # A header with several ids (broken clients) keeps the first.
    cleaned = cleaned.split("><")[0]
    return cleaned or None


def normalise_address(value: str) -> str | None:
    """An addr-spec with its domain lowercased; the local part keeps its case (reply tags carry ids)."""
    local, at, domain = value.strip().strip("<>").rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in local + domain):
        return None
    return f"{local}@{domain.lower()}"


def addresses(values: Iterable[str]) -> tuple[str, ...]:
    """Addresses from header values such as `"Doe, Jo" <jo@x.com>, b@y.com`, lowercased, in order."""
    found: list[str] = []
    for _, addr in getaddresses([v for v in values if v]):
        normalised = normalise_address(addr)
        if normalised and normalised.lower() not in {f.lower() for f in found}:
            found.append(normalised)
    return tuple(found)


def format_address(name: str | None, address: str) -> str:
    """A header value for one mailbox; unlike email.utils.formataddr it keeps non-ASCII addresses."""
    cleaned = address.strip().strip("<>")
    if not name or not name.strip():
        return f"<{cleaned}>"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{quoted}" <{cleaned}>'


def parse_date(value: str | None) -> datetime | None:
    """An RFC 5322 date as an aware UTC datetime, or None if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def fallback_message_id(
    sender: str | None,
    recipients: Iterable[str],
    date: str | None,
    subject: str,
    body: str,
) -> str:
    """A stable id for mail without a Message-ID, so that redeliveries still de-duplicate."""
    digest = hashlib.sha256()
    for part in (
        sender or "",
        ",".join(sorted(recipients)),
        (date or "").strip(),
        subject,
        body,
    ):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return f"sha256-{digest.hexdigest()}@relay"


def metadata_from_headers(headers: Iterable[tuple[str, str]]) -> Metadata:
    values: dict[str, str] = {}
    for name, value in headers:
        key = METADATA_HEADERS.get(name)
        if key and value.strip() and key not in values:
            values[key] = value.strip()
    return Metadata(**values)


def build_email(
    *,
    headers: Iterable[tuple[str, str]],
    text: str | None = None,
    html: str | None = None,
    attachments: Iterable[Attachment] = (),
    envelope_to: Iterable[str] = (),
    envelope_from: str | None = None,
    provider_timestamp: datetime | None = None,
    metadata: Metadata | None = None,
    message_id: str | None = None,
) -> Email:
    """Assemble an Email from decoded header pairs and body parts.

    Header names are matched case-insensitively; `message_id` overrides the
    header when a provider hands it over separately.
    """
    pairs = tuple((name.strip().lower(), str(value)) for name, value in headers)

    def values(name: str) -> list[str]:
        return [value for key, value in pairs if key == name]

    def first(name: str) -> str | None:
        found = values(name)
        return found[0] if found else None

    senders = addresses(values("from")) or addresses(values("sender"))
    sender = senders[0] if senders else None
    to, cc, bcc = (
        addresses(values("to")),
        addresses(values("cc")),
        addresses(values("bcc")),
    )
    env_to = addresses(envelope_to)
    env_from = normalise_address(envelope_from) if envelope_from else None
    subject = _WHITESPACE.sub(" ", first("subject") or "").strip()
    date_header = first("date")

    mid = normalise_message_id(message_id) or normalise_message_id(first("message-id"))
    if mid is None:
        # Header recipients only: the envelope and Bcc differ between copies of one email.
        mid = fallback_message_id(
            sender.lower() if sender else None,
            [a.lower() for a in to + cc],
            date_header,
            subject,
            (html or "") + "\x00" + (text or ""),
        )

    header_metadata = metadata_from_headers(pairs)
    return Email(
        message_id=mid,
        sender=sender or env_from,
        to=to,
        cc=cc,
        bcc=bcc,
        envelope_to=env_to,
        envelope_from=env_from,
        subject=subject,
        date=parse_date(date_header),
        text=text,
        html=html,
        attachments=tuple(attachments),
        headers=pairs,
        provider_timestamp=provider_timestamp,
        metadata=header_metadata.merged(metadata) if metadata else header_metadata,
    )


def header_pairs(message: Message) -> list[tuple[str, str]]:
    """Header pairs with RFC 2047 encoded words decoded."""
    return decode_header_pairs(message.raw_items())


def decode_header_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Raw header values (as a provider hands them over) with RFC 2047 encoded words decoded."""
    return [(name, _decode_header_value(name, raw)) for name, raw in pairs]


def _decode_header_value(name: str, raw: str) -> str:
    try:
        return str(policy.default.header_fetch_parse(name, raw))
    except Exception:  # noqa: BLE001 - a broken header must not break the whole email
        return _WHITESPACE.sub(" ", raw).strip()


def parse_header_block(block: str) -> list[tuple[str, str]]:
    """Decoded header pairs from a raw header block (e.g. SendGrid's `headers` field)."""
    return header_pairs(HeaderParser(policy=policy.default).parsestr(block, headersonly=True))


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or (disposition != "inline" and bool(part.get_filename()))


def parse_mime(raw: bytes, **extra: object) -> Email:
    """Read one RFC 5322 message; `extra` goes to build_email (envelope, metadata, ...)."""
    if not raw or not raw.strip():
        raise MalformedPayload("empty message")
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:  # noqa: BLE001 - the stdlib parser is lenient; anything it raises is bad input
        raise MalformedPayload(f"unreadable MIME message ({type(exc).__name__})") from exc
    pairs = header_pairs(message)
    if not any(name.lower() in ("from", "to", "subject", "message-id", "date") for name, _ in pairs):
        raise MalformedPayload("no email headers found (expected From, To, Subject, ...)")

    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        if _is_attachment(part):
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes) else 0
            attachments.append(Attachment(part.get_filename() or "attachment", size, content_type))
        elif content_type == "text/html" and html is None:
            html = _part_text(part)
        elif content_type == "text/plain" and text is None:
            text = _part_text(part)
        elif part.get_content_maintype() not in ("text", "multipart"):
            payload = part.get_payload(decode=True)
            if content_type.startswith("image/") and part.get("content-id"):
                continue  # inline images referenced by cid: are dropped with their references
            size = len(payload) if isinstance(payload, bytes) else 0
            attachments.append(Attachment(part.get_filename() or "attachment", size, content_type))
    return build_email(headers=pairs, text=text, html=html, attachments=attachments, **extra)  # type: ignore[arg-type]
