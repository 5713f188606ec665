"""The normalised email every provider produces. Pure: no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import quopri
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

from relay import html_bounds
from relay.errors import MalformedPayload
from relay.html_bounds import bound_html
from relay.sender_auth import SenderAuth

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
#: Headers whose text is shown (the subject goes to Knock), so their RFC 2047 words are decoded.
#: Every other header is only matched against tokens, so it is unfolded and left raw: decoding
#: Received, DKIM-Signature and the like costs much and tells the relay nothing.
TEXT_HEADERS = frozenset({"subject"})
#: The decoded text of a header is read from at most this many characters.
MAX_TEXT_HEADER_CHARS = 16 * 1024


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


_SPACE_CHARACTER = re.compile(r"\s")  # as str.isspace() reads it


def normalise_address(value: str) -> str | None:
    """An addr-spec with its domain lowercased; the local part keeps its case (reply tags carry ids)."""
    local, at, domain = value.strip().strip("<>").rpartition("@")
    if not at or not local or not domain or _SPACE_CHARACTER.search(local) or _SPACE_CHARACTER.search(domain):
        return None
    return f"{local}@{domain.lower()}"


#: A display name is shown up to this many characters.
MAX_NAME_CHARS = 200


def addresses(values: Iterable[str], limit: int | None = None) -> tuple[str, ...]:
    """Addresses from header values such as `"Doe, Jo" <jo@x.com>, b@y.com`, each once, in order.

    At most `limit` of them: see `addresses_within`.
    """
    return addresses_within(values, limit)[0]


_ATOMS = r'[^<>",;:()\\@\[\]\s]+'
#: One mailbox in its plainest forms, `Name <local@domain>` or `local@domain`: no quotes, comments,
#: groups, routes or lists, whose parse is the standard library's.
_PLAIN_MAILBOX = re.compile(rf"\s*(?:[^<>\",;:()\\@\[\]]*?\s*<({_ATOMS}@{_ATOMS})>|({_ATOMS}@{_ATOMS}))\s*")


#: An addr-spec as it stands in any header value, for values the standard parser cannot read.
_ADDR_SPEC = re.compile(rf"{_ATOMS}@{_ATOMS}")


def mailbox_addresses(values: list[str]) -> list[str]:
    """The addr-specs of header values, as email.utils.getaddresses reads them; values that are each
    one plain mailbox are read without it (its parser is most of an email's address work)."""
    plain = [_PLAIN_MAILBOX.fullmatch(value) for value in values]
    if all(plain):
        return [match[1] or match[2] for match in plain if match]
    try:
        return [addr for _, addr in getaddresses(values)]
    except RecursionError:
        # The standard parser recurses once per nested comment or group (`((((…` or `g:g:g:…`):
        # a value no mail program writes. Its addr-specs are then read by pattern, in one pass.
        return [found for value in values for found in _ADDR_SPEC.findall(value)]


#: Characters of header value read per address wanted (a long display name and address fit).
_CHARS_PER_ADDRESS = 1024


def _within_reach(values: Iterable[str], limit: int | None) -> tuple[list[str], bool]:
    """The header values, each cut after 4 × `limit` commas and `limit` × _CHARS_PER_ADDRESS
    characters: the standard parser reads every address of a value, and a Cc of a million
    addresses must cost no more than one of `limit`. A cut leaves at least `limit` addresses
    unless their display names hold more than three commas each (quoted names may hold commas)."""
    kept = [v for v in values if v]
    if limit is None:
        return kept, False
    cut = False
    for index, value in enumerate(kept):
        short = value[: limit * _CHARS_PER_ADDRESS]
        if short.count(",") > 4 * limit:
            short = ",".join(short.split(",", 4 * limit + 1)[: 4 * limit + 1])
        if len(short) < len(value):
            kept[index], cut = short, True
    return kept, cut


def addresses_within(values: Iterable[str], limit: int | None) -> tuple[tuple[str, ...], bool]:
    """The addresses (at most `limit`) and whether more were left out."""
    found: list[str] = []
    seen: set[str] = set()
    values, cut = _within_reach(values, limit)
    for addr in mailbox_addresses(values):
        normalised = normalise_address(addr)
        if not normalised or normalised.lower() in seen:
            continue
        if limit is not None and len(found) >= limit:
            return tuple(found), True
        seen.add(normalised.lower())
        found.append(normalised)
    return tuple(found), cut


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


def header_pairs(message: Message) -> list[tuple[str, str]]:
    """Header pairs with RFC 2047 encoded words decoded."""
    return decode_header_pairs(message.raw_items())


def decode_header_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Raw header values (as a provider hands them over): text headers decoded, the rest unfolded."""
    return [(name, _decode_header_value(name, raw)) for name, raw in pairs]


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(value: str) -> str:
    """Raw 8-bit header bytes (kept as surrogate escapes) read as UTF-8; anything unreadable replaced."""
    if not _SURROGATE.search(value):
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # lone surrogates that are not escapes (e.g. from JSON)
        return _SURROGATE.sub("\ufffd", value)


def unfold(raw: str) -> str:
    """White space runs (folding included) as one space, the ends stripped, raw 8-bit bytes read as UTF-8."""
    if raw.isprintable() and "  " not in raw:  # no folding, tabs, surrogate escapes or double spaces
        return raw.strip()
    return without_surrogates(_WHITESPACE.sub(" ", raw).strip())


def _decode_header_value(name: str, raw: str) -> str:
    unfolded = unfold(str(raw))
    if name.lower() not in TEXT_HEADERS or "=?" not in unfolded:
        return unfolded
    value = unfolded[:MAX_TEXT_HEADER_CHARS]
    plain = decode_plain_encoded_words(value)
    if plain is not None:
        return plain
    try:
        return str(policy.default.header_fetch_parse(name, value))
    except Exception:  # noqa: BLE001 - a broken header must not break the whole email
        return unfolded


_ENCODED_WORD = re.compile(r"=\?([A-Za-z0-9_-]{1,40})\?([QqBb])\?([!->@-~]*?)\?=")
_BAD_Q_ESCAPE = re.compile(r"=(?![0-9A-Fa-f]{2})")
#: Charsets decoded here; words in any other go to the standard library's full header parser.
_PLAIN_CHARSETS = frozenset({"utf-8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252"})


def decode_plain_encoded_words(value: str) -> str | None:
    """RFC 2047 encoded words in a text header decoded, for the plain form most mail has: each word
    well formed, in a common charset, on its own between white space; the white space between two
    adjacent words dropped (RFC 2047 6.2). None for anything else, which policy.default reads (its
    parser costs about ten times as much)."""
    pieces: list[str] = []
    position = 0
    after_word = False
    for word in _ENCODED_WORD.finditer(value):
        start, end = word.span()
        if (start and not value[start - 1].isspace()) or (end < len(value) and not value[end].isspace()):
            return None
        between = value[position:start]
        if not (after_word and not between.strip()):
            pieces.append(between)
        charset, encoding, text = word[1].lower(), word[2].lower(), word[3]
        if charset not in _PLAIN_CHARSETS:
            return None
        try:
            if encoding == "q":
                if _BAD_Q_ESCAPE.search(text):
                    return None
                data = binascii.a2b_qp(text.encode("ascii"), header=True)
            else:
                data = base64.b64decode(text.encode("ascii"), validate=True)
            pieces.append(data.decode(charset))
        except (ValueError, UnicodeError):  # binascii.Error is a ValueError
            return None
        position, after_word = end, True
    pieces.append(value[position:])
    decoded = "".join(pieces)
    return decoded if decoded.isprintable() else None


def parse_header_block(block: str) -> list[tuple[str, str]]:
    """Decoded header pairs from a raw header block (e.g. SendGrid's `headers` field)."""
    return header_pairs(HeaderParser(policy=policy.compat32).parsestr(block, headersonly=True))


# RFC 2045 token characters, less "*" (RFC 2231's mark of an encoded or continued parameter).
_TOKEN = r"[!#$%&'+.^_`|~0-9A-Za-z-]+"
# Printable ASCII in a quoted string, less the quote, backslash escapes and angle brackets (which
# the standard library's unquoting strips from around a value).
_QUOTED = r'"[ !#-;=?-\[\]-~]*"'
_SPACE = r"[ \t\r\n]*"
_PLAIN_CONTENT_TYPE = re.compile(
    rf"{_SPACE}({_TOKEN}/{_TOKEN}){_SPACE}((?:;{_SPACE}{_TOKEN}=(?:{_TOKEN}|{_QUOTED}){_SPACE})*);?{_SPACE}"
)
_PLAIN_PARAMETER = re.compile(rf'({_TOKEN})=(?:({_TOKEN})|"([^"]*)")')


_PLAIN_CONTENT_TYPE_READ = "_relay_plain_content_type"


def plain_content_type(part: Message) -> tuple[str, dict[str, str]] | None:
    """The part's content type and parameters when its Content-Type has the plain form most mail
    uses (tokens and simple quoted strings; no RFC 2231 parameters, comments or escapes), read as
    `get_content_type` and `get_param` read them (the first of a repeated parameter counts); None
    when it has another form or is missing. The standard library parses the parameters anew on
    every `get_param`, five times per message for the charsets, file names and boundary; this reads
    them once per part and keeps the result on it (parts are not changed once parsed)."""
    if _PLAIN_CONTENT_TYPE_READ in part.__dict__:
        return part.__dict__[_PLAIN_CONTENT_TYPE_READ]  # type: ignore[no-any-return]
    read = None
    value = part.get("content-type")
    found = _PLAIN_CONTENT_TYPE.fullmatch(value) if isinstance(value, str) else None  # else a Header (8-bit)
    if found is not None:
        parameters: dict[str, str] = {}
        for name, token, quoted in _PLAIN_PARAMETER.findall(found[2]):
            parameters.setdefault(name.lower(), token or quoted)
        read = (found[1].lower(), parameters)
    part.__dict__[_PLAIN_CONTENT_TYPE_READ] = read
    return read


def content_type_of(part: Message) -> str:
    plain = plain_content_type(part)
    return plain[0] if plain else part.get_content_type()


def _read_parameter(read: Callable[[], Any]) -> Any:
    """A parameter as the standard library reads it, or None where its RFC 2231 decoding fails (it
    raises TypeError on `name*=…; name*0=…`): an unreadable parameter is treated as absent."""
    try:
        return read()
    except Exception:  # noqa: BLE001 - whatever the decoding raises, the header is bad input
        return None


def _parameter(part: Message, name: str, standard: Callable[[], Any]) -> str | None:
    """A Content-Type parameter from the plain form when the part has it, else as `standard` (a
    standard library reader of the same parameter) gives it; None where that raises."""
    plain = plain_content_type(part)
    if plain is not None:
        return plain[1].get(name)
    found = _read_parameter(standard)
    return None if found is None else str(found)


def charset_of(part: Message) -> str | None:
    """As `get_content_charset()` (lowercased); None where that raises."""
    charset = _parameter(part, "charset", part.get_content_charset)
    return None if charset is None else charset.lower()


def boundary_of(part: Message) -> str | None:
    """As `get_boundary()` (trailing white space dropped); None where that raises."""
    boundary = _parameter(part, "boundary", part.get_boundary)
    return None if boundary is None else boundary.rstrip()


def _file_name(part: Message) -> str | None:
    """As `get_filename()` (Content-Disposition's filename, else Content-Type's name); None where that raises."""
    if part.get("content-disposition") is None:
        plain = plain_content_type(part)
        if plain is not None:
            name = plain[1].get("name")
            return None if name is None else name.strip()
    found = _read_parameter(part.get_filename)
    return None if found is None else str(found)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = charset_of(part) or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def filename_of(part: Message) -> str | None:
    """The part's file name, RFC 2231 parameters or (as many mailers write them) RFC 2047 words decoded."""
    name = _file_name(part)
    if not name:
        return None
    name = without_surrogates(name)
    if "=?" in name:
        try:
            return str(policy.default.header_fetch_parse("subject", name))
        except Exception:  # noqa: BLE001 - an unreadable name is shown as it came
            return name
    return name


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("content-disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or (disposition != "inline" and bool(filename_of(part)))


def encoded_size(part: Message) -> int:
    """The decoded size of a part, computed from its encoded form: attachments are never decoded to be sized."""
    omitted = part.get(OMITTED_SIZE_HEADER)
    if omitted is not None and str(omitted).strip().isdigit():
        return int(str(omitted).strip())
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        return 0
    encoding = str(part.get("content-transfer-encoding") or "").strip().lower()
    if encoding == "base64":
        tail = payload.rstrip()[-2:]
        blanks = sum(payload.count(c) for c in ("\n", "\r", " ", "\t"))
        return max(0, (len(payload) - blanks) * 3 // 4 - tail.count("="))
    if encoding == "quoted-printable":
        return len(quopri.decodestring(payload.encode("ascii", "replace")))
    return len(payload.encode("utf-8", "surrogateescape"))


_BOUNDARY_PARAMETER = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"^--([^\s]+?)(--)?[ \t]*\r?$", re.MULTILINE)


#: A leaf part's body larger than this that is not text is sized and left out before parsing.
LARGE_PART_BYTES = 64 * 1024
#: Header the relay puts on a part whose body it left out, carrying the body's decoded size.
OMITTED_SIZE_HEADER = "X-Relay-Omitted-Body-Size"
_PART_HEADERS_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_TYPE = re.compile(rb"^content-type:[ \t]*([^;\r\n]*)", re.IGNORECASE | re.MULTILINE)
_TRANSFER_ENCODING = re.compile(rb"^content-transfer-encoding:[ \t]*([\w-]+)", re.IGNORECASE | re.MULTILINE)


def _decoded_size(raw: bytes, start: int, end: int, encoding: bytes) -> int:
    """The decoded size of raw[start:end] in that transfer encoding, counted without copying it."""
    length = end - start
    if encoding.lower() == b"base64":
        blanks = sum(raw.count(c, start, end) for c in (b"\n", b"\r", b" ", b"\t"))
        padding = raw.count(b"=", max(start, end - 4), end)
        return max(0, (length - blanks) * 3 // 4 - padding)
    return length


_LOWERED_WINDOW = 1024 * 1024


def mime_boundaries(raw: bytes) -> set[bytes]:
    """Every boundary parameter the message declares, at any depth: what _BOUNDARY_PARAMETER.finditer
    finds, tried only where a lowercased copy has the word (a case-blind regex scan costs more).
    The copy is made a window at a time, so that it costs a megabyte however large the message."""
    found: set[bytes] = set()
    for window in range(0, len(raw), _LOWERED_WINDOW):
        # Overlapping by the word's length, so a word across two windows is seen (in the first).
        lowered = raw[window : window + _LOWERED_WINDOW + 7].lower()
        position = lowered.find(b"boundary")
        while position != -1 and position < _LOWERED_WINDOW:
            match = _BOUNDARY_PARAMETER.match(raw, window + position)
            if match:
                found.add(match[1] or match[2])
            position = lowered.find(b"boundary", (match.end() - window) if match else position + 1)
    return found


def omit_large_bodies(raw: bytes, threshold: int = LARGE_PART_BYTES, boundaries: set[bytes] | None = None) -> bytes:
    """The message with the bodies of large non-text parts (attachments, images) left out.

    Their decoded size goes in an `X-Relay-Omitted-Body-Size` header of the part: the body
    lists attachments by name and size, so nothing else of them is ever needed, and a 25 MB
    attachment is then neither copied into the parser's lines nor decoded.
    """
    if len(raw) < threshold:
        return raw
    boundaries = mime_boundaries(raw) if boundaries is None else boundaries
    if not boundaries:
        return raw
    lines = [line for line in _DELIMITER_LINE.finditer(raw) if line[1] in boundaries]
    pieces: list[bytes] = []
    kept_to = 0
    for opening, following in zip(lines, lines[1:], strict=False):
        if opening[2]:  # a closing delimiter opens no part
            continue
        part_start, part_end = opening.end(), following.start()
        if part_end - part_start < threshold:
            continue
        header_end = _PART_HEADERS_END.search(raw, part_start, min(part_end, part_start + 16 * 1024))
        if header_end is None:
            continue
        headers = raw[part_start : header_end.start()]
        content_type = _CONTENT_TYPE.search(headers)
        kind = (content_type[1].strip().lower() if content_type else b"text/plain").split(b"/")[0]
        if kind in (b"text", b"multipart", b"message"):
            continue
        encoding = _TRANSFER_ENCODING.search(headers)
        size = _decoded_size(raw, header_end.end(), part_end, encoding[1] if encoding else b"7bit")
        pieces += [raw[kept_to : header_end.start()], f"\r\n{OMITTED_SIZE_HEADER}: {size}\r\n\r\n".encode()]
        kept_to = part_end
    if not pieces:
        return raw
    return b"".join([*pieces, raw[kept_to:]])


def cut_long_text_bodies(raw: bytes, max_bytes: int, boundaries: set[bytes]) -> tuple[bytes, bool]:
    """The message with every text part's body (the message's own when it is not multipart) cut to
    `max_bytes` at a line break, and whether any was. What is read of a text is capped anyway
    (RELAY_MAX_HTML_CHARS for HTML); cutting the encoded body first keeps the parser's copies of
    a 30 MB text part from costing ten times that."""
    if len(raw) <= max_bytes:
        return raw, False
    if boundaries:
        lines = [line for line in _DELIMITER_LINE.finditer(raw) if line[1] in boundaries]
        spans = [(a.end(), b.start()) for a, b in zip(lines, lines[1:], strict=False) if not a[2]]
    else:
        spans = [(0, len(raw))]
    pieces: list[bytes] = []
    kept_to = 0
    for part_start, part_end in spans:
        if part_end - part_start <= max_bytes:
            continue
        header_end = _PART_HEADERS_END.search(raw, part_start, min(part_end, part_start + 64 * 1024))
        if header_end is None:
            continue
        content_type = _CONTENT_TYPE.search(raw, part_start, header_end.start())
        kind = (content_type[1].strip().lower() if content_type else b"text/plain").split(b"/")[0]
        if kind != b"text" or part_end - header_end.end() <= max_bytes:
            continue
        cut_at = raw.rfind(b"\n", header_end.end(), header_end.end() + max_bytes) + 1 or header_end.end() + max_bytes
        pieces.append(raw[kept_to:cut_at])
        kept_to = part_end
    if not pieces:
        return raw, False
    return b"".join([*pieces, raw[kept_to:]]), True


def cut_after_parts(raw: bytes, max_parts: int, boundaries: set[bytes] | None = None) -> tuple[bytes, bool]:
    """The message up to its `max_parts`-th MIME part, and whether anything was cut.

    Done on the bytes, before the parser builds every part in memory: a message of a hundred
    thousand tiny parts costs no more than one of `max_parts`.
    """
    boundaries = mime_boundaries(raw) if boundaries is None else boundaries
    # Every delimiter line holds "--" + a boundary: when those strings are few, so are the parts.
    if not boundaries or sum(raw.count(b"--" + boundary) for boundary in boundaries) <= max_parts:
        return raw, False
    opened = 0
    for line in _DELIMITER_LINE.finditer(raw):
        if line[1] in boundaries and not line[2]:
            opened += 1
            if opened > max_parts:
                return raw[: line.start()], True
    return raw, False


_HEADER_LINES = re.compile(rb"(?:[^\n]*+\n){%d}" % MAX_HEADER_LINES)
_BLANK_LINE_BYTES = re.compile(rb"\n\r?\n")


def cut_long_headers(raw: bytes, boundaries: set[bytes]) -> tuple[bytes, bool]:
    """The message with every header block (its own, and each part's) cut to MAX_HEADER_LINES
    lines and MAX_HEADER_BYTES bytes, and whether any was. Linear: each block is searched for its
    end only up to the next delimiter line, and only a block past a limit is walked."""
    starts = [0]
    if boundaries:
        starts += [line.end() for line in _DELIMITER_LINE.finditer(raw) if line[1] in boundaries and not line[2]]
    pieces: list[bytes] = []
    kept_to = 0
    for start, limit in zip(starts, [*starts[1:], len(raw)], strict=True):
        blank = _BLANK_LINE_BYTES.search(raw, start, limit)
        header_end = blank.start() + 1 if blank else limit
        too_long = header_end - start > MAX_HEADER_BYTES
        if not too_long and raw.count(b"\n", start, header_end) <= MAX_HEADER_LINES:
            continue
        lines = _HEADER_LINES.match(raw, start, min(header_end, start + MAX_HEADER_BYTES))
        if lines is not None:
            cut_at = lines.end()
        else:  # up to the last whole line within the byte limit, unless that drops a giant line
            # (a To with fifty thousand addresses) whose first part is worth reading: then through it
            cut_at = raw.rfind(b"\n", start, start + MAX_HEADER_BYTES) + 1
            if cut_at - start < MAX_HEADER_BYTES * 3 // 4:
                cut_at = start + MAX_HEADER_BYTES
        pieces.append(raw[kept_to:cut_at] + (b"" if raw[cut_at - 1 : cut_at] == b"\n" else b"\r\n"))
        kept_to = header_end
    if not pieces:
        return raw, False
    return b"".join([*pieces, raw[kept_to:]]), True


#: Messages the splitter reads: up to this size (it holds each level's body as a string of its
#: own, so larger ones go to the standard parser, whose memory the caps were measured with) ...
SPLIT_MAX_BYTES = 1024 * 1024
#: ... and this many levels of multipart nesting.
SPLIT_MAX_DEPTH = 8
_BLANK_LINE = re.compile(r"\n\r?\n")
#: What may follow `--boundary` on a delimiter line: `--` closes, then transport padding.
_DELIMITER_TAIL = re.compile(r"(--)?[ \t]*(?:\r?\n|\Z)")


def _without_final_line_end(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _delimiters(body: str, boundary: str) -> list[tuple[int, int, bool]]:
    """(start, end, closing) of each delimiter line of `boundary` in `body`."""
    marker = "--" + boundary
    found = []
    at = body.find(marker)
    while at != -1:
        if at == 0 or body[at - 1] == "\n":
            tail = _DELIMITER_TAIL.match(body, at + len(marker))
            if tail:
                found.append((at, tail.end(), bool(tail[1])))
        at = body.find(marker, at + 1)
    return found


def split_message(raw: bytes) -> Message | None:
    """The message exactly as `BytesParser(policy=compat32)` builds it, for the structure most mail
    has, found by string search rather than the standard parser's line-by-line loop.

    Header blocks are read as compat32 reads them (a field per line, continuation lines appended,
    the value unstripped but for white space after the colon and the final line break); parts are
    cut out as RFC 2046 and the standard parser cut them (the line break before a delimiter belongs
    to it). Anything off that path gives None, and the standard parser reads the message: a bare CR,
    a header line the parser would read otherwise (no colon, a `From ` line, a continuation first),
    no blank line after the headers, a multipart without its boundary, its first or its closing
    delimiter, a part with no blank line after its headers (two delimiters in a row among them), a
    boundary reused inside, a digest or a message/* part; and messages over SPLIT_MAX_BYTES or
    nested deeper than SPLIT_MAX_DEPTH.
    """
    if len(raw) > SPLIT_MAX_BYTES:
        return None
    text = raw.decode("ascii", "surrogateescape")
    if text.count("\r") != text.count("\r\n"):
        return None
    return _split_entity(text, ())


# One header field: its name, the colon, white space compat32 drops, then its first line and every
# continuation line (CRs are only ever part of CRLFs here: split_message sends bare CRs elsewhere).
_HEADER_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*(.*\n(?:[ \t].*\n)*)")


def _read_header_block(head: str) -> Message | None:
    """The header fields of `head` (whole lines) as compat32 reads them: the value unstripped but for
    white space after the colon and the last line break. None unless the fields cover every line."""
    entity = Message()
    at = 0
    while at < len(head):
        # Matched where the last field ended, never searched for: a search would try the name
        # pattern again at every later position of a long line without a colon (quadratic).
        found = _HEADER_FIELD.match(head, at)
        if found is None:
            return None  # a line that is not a field: no colon, a `From ` line, a continuation first
        entity.set_raw(found[1], found[2].rstrip("\r\n"))
        at = found.end()
    return entity


def _split_entity(text: str, outer: tuple[str, ...]) -> Message | None:
    if text.startswith(("\n", "\r\n")):
        head, body = "", text[text.index("\n") + 1 :]
    else:
        blank = _BLANK_LINE.search(text)
        if blank is None:
            return None
        head, body = text[: blank.start() + 1], text[blank.end() :]
    entity = _read_header_block(head)
    if entity is None:
        return None
    maintype, _, subtype = content_type_of(entity).partition("/")
    if maintype == "message":
        return None
    if maintype != "multipart":
        entity.set_payload(body)
        return entity
    boundary = boundary_of(entity)
    if boundary is None or subtype == "digest" or boundary in outer:
        return None
    if len(outer) >= SPLIT_MAX_DEPTH:
        return None
    lines = _delimiters(body, boundary)
    if not lines or lines[0][2]:
        return None
    if lines[0][0]:
        entity.preamble = _without_final_line_end(body[: lines[0][0]])
    parts: list[Message | str] = []
    for (_, opening_end, closing), (following, _, _) in zip(lines, lines[1:], strict=False):
        if closing:
            break
        part = _split_entity(body[opening_end:following], (*outer, boundary))
        if part is None:
            return None
        # Both are strings here: this function sets every epilogue and every leaf's payload.
        if part.is_multipart():
            part.epilogue = None if part.epilogue == "" else _without_final_line_end(str(part.epilogue))
        else:
            part.set_payload(_without_final_line_end(str(part.get_payload())))
        parts.append(part)
    if len(parts) >= len(lines) or not lines[len(parts)][2]:
        return None  # no closing delimiter
    entity.set_payload(parts)
    entity.epilogue = body[lines[len(parts)][1] :]
    return entity


def walk_within(message: Message, max_depth: int) -> tuple[list[Message], bool]:
    """The leaf parts, depth first in order, reading at most `max_depth` levels of multipart nesting."""
    leaves: list[Message] = []
    too_deep = False
    stack: list[tuple[Message, int]] = [(message, 0)]
    while stack:
        part, depth = stack.pop()
        if not part.is_multipart():
            leaves.append(part)
            continue
        if depth >= max_depth:
            too_deep = True
            continue
        children = part.get_payload()
        if isinstance(children, list):
            stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
    return leaves, too_deep


def parse_mime(raw: bytes, *, limits: ParseLimits | None = None, **extra: object) -> Email:
    """Read one RFC 5322 message; `extra` goes to build_email (envelope, metadata, ...)."""
    limits = limits or ParseLimits()
    if not raw or not raw.strip():
        raise MalformedPayload("empty message")
    truncated: list[str] = []
    boundaries = mime_boundaries(raw)
    raw, cut = cut_after_parts(raw, limits.parts, boundaries)
    if cut:
        truncated.append(TRUNCATED_PARTS)
    raw, cut = cut_long_headers(raw, boundaries)
    if cut:
        truncated.append(TRUNCATED_HEADERS)
    raw, cut = cut_long_text_bodies(raw, TEXT_BYTES_PER_CHAR * limits.html_chars, boundaries)
    if cut:
        truncated.append(TRUNCATED_TEXT)
    raw = omit_large_bodies(raw, boundaries=boundaries)
    try:
        # compat32 keeps header values as the raw strings they are: the structured headers of
        # policy.default cost most of a parse, and only the subject (decoded apart) is shown.
        message = split_message(raw)
        if message is None:
            message = BytesParser(policy=policy.compat32).parsebytes(raw)
    except Exception as exc:  # noqa: BLE001 - the stdlib parser is lenient; anything it raises is bad input
        raise MalformedPayload(f"unreadable MIME message ({type(exc).__name__})") from exc
    pairs = header_pairs(message)
    if not any(name.lower() in ("from", "to", "subject", "message-id", "date") for name, _ in pairs):
        raise MalformedPayload("no email headers found (expected From, To, Subject, ...)")

    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = []
    leaves, too_deep = walk_within(message, limits.depth)
    if too_deep:
        truncated.append(TRUNCATED_NESTING)
    for part in leaves:
        content_type = content_type_of(part)
        if _is_attachment(part):
            attachments.append(Attachment(filename_of(part) or "attachment", encoded_size(part), content_type))
        elif content_type == "text/html" and html is None:
            html = _part_text(part)
        elif content_type == "text/plain" and text is None:
            text = _part_text(part)
        elif content_type.partition("/")[0] not in ("text", "multipart"):
            if content_type.startswith("image/") and part.get("content-id"):
                continue  # inline images referenced by cid: are dropped with their references
            attachments.append(Attachment(filename_of(part) or "attachment", encoded_size(part), content_type))
    return build_email(
        headers=pairs, text=text, html=html, attachments=attachments, limits=limits, truncated=truncated,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip
