"""Raw MIME to an Email: linear pre-passes over the bytes (large bodies left out, long texts, parts
and header blocks cut), a bounded split into parts, and the parse. Pure: no I/O."""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import BytesParser

from relay.errors import MalformedPayload
from relay.headers import (
    OMITTED_SIZE_HEADER,
    boundary_of,
    content_type_of,
    encoded_size,
    filename_of,
    header_pairs,
    is_attachment,
    part_text,
)
from relay.message import (
    MAX_HEADER_BYTES,
    MAX_HEADER_LINES,
    TEXT_BYTES_PER_CHAR,
    TRUNCATED_HEADERS,
    TRUNCATED_NESTING,
    TRUNCATED_PARTS,
    TRUNCATED_TEXT,
    Attachment,
    Email,
    ParseLimits,
    build_email,
)

_BOUNDARY_PARAMETER = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]{1,200})"|([^\s;"]{1,200}))', re.IGNORECASE)
_DELIMITER_LINE = re.compile(rb"^--([^\s]+?)(--)?[ \t]*\r?$", re.MULTILINE)


#: A leaf part's body larger than this that is not text is sized and left out before parsing.
LARGE_PART_BYTES = 64 * 1024
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
        if is_attachment(part):
            attachments.append(Attachment(filename_of(part) or "attachment", encoded_size(part), content_type))
        elif content_type == "text/html" and html is None:
            html = part_text(part)
        elif content_type == "text/plain" and text is None:
            text = part_text(part)
        elif content_type.partition("/")[0] not in ("text", "multipart"):
            if content_type.startswith("image/") and part.get("content-id"):
                continue  # inline images referenced by cid: are dropped with their references
            attachments.append(Attachment(filename_of(part) or "attachment", encoded_size(part), content_type))
    return build_email(
        headers=pairs, text=text, html=html, attachments=attachments, limits=limits, truncated=truncated,
        **extra,  # type: ignore[arg-type]
    )  # fmt: skip
