"""Fast paths agree with the slow, general ones (the standard library's parsers, the per-attribute
sanitiser) wherever they answer."""

from __future__ import annotations

import base64
import binascii
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.addresses import _PLAIN_MAILBOX, mailbox_addresses
from relay.headers import (
    _file_name,
    boundary_of,
    charset_of,
    content_type_of,
    decode_plain_encoded_words,
    plain_content_type,
    unfold,
    without_surrogates,
)
from relay.html_bounds import bound_html
from relay.knock.schema import (
    _CLEANER,
    _inert_styles,
    safe_style,
    sanitise_html,
)
from relay.message import _WHITESPACE
from relay.mime import (
    _BOUNDARY_PARAMETER,
    SPLIT_MAX_BYTES,
    SPLIT_MAX_DEPTH,
    _read_header_block,
    mime_boundaries,
    parse_mime,
    split_message,
)
from tests.helpers import PAYLOADS

CHARSETS = ["utf-8", "UTF-8", "iso-8859-1", "windows-1252", "us-ascii", "koi8-r", "utf-16"]


def encoded_word(text: str, charset: str, encoding: str) -> str:
    try:
        data = text.encode(charset)
    except (UnicodeEncodeError, LookupError):
        data = text.encode("utf-8", "replace")
        charset = "utf-8"
    if encoding == "B":
        payload = base64.b64encode(data).decode()
    else:
        payload = binascii.b2a_qp(data, header=True).decode().replace("=\n", "").replace("?", "=3F")
    return f"=?{charset}?{encoding}?{payload}?="


words = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).flatmap(
        lambda text: st.builds(encoded_word, st.just(text), st.sampled_from(CHARSETS), st.sampled_from(["Q", "B", "q"]))
    ),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=10),  # plain words
    st.sampled_from(["=?utf-8?q?bad=2?=", "=?utf-8?b?w6l?=", "x=?utf-8?q?glued?=", "=?unknown?q?x?=", "=?", "?="]),
)
subjects = st.lists(st.tuples(words, st.sampled_from([" ", "  ", "\t", " \t "])), min_size=1, max_size=6).map(
    lambda pairs: "".join(word + gap for word, gap in pairs).strip()
)


@settings(max_examples=400)
@given(subjects)
@example("=?utf-8?q?Is_the_2BR_still_available=3F_=E2=80=93_tour?=")
@example("Re: =?utf-8?b?w6lsw6h2ZQ==?= and =?iso-8859-1?q?caf=E9?= x")
def test_encoded_words_decode_as_the_standard_library_decodes_them(subject: str) -> None:
    fast = decode_plain_encoded_words(subject)
    if fast is not None:
        assert fast == str(policy.default.header_fetch_parse("subject", subject))


def test_the_plain_form_takes_the_fast_path_and_the_rest_falls_back() -> None:
    assert decode_plain_encoded_words("=?utf-8?q?a?= =?utf-8?q?b?= c") == "ab c"
    assert decode_plain_encoded_words("Re: =?iso-8859-1?q?caf=E9?=") == "Re: café"
    for unusual in ("x=?utf-8?q?a?=", "=?utf-8?q?a=2?=", "=?koi8-r?b?8NLJ18XU?=", "=?utf-8?b?w6l?="):
        assert decode_plain_encoded_words(unusual) is None
    # ... and what falls back is still decoded, by the standard library's parser
    email = parse_mime(b"From: a@x.com\r\nSubject: =?koi8-r?b?8NLJ18XU?=\r\n\r\nhi\r\n")
    assert email.subject == "Привет"


atoms = st.text(st.sampled_from("abcXYZ09.-_+=?é'!#$%&*/^`{|}~"), min_size=1, max_size=6)
names = st.text(st.sampled_from("abc XYZ.'é=?-_!#\t"), max_size=10)
odd = st.text(st.sampled_from('ab@<>",;:()\\[] .'), min_size=1, max_size=12)
mailboxes = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", atoms, atoms),
    st.builds(lambda name, local, domain: f"{name} <{local}@{domain}>", names, atoms, atoms),
    st.builds(lambda name, local, domain: f"{name}<{local}@{domain}>", names, atoms, atoms),
    odd,
)


@settings(max_examples=500)
@given(st.lists(st.builds(lambda a, b, c: a + b + c, st.sampled_from(["", " ", "\t "]), mailboxes,
                          st.sampled_from(["", " "])), min_size=1, max_size=3))  # fmt: skip
@example(["Renter Person <renter@example.com>"])
@example(['"Doe, Jo" <jo@x.com>', "b@y.com"])
def test_plain_mailboxes_read_as_getaddresses_reads_them(values: list[str]) -> None:
    assert mailbox_addresses(values) == [addr for _, addr in getaddresses(values)]


def test_plain_mailboxes_take_the_fast_path() -> None:
    assert _PLAIN_MAILBOX.fullmatch("Renter Person <renter@example.com>")
    assert _PLAIN_MAILBOX.fullmatch("renter@example.com")
    assert not _PLAIN_MAILBOX.fullmatch('"Doe, Jo" <jo@x.com>')
    assert not _PLAIN_MAILBOX.fullmatch("a@b, c@d")


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"boundary=", b"BoUnDaRy = ", b'boundary="', b"x", b'"', b"\r\n", b";", b"bound",
                                 b"ary", b"=b1", b"Content-Type: multipart/mixed; "]),
                max_size=14).map(b"".join))  # fmt: skip
def test_boundaries_are_found_as_a_case_blind_regex_scan_finds_them(raw: bytes) -> None:
    assert mime_boundaries(raw) == {m[1] or m[2] for m in _BOUNDARY_PARAMETER.finditer(raw)}


# MIME structure: the string-search splitter against the standard parser --------------------------

NAMES = ["Subject", "X-Tag", "Content-Transfer-Encoding", "X-Empty"]
VALUES = ["hello", "", "  padded  ", "a: b", "=?utf-8?q?x?=", "x\r\n folded", "x\r\n\tfolded\r\n more"]
SEPARATORS = [": ", ": ", ":", ":\t", ": \t "]
ODD_HEADER_LINES = ["no colon here", " continuation", "From someone", ": no name", "Bad Name: x"]
BOUNDARIES = ["b1", "b1x", "=_Part.1+x", "a(b)", "B-2"]
# Mostly plain lines; now and then one that looks like, or is, a delimiter line.
BODY_LINES = ["text"] * 40 + ["", "--b1", "--b1--", "--b1x", "--b1  ", "-- b1", "From x", "--B-2", "--=_Part.1+x--"]


@st.composite
def mime_entities(draw: st.DrawFn, depth: int = 0, outer: tuple[str, ...] = (), *, plain: bool = False,
                  eol: str | None = None) -> str:  # fmt: skip
    """A MIME entity. `plain`: the common structure only (one line break throughout, headers all
    well formed, a boundary per level, at least one part, closing delimiters, no look-alike lines)."""
    eol = eol or draw(st.sampled_from(["\r\n", "\n"]))
    pairs = draw(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(SEPARATORS), st.sampled_from(VALUES)),
                          max_size=3))  # fmt: skip
    headers = [f"{name}{separator}{value}".replace("\r\n", eol) for name, separator, value in pairs]
    if not plain and draw(st.integers(0, 9)) == 0:
        headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(ODD_HEADER_LINES)))
    kinds = (
        ["leaf", "multipart"] if plain else ["leaf", "leaf", "multipart", "multipart", "multipart", "message", "digest"]
    )
    kind = draw(st.sampled_from(kinds if depth < 3 else ["leaf"]))
    lines = st.sampled_from(["text", "", "-- not a delimiter"] if plain else BODY_LINES)
    inner = {"plain": plain, "eol": eol if plain else None}
    if kind == "leaf":
        headers.append(f"Content-Type: {draw(st.sampled_from(['text/plain', 'text/html; charset=utf-8']))}")
        body = eol.join(draw(st.lists(lines, max_size=4)))
        return eol.join(headers) + eol + eol + body + draw(st.sampled_from(["", eol]))
    if kind == "message":
        headers.append("Content-Type: message/rfc822")
        return eol.join(headers) + eol + eol + draw(mime_entities(depth + 1, outer))
    boundary = draw(st.sampled_from([b for b in BOUNDARIES if not (plain and b in outer)]))
    subtype = "digest" if kind == "digest" else draw(st.sampled_from(["mixed", "alternative"]))
    quoted = draw(st.booleans()) or not boundary.isalnum()
    headers.append(f"Content-Type: multipart/{subtype}; boundary={chr(34) * quoted}{boundary}{chr(34) * quoted}")
    text = eol.join(headers) + eol + eol
    if draw(st.booleans()):
        text += eol.join(draw(st.lists(lines, min_size=1, max_size=2))) + eol
    for _ in range(draw(st.sampled_from([1, 2, 3] if plain else [1, 1, 2, 2, 3, 0]))):
        padding = draw(st.sampled_from(["", "", " ", "\t "]))
        text += f"--{boundary}{padding}{eol}" + draw(mime_entities(depth + 1, (*outer, boundary), **inner)) + eol
    if plain or draw(st.integers(0, 5)):
        text += f"--{boundary}--" + draw(st.sampled_from(["", eol, eol + "epilogue" + eol, eol + eol]))
    return text


def mime_shape(message: Any) -> Any:
    payload = message.get_payload()
    return (list(message.raw_items()), message.get_unixfrom(), message.preamble, message.epilogue,
            message.get_default_type(), [mime_shape(part) for part in payload]
            if isinstance(payload, list) else payload)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(mime_entities())
