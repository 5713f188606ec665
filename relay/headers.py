"""Header fields and MIME part fields: decoded (RFC 2047), unfolded, their parameters read within
bounds. Pure: no I/O."""

from __future__ import annotations

import base64
import binascii
import quopri
import re
import secrets
from collections.abc import Callable, Iterable
from email import policy
from email.message import Message
from email.parser import HeaderParser
from typing import Any

_WHITESPACE = re.compile(r"\s+")
#: Headers whose text is shown (the subject goes to Knock), so their RFC 2047 words are decoded.
#: Every other header is only matched against tokens, so it is unfolded and left raw: decoding
#: Received, DKIM-Signature and the like costs much and tells the relay nothing.
TEXT_HEADERS = frozenset({"subject"})
#: The decoded text of a header is read from at most this many characters.
MAX_TEXT_HEADER_CHARS = 16 * 1024
#: Header the relay puts on a part whose body it left out, carrying the body's decoded size.
#: The header relay.mime gives a part whose body it left out, with the body's decoded size. Named
#: with a random part per process, so that a header a sender wrote is never taken for it.
OMITTED_SIZE_HEADER = f"X-Relay-Omitted-Body-Size-{secrets.token_hex(8)}"
#: Characters of an attachment's file name read (its encoded form): no real file name comes near,
#: and the standard library's decoder of encoded words costs far more than linear time.
MAX_FILE_NAME_CHARS = 1024


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


def _with_8bit_headers_read(part: Message) -> Message:
    """`part`, or where its Content-Disposition or Content-Type holds raw 8-bit bytes (a file name
    in UTF-8, RFC 6532) a copy of those two read as UTF-8: compat32 hands such a value over as an
    email.header.Header, whose parameters read as mojibake."""
    fields = [(k, v) for k, v in part.raw_items() if k.lower() in ("content-disposition", "content-type")]
    if not any(isinstance(v, str) and _SURROGATE.search(v) for _, v in fields):
        return part
    clean = Message()
    for name, value in fields:
        clean[name] = without_surrogates(str(value))
    return clean


def _file_name(part: Message) -> str | None:
    """As `get_filename()` (Content-Disposition's filename, else Content-Type's name); None where that raises."""
    part = _with_8bit_headers_read(part)
    if part.get("content-disposition") is None:
        plain = plain_content_type(part)
        if plain is not None:
            name = plain[1].get("name")
            return None if name is None else name.strip()
    found = _read_parameter(part.get_filename)
    return None if found is None else str(found)


def part_text(part: Message) -> str:
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
    name = without_surrogates(name[:MAX_FILE_NAME_CHARS])
    if "=?" in name:
        plain = decode_plain_encoded_words(name)
        if plain is not None:
            return plain
        try:
            return str(policy.default.header_fetch_parse("subject", name))
        except Exception:  # noqa: BLE001 - an unreadable name is shown as it came
            return name
    return name


def is_attachment(part: Message) -> bool:
    disposition = str(_with_8bit_headers_read(part).get("content-disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment" or (disposition != "inline" and bool(filename_of(part)))


def encoded_size(part: Message) -> int:
    """The decoded size of a part, computed from its encoded form: attachments are never decoded to be sized."""
    omitted = part.get(OMITTED_SIZE_HEADER)
    if omitted is not None and str(omitted).strip().isdigit() and len(str(omitted).strip()) <= 15:
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
