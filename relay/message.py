"""The normalised email every provider produces, and building it from header fields and bodies. Pure: no I/O.

Addresses are read in relay.addresses, header fields and MIME part fields in relay.headers, raw
MIME in relay.mime."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr, parsedate_to_datetime

from relay import html_bounds
from relay.addresses import addresses, addresses_within, normalise_address
from relay.html_bounds import bound_html
from relay.sender_auth import SenderAuth
from relay.spam import NO_VERDICT, ContentVerdict

_WHITESPACE = re.compile(r"\s+")

#: Header and user-variable names that carry explicit routing metadata (SPEC §5.5).
METADATA_HEADERS = {
    "x-knock-prospect-id": "prospect_id",
    "x-knock-agent-username": "agent_username",
    "x-knock-message-type": "message_type",
}


#: Headers whose values are mailbox lists: read as addresses, never decoded as text.
ADDRESS_HEADERS = frozenset(
    {"from", "sender", "to", "cc", "bcc", "reply-to", "resent-from", "resent-sender", "resent-to", "resent-cc",
     "resent-bcc", "delivered-to", "return-path"}
)  # fmt: skip


@dataclass(frozen=True)
class ParseLimits:
    """Caps that keep parsing cost linear in the input; beyond them an email is read in part."""

    addresses: int = 1000  # per address header (To, Cc, Bcc, envelope)
    parts: int = 500  # MIME parts read
    depth: int = 20  # multipart nesting levels read
    html_depth: int = html_bounds.MAX_DEPTH  # nesting of the HTML body's elements
    html_chars: int = html_bounds.MAX_CHARS  # characters of the HTML body read


#: Names recorded in `Email.truncated` when a cap was reached.
TRUNCATED_ADDRESSES = "addresses"
TRUNCATED_PARTS = "parts"
TRUNCATED_NESTING = "nesting"
TRUNCATED_HEADERS = "headers"
TRUNCATED_TEXT = "text size"
TRUNCATED_SUBJECT = "subject"
#: Characters of a subject kept: a guest card shows a line, and mail programs fold at 998 bytes.
MAX_SUBJECT_CHARS = 1000
#: A display name is shown up to this many characters.
MAX_NAME_CHARS = 200
#: Encoded bytes of a text part read per character kept (base64 and quoted-printable spell a
#: UTF-8 character in up to 12 bytes; 4 leaves room for the common cases, and more is cut).
TEXT_BYTES_PER_CHAR = 4
#: Lines of one header block (the message's, or a part's) read; the rest of the block is left out.
#: Real mail has a few dozen (a few hundred with a long Received trail); the parser costs about a
#: microsecond a line, so a block of millions is refused its cost, not its mail.
MAX_HEADER_LINES = 1000
#: Bytes of one header block read (a thousand Cc addresses take a twentieth of it).
MAX_HEADER_BYTES = 1024 * 1024


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
    truncated: tuple[str, ...] = ()
    sender_auth: SenderAuth = field(default_factory=SenderAuth)
    #: What a spam or virus filter said of the content (relay.spam).
    content_verdict: ContentVerdict = NO_VERDICT

    @property
    def sender_name(self) -> str | None:
        """The display name of the first From header (`Jamie Lee` of `Jamie Lee <jamie@x.org>`), for people."""
        value = next((value for name, value in self.headers if name == "from"), None)
        if not value:
            return None
        name, _ = parseaddr(value[: 4 * MAX_NAME_CHARS])
        return _WHITESPACE.sub(" ", name).strip()[:MAX_NAME_CHARS] or None

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
    #: Recorded as unmatched instead: a person must look (e.g. SES content left in S3).
    unmatched: bool = False


@dataclass(frozen=True)
class PendingFetch:
    """A webhook call naming an email to fetch from the provider (e.g. Mailgun's stored message).

    The webhook stores it and answers at once; the worker fetches, with the delivery retry policy,
    and logs what it finds as any other email. `spec` is what the provider's fetcher needs (JSON).
    """

    kind: str
    spec: dict[str, object]
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
    body: str | Sequence[str],
) -> str:
    """A stable id for mail without a Message-ID, so that redeliveries still de-duplicate. `body`
    may come in pieces, hashed as if joined by NUL, and each is encoded a MiB at a time (the same
    bytes as at once): the HTML and text of a 30 MB email are never copied whole to hash them."""
    digest = hashlib.sha256()
    pieces = [body] if isinstance(body, str) else list(body)
    for part in (sender or "", ",".join(sorted(recipients)), (date or "").strip(), subject):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    for index, piece in enumerate(pieces):
        if index:
            digest.update(b"\x00")
        for start in range(0, len(piece), _HASHED_CHARS):
            digest.update(piece[start : start + _HASHED_CHARS].encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    return f"sha256-{digest.hexdigest()}@relay"


#: Characters of a body encoded at a time for `fallback_message_id`.
_HASHED_CHARS = 1024 * 1024


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
    limits: ParseLimits | None = None,
    truncated: Iterable[str] = (),
) -> Email:
    """Assemble an Email from decoded header pairs and body parts.

    Header names are matched case-insensitively; `message_id` overrides the
    header when a provider hands it over separately. `truncated` names caps the
    caller already reached (MIME parts, nesting); address caps are applied here.
    """
    limits = limits or ParseLimits()
    cut = list(truncated)
    pairs = tuple((name.strip().lower(), str(value)) for name, value in headers)
    by_name: dict[str, list[str]] = {}
    for key, value in pairs:
        by_name.setdefault(key, []).append(value)

    def values(name: str) -> list[str]:
        return by_name.get(name, [])

    def first(name: str) -> str | None:
        found = by_name.get(name)
        return found[0] if found else None

    senders = addresses(values("from"), 1) or addresses(values("sender"), 1)
    sender = senders[0] if senders else None
    to, to_cut = addresses_within(values("to"), limits.addresses)
    cc, cc_cut = addresses_within(values("cc"), limits.addresses)
    bcc, bcc_cut = addresses_within(values("bcc"), limits.addresses)
    env_to, env_cut = addresses_within(envelope_to, limits.addresses)
    if (to_cut or cc_cut or bcc_cut or env_cut) and TRUNCATED_ADDRESSES not in cut:
        cut.append(TRUNCATED_ADDRESSES)
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
            (html or "", text or ""),
        )
    if len(subject) > MAX_SUBJECT_CHARS:
        subject = subject[:MAX_SUBJECT_CHARS]
        cut += [TRUNCATED_SUBJECT] if TRUNCATED_SUBJECT not in cut else []
    if text and len(text) > TEXT_BYTES_PER_CHAR * limits.html_chars:
        # What a MIME text part is cut to before it is decoded (cut_long_text_bodies), for the
        # providers that hand the text over decoded.
        text = text[: TEXT_BYTES_PER_CHAR * limits.html_chars]
        cut += [TRUNCATED_TEXT] if TRUNCATED_TEXT not in cut else []

    if html:
        # Bounded here, once, so that preparing the body for Knock costs time linear in its size.
        html, html_cut = bound_html(html, max_depth=limits.html_depth, max_chars=limits.html_chars)
        cut += [name for name in html_cut if name not in cut]
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
        truncated=tuple(cut),
    )