def test_the_mime_splitter_builds_what_the_standard_parser_builds(text: str) -> None:
    raw = text.encode("utf-8", "surrogateescape")
    split = split_message(raw)
    if split is not None:
        assert mime_shape(split) == mime_shape(BytesParser(policy=policy.compat32).parsebytes(raw))


@settings(max_examples=500, deadline=None)
@given(mime_entities(plain=True))
def test_the_mime_splitter_reads_the_common_structure_as_the_standard_parser(text: str) -> None:
    raw = text.encode("utf-8", "surrogateescape")
    split = split_message(raw)
    assert split is not None
    assert mime_shape(split) == mime_shape(BytesParser(policy=policy.compat32).parsebytes(raw))


def test_the_mime_splitter_reads_the_common_messages() -> None:
    """Mail as it mostly comes takes the fast path: every fixture email, multipart or not."""
    for path in sorted(PAYLOADS.glob("**/*.eml")):
        raw = path.read_bytes()
        split = split_message(raw)
        assert split is not None, path.name
        assert mime_shape(split) == mime_shape(BytesParser(policy=policy.compat32).parsebytes(raw)), path.name


@pytest.mark.parametrize("last", ["no colon here", "From someone", ": no name", "Bad Name: x"])
def test_a_header_block_is_read_only_when_every_line_is_a_field(last: str) -> None:
    assert _read_header_block(f"A: 1\r\n{last}\r\n") is None
    read = _read_header_block("A:\t 1\r\n\tmore\r\nB: 2\n")
    assert read is not None and list(read.raw_items()) == [("A", "1\r\n\tmore"), ("B", "2")]


def test_deep_or_large_messages_go_to_the_standard_parser() -> None:
    """The splitter keeps each level's body as a string: deep nesting or a large message would
    multiply the memory a message takes, so those are read by the standard parser."""
    text = "Content-Type: text/plain\r\n\r\nhi\r\n"
    for level in range(SPLIT_MAX_DEPTH + 2, 0, -1):
        text = f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n{text}\r\n--b{level}--\r\n"
    assert split_message(text.encode()) is None
    assert split_message(b"Content-Type: text/plain\r\n\r\n" + b"x" * SPLIT_MAX_BYTES) is None
    shallow = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n"
    assert split_message(shallow.encode()) is not None


# Inline CSS is checked in the sanitiser's output rather than by a callback per attribute -----------

style_declarations = st.sampled_from([
    "color: red", "COLOR:Red", "font-family: 'Times New Roman', serif", 'font-family: "A&B"',
    "width:expression(alert(1))", "color:rgb(1,2,3)", "background:url(https://t.example/x.gif)", "color:re\\64",
    "color:red/**/", "position:fixed", "margin:0 auto",
    "text-align:center !important", "font-size:12px\u00a0", "color:<b>", "height:1px;", "", ";;", "x", "color:",
])  # fmt: skip
attribute_values = st.lists(
    st.sampled_from(['style="x"', "style=", "<", ">", "&amp;", "&quot;", "'", "\u00a0", "a", " ", "cid:x", "&"]),
    max_size=4,
).map("".join)
QUOTE_REFERENCES = {'"': "&quot;", "'": "&#39;"}
styles = st.lists(style_declarations, max_size=4).map(";".join)


class _Tokens(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[Any, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append(("start", tag, sorted(attrs, key=str)))

    def handle_endtag(self, tag: str) -> None:
        self.found.append(("end", tag))

    def handle_data(self, data: str) -> None:
        self.found.append(("text", data))


def tokens(markup: str) -> list[tuple[Any, ...]]:
    parser = _Tokens()
    parser.feed(markup)
    parser.close()
    return parser.found


@st.composite
def html_fragments(draw: Any) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["tag", "text", "close"]))
        if kind == "text":
            parts.append(draw(st.sampled_from(["hi", ' style="color:red"', "a < b", "&lt;p style=&quot;x&quot;&gt;",
                                              "style=", "\u00a0", "x > y"])))  # fmt: skip
        elif kind == "close":
            parts.append(f"</{draw(st.sampled_from(['p', 'a', 'td', 'span']))}>")
        else:
            name = draw(st.sampled_from(["p", "a", "img", "td", "span", "table", "script", "STYLE", "P"]))
            attributes = []
            for attribute in draw(st.lists(st.sampled_from(["style", "title", "href", "src", "align", "onclick",
                                                             "STYLE", "data-style"]), max_size=4)):  # fmt: skip
                value = draw(styles) if attribute.lower() == "style" else draw(attribute_values)
                quote = draw(st.sampled_from(['"', "'"]))
                written = value.replace(quote, QUOTE_REFERENCES[quote])
                attributes.append(f" {attribute}={quote}{written}{quote}")
            parts.append(f"<{name}{''.join(attributes)}>")
    return "".join(parts)


