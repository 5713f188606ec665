"""Fast paths of the parser agree with the standard library's full parsers wherever they answer."""

from __future__ import annotations

import base64
import binascii
from email import policy
from email.utils import getaddresses

from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.message import (
    _BOUNDARY_PARAMETER,
    _PLAIN_MAILBOX,
    decode_plain_encoded_words,
    mailbox_addresses,
    mime_boundaries,
    parse_mime,
)

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