@settings(max_examples=1500, deadline=None)
@given(html_fragments())
@example('<p title="a style=&quot;b" style="color:red;width:expression(1)">style="color:x"</p>')
@example("<p style=\"font-family: 'A&quot;B'\">x</p>")
def test_inline_css_is_cut_as_a_tokenizer_reads_the_sanitised_markup(markup: str) -> None:
    # The reference reads the sanitiser's output with the standard library's tokenizer and cuts
    # every style attribute it finds there to its inert part.
    expected = []
    for token in tokens(_CLEANER.clean(bound_html(markup)[0]).strip()):
        if token[0] == "start":
            attributes = [(name, safe_style(value or "") if name == "style" else value) for name, value in token[2]]
            token = ("start", token[1], [(name, value) for name, value in attributes if value is not None])
        expected.append(token)
    assert tokens(sanitise_html(markup)) == expected


def test_common_markup_takes_the_single_pass() -> None:
    cleaned = _CLEANER.clean('<p style="color:red;position:fixed">x</p><p title="t" style="width:url(x)">y</p>')
    assert _inert_styles(cleaned) == '<p style="color:red">x</p><p title="t">y</p>'
    # text that reads like a style attribute is text: only the tags' own are cut
    cut = _inert_styles(_CLEANER.clean('<p style="color:red;position:fixed">say style="position:fixed"</p>'))
    assert cut == '<p style="color:red">say style="position:fixed"</p>'


# Content-Type parameters read once, in the plain form -----------------------------------------

content_type_spaces = st.sampled_from(["", "", " ", "\r\n\t", "  ", "\x0b"])
content_type_parameters = st.sampled_from([
    "charset=utf-8", "CHARSET=UTF-8", 'charset="iso-8859-1"', "charset=", 'charset=""', "charset=latin1",
    'boundary="b 1=;x"', "boundary=b1", 'boundary="<b>"', 'boundary="b1  "', "name=a.pdf", 'name="a b.pdf"',
    "name*=utf-8''a%20b.pdf", "name*0=a", 'name="a\\"b"', "(comment)", "name=\u00e9.pdf", 'name=" x "', "x", "=",
    "filename=f.txt", "Name=N.pdf", 'name="<a>"', "boundary=", 'x="y', "a=b=c",
])  # fmt: skip


@st.composite
def content_types(draw: Any) -> str:
    space = content_type_spaces
    types = ["text/plain", "TEXT/HTML", "multipart/alternative", "application/pdf", "text", "text/plain/x",
             "text /plain", "multipart/digest"]  # fmt: skip
    value = draw(space) + draw(st.sampled_from(types))
    for parameter in draw(st.lists(content_type_parameters, max_size=4)):
        value += draw(space) + draw(st.sampled_from([";", ";", "", ","])) + draw(space) + parameter
    return value + draw(space) + draw(st.sampled_from(["", "", ";"])) + draw(space)


def standard_or_none(read: Any) -> Any:
    """What the standard library reads, or None where it raises (RFC 2231 decoding can)."""
    try:
        return read()
    except TypeError:
        return None


@settings(max_examples=3000, deadline=None)
@given(content_types(), st.booleans())
@example('multipart/alternative;\r\n\tboundary="b1"; charset=UTF-8', False)
def test_content_type_parameters_read_as_the_standard_library_reads_them(value: str, disposition: bool) -> None:
    part = Message()
    part["Content-Type"] = value
    if disposition:
        part["Content-Disposition"] = "attachment; filename=d.txt"
    assert content_type_of(part) == part.get_content_type()
    assert charset_of(part) == standard_or_none(part.get_content_charset)
    assert boundary_of(part) == standard_or_none(part.get_boundary)
    expected_name = standard_or_none(part.get_filename)
    assert _file_name(part) == (None if expected_name is None else str(expected_name))


def test_the_usual_content_types_take_the_plain_path() -> None:
    for value in ("text/plain; charset=utf-8", 'multipart/mixed;\r\n boundary="=_b1"', "application/pdf; name=a.pdf",
                  "text/html"):  # fmt: skip
        part = Message()
        part["Content-Type"] = value
        assert plain_content_type(part) is not None, value


@settings(max_examples=1000)
@given(st.lists(st.sampled_from(["a", " ", "  ", "\t", "\r\n ", "\x0b", "\x1f", "\udce9", "é", "\u2028", "\xa0", "=?"]),
                max_size=8).map("".join))  # fmt: skip
def test_unfolding_takes_a_shortcut_only_where_the_full_rule_agrees(raw: str) -> None:
    assert unfold(raw) == without_surrogates(_WHITESPACE.sub(" ", raw).strip())
