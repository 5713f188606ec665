"""Parsing cost stays linear and capped: hostile emails are logged with what was read, and the record says so.

Each test has a timeout far above its normal run time and far below what the uncapped parser took
(minutes), so a regression fails here instead of hanging a web worker.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relay.app import create_app
from relay.headers import encoded_size
from relay.message import ParseLimits
from relay.mime import parse_mime
from tests.helpers import BEARER, authenticated, basic_auth

BIG = str(16 * 1024 * 1024)


def header_block(extra: str = "") -> bytes:
    return (
        "From: Dana <dana@acme-living.com>\r\nSubject: Hello\r\nMessage-ID: <caps@acme-living.com>\r\n"
        f"{authenticated()}\r\n"
        f"Date: Tue, 31 Mar 2020 16:22:06 -0700\r\nMIME-Version: 1.0\r\n{extra}"
    ).encode()


def many_addresses(count: int) -> bytes:
    to = ", ".join(f"Renter {i} <renter{i}@example.com>" for i in range(count))
    return header_block(f"To: {to}\r\nContent-Type: text/plain\r\n\r\n") + b"See you Friday.\r\n"


def many_parts(count: int) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(count))
    head = header_block('To: renter1@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n')
    return head + parts + b"--b--\r\n"


def deep_nesting(depth: int) -> bytes:
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (i, i) for i in range(depth))
    closing = b"".join(b"\r\n--n%d--" % i for i in reversed(range(depth)))
    return header_block("To: renter1@example.com\r\n") + opening + b"Content-Type: text/plain\r\n\r\ndeep" + closing


@pytest.fixture
def big_client(make_settings: Any) -> Any:
    return create_app(make_settings(RELAY_MAX_REQUEST_BYTES=BIG)).test_client()


def delivery_of(client: Any, response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.json
    (summary,) = response.json["deliveries"]
    return client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_fifty_thousand_recipients_are_read_up_to_the_cap(big_client: Any) -> None:
    big_client.put("/v1/prospects/P7", json={"emails": ["renter7@example.com"]}, headers=BEARER)
    response = big_client.post("/webhooks/mime", data=many_addresses(50_000), content_type="message/rfc822",
                               headers=basic_auth())  # fmt: skip
    shown = delivery_of(big_client, response)
    assert (shown["status"], shown["prospectId"]) == ("queued", "P7")
    # the To line (2 MB) is read up to the header block's byte cap, then up to the address cap
    assert sorted(shown["truncated"]) == ["addresses", "headers"]


def test_address_cap_follows_its_setting(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=BIG, RELAY_MAX_ADDRESSES="5")).test_client()
    client.put("/v1/prospects/P7", json={"emails": ["renter7@example.com"]}, headers=BEARER)
    response = client.post("/webhooks/mime", data=many_addresses(10), content_type="message/rfc822",
                           headers=basic_auth())  # fmt: skip
    shown = delivery_of(client, response)
    # renter7 is the eighth address, past the cap of five: no prospect is found.
    assert (shown["status"], shown["truncated"]) == ("unmatched", ["addresses"])


@pytest.mark.timeout(60)
def test_a_hundred_thousand_parts_are_read_up_to_the_cap(big_client: Any) -> None:
    response = big_client.post("/webhooks/mime", data=many_parts(100_000), content_type="message/rfc822",
                               headers=basic_auth())  # fmt: skip
    shown = delivery_of(big_client, response)
    assert shown["truncated"] == ["parts"]


@pytest.mark.timeout(20)
def test_a_long_header_line_without_a_colon_is_read_in_linear_time() -> None:
    # Just under the size the MIME splitter takes; it must not try its field pattern again at every
    # position of the line (that took minutes), and the standard parser reads the line as body.
    line = b"x" * (900 * 1024)
    email = parse_mime(header_block("To: renter1@example.com\r\n") + line + b"\r\n\r\nSee you Friday.\r\n")
    assert email.message_id == "caps@acme-living.com" and email.to == ("renter1@example.com",)


def test_part_cap_keeps_the_parts_before_it() -> None:
    raw = many_parts(3).replace(b"\r\n\r\nx\r\n", b"\r\n\r\nfirst\r\n", 1)
    email = parse_mime(raw, limits=ParseLimits(parts=1))
    assert (email.text or "").strip() == "first" and email.truncated == ("parts",)
    assert parse_mime(raw, limits=ParseLimits(parts=3)).truncated == ()


@pytest.mark.timeout(60)
def test_nesting_beyond_the_cap_is_left_out(big_client: Any) -> None:
    response = big_client.post("/webhooks/mime", data=deep_nesting(100), content_type="message/rfc822",
                               headers=basic_auth())  # fmt: skip
    shown = delivery_of(big_client, response)
    assert shown["truncated"] == ["nesting"]
    shallow = parse_mime(deep_nesting(3), limits=ParseLimits(depth=5))
    assert shallow.truncated == () and (shallow.text or "").strip() == "deep"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("build", "size", "peak_mib"),
    [(many_parts, 100_000, 250), (many_addresses, 50_000, 250), (deep_nesting, 2_000, 150)],
)
def test_hostile_messages_are_parsed_in_bounded_memory(build: Any, size: int, peak_mib: int, tmp_path: Path) -> None:
    """Parsed in a process of its own, so its peak memory is this message's alone."""
    path = tmp_path / "hostile.eml"
    path.write_bytes(build(size))
    script = (
        "import resource, sys; from relay.mime import parse_mime; "
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "email = parse_mime(open(sys.argv[1], 'rb').read()); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, ','.join(email.truncated))"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=100,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert result.returncode == 0, result.stderr
    grown_kib, truncated = result.stdout.split()
    assert int(grown_kib) < peak_mib * 1024, f"{int(grown_kib) // 1024} MiB"
    assert truncated


@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"ab", b"abc", b"hello world!", bytes(range(256)) * 40, b"\x00" * 4097],
)
def test_attachment_sizes_are_computed_without_decoding(data: bytes) -> None:
    encoded = base64.encodebytes(data).decode()
    raw = (
        header_block(
            'To: renter1@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pdf\r\n"
            'Content-Disposition: attachment; filename="f.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        )
        + encoded.replace("\n", "\r\n").encode()
        + b"--b--\r\n"
    )
    (attachment,) = parse_mime(raw).attachments
    assert attachment.size == len(data)


def test_quoted_printable_and_plain_sizes(tmp_path: Path) -> None:
    from email.message import EmailMessage

    for encoding, payload in (("quoted-printable", "caf\u00e9 = ok\n" * 50), ("7bit", "plain text\n" * 10)):
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@b.com", "c@d.com", "s"
        message.set_content("hi")
        message.add_attachment(payload.encode(), maintype="text", subtype="csv", filename="t.csv", cte=encoding)
        (part,) = [p for p in message.walk() if p.get_filename()]
        assert encoded_size(part) == len(part.get_payload(decode=True))
    assert json.dumps([])


@pytest.mark.parametrize("size", [64 * 1024 + 1, 300_001, 1_000_000])
def test_large_attachments_are_sized_exactly_and_never_parsed(size: int) -> None:
    from relay.mime import omit_large_bodies

    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    raw = (
        header_block(
            'To: renter1@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\n"
            'Content-Disposition: attachment; filename="lease.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        )
        + encoded.encode()
        + b"--b--\r\n"
    )
    assert len(omit_large_bodies(raw)) < 2048  # the parser never sees the attachment's body
    email = parse_mime(raw)
    assert [(a.filename, a.size) for a in email.attachments] == [("lease.pdf", size)]
    assert (email.text or "").strip() == "see attached"


def test_large_text_parts_are_kept() -> None:
    from relay.mime import omit_large_bodies

    text = "A long letter. " * 10_000
    raw = header_block(
        'To: renter1@example.com\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        f"Content-Type: text/plain\r\n\r\n{text}\r\n--b--\r\n"
    )
    assert omit_large_bodies(raw) == raw
    assert (parse_mime(raw).text or "").strip() == text.strip()


@pytest.mark.parametrize("depth", [1, 5, 20])
def test_the_nesting_cap_is_exact_a_part_at_the_limit_is_read_one_level_deeper_is_cut(depth: int) -> None:
    at_limit = parse_mime(deep_nesting(depth), limits=ParseLimits(depth=depth))
    assert at_limit.truncated == () and (at_limit.text or "").strip() == "deep"
    beyond = parse_mime(deep_nesting(depth + 1), limits=ParseLimits(depth=depth))
    assert beyond.truncated == ("nesting",) and not (beyond.text or "").strip()


def test_the_nesting_cap_follows_its_setting(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_MAX_MIME_DEPTH="4", RELAY_SENDER_AUTH="off")).test_client()
    for depth, truncated in ((4, []), (5, ["nesting"])):
        response = client.post("/webhooks/mime", data=deep_nesting(depth).replace(b"caps@", b"caps%d@" % depth),
                               content_type="message/rfc822", headers=basic_auth())  # fmt: skip
        assert delivery_of(client, response)["truncated"] == truncated


def test_envelope_recipients_are_capped_like_the_headers() -> None:
    envelope = [f"renter{i}@example.com" for i in range(30)]
    email = parse_mime(many_addresses(1), limits=ParseLimits(addresses=10), envelope_to=envelope)
    assert "addresses" in email.truncated
    assert len([a for a in email.recipients if a.startswith("renter") and a != "renter0@example.com"]) <= 10
    within = parse_mime(many_addresses(1), limits=ParseLimits(addresses=40), envelope_to=envelope)
    assert within.truncated == () and set(envelope) <= set(within.recipients)


def test_a_cc_of_many_addresses_costs_what_the_cap_reads() -> None:
    """Past the cap, more addresses cost (almost) nothing more: ten times the addresses, well
    under three times the CPU (the standard parser would read every one of them)."""
    from tests.helpers import cpu_seconds

    def read(count: int) -> None:
        cc = b"Cc: " + b"a@b.example," * count + b"\r\n"
        email = parse_mime(header_block("To: renter1@example.com\r\n") + cc + b"\r\nhi\r\n")
        assert "addresses" in email.truncated

    assert cpu_seconds(lambda: read(60_000)) < 3 * cpu_seconds(lambda: read(6_000))


def test_header_blocks_past_their_caps_are_cut_and_named() -> None:
    from relay.message import MAX_HEADER_BYTES, MAX_HEADER_LINES

    many = header_block("To: renter1@example.com\r\n" + "X-A: b\r\n" * (MAX_HEADER_LINES + 10)) + b"\r\nbody\r\n"
    email = parse_mime(many)
    assert "headers" in email.truncated and (email.text or "").strip() == "body"
    giant = (
        header_block("To: renter1@example.com\r\nX-Long: " + "x" * (MAX_HEADER_BYTES + 10) + "\r\n") + b"\r\nbody\r\n"
    )
    email = parse_mime(giant)
    assert "headers" in email.truncated and (email.text or "").strip() == "body"
    assert parse_mime(header_block("To: renter1@example.com\r\n") + b"\r\nbody\r\n").truncated == ()


def test_a_text_part_past_its_cap_is_cut_at_a_line_break() -> None:
    limits = ParseLimits(html_chars=1024)
    lines = "".join(f"line {i}\r\n" for i in range(2000))
    raw = header_block("To: renter1@example.com\r\nContent-Type: text/plain\r\n\r\n") + lines.encode()
    email = parse_mime(raw, limits=limits)
    assert "text size" in email.truncated
    text = (email.text or "").replace("\r\n", "\n")
    assert text.startswith("line 0\n") and len(text) <= 4 * 1024 and text.endswith("\n")
    assert parse_mime(raw, limits=ParseLimits()).truncated == ()


def test_a_subject_past_its_cap_is_cut_and_named(big_client: Any) -> None:
    from relay.message import MAX_SUBJECT_CHARS

    message = (b"From: renter@example.com\r\nTo: leasing@acme-living.com\r\nSubject: " + b"s" * 50_000
               + b"\r\nMessage-ID: <subject-cap@example.com>\r\n\r\nhi\r\n")  # fmt: skip
    response = big_client.post("/webhooks/mime", data=message, content_type="message/rfc822", headers=basic_auth())
    shown = delivery_of(big_client, response)
    assert shown["subject"] == "s" * MAX_SUBJECT_CHARS and "subject" in shown["truncated"]


def test_a_text_handed_over_decoded_is_cut_like_a_mime_part(make_settings: Any) -> None:
    """SendGrid's parsed mode posts the text decoded: it is cut where a MIME text part would be."""
    from tests.helpers import SENDGRID_FORM

    limits = ParseLimits(html_chars=64 * 1024)
    settings = make_settings(RELAY_MAX_REQUEST_BYTES=BIG, RELAY_MAX_HTML_CHARS=str(limits.html_chars))
    client = create_app(settings).test_client()
    text = "line\n" * (limits.html_chars * 2)  # 10 × the characters of HTML read, past the 4 × for text

    def part(name: str, value: str) -> bytes:
        return (b'--xYzZY\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n'
                + value.encode() + b"\r\n")  # fmt: skip

    body = (part("headers", "From: renter@example.com\r\nTo: leasing@acme-living.com\r\nSubject: t\r\n"
                 "Message-ID: <text-cap@example.com>\r\n") + part("text", text) + b"--xYzZY--\r\n")  # fmt: skip
    response = client.post("/webhooks/sendgrid/inbound", data=body, content_type=SENDGRID_FORM, headers=basic_auth())
    shown = delivery_of(client, response)
    assert "text size" in shown["truncated"], shown


def test_mandrill_posts_nothing_but_urlencoded_forms(client: Any) -> None:
    """A multipart post is refused even when signed: only urlencoded forms are read a piece at a time."""
    from tests.helpers import mandrill_headers

    headers = mandrill_headers("http://localhost/webhooks/mandrill/inbound", {"mandrill_events": "[]"})
    body = b'--b\r\nContent-Disposition: form-data; name="mandrill_events"\r\n\r\n[]\r\n--b--\r\n'
    response = client.post("/webhooks/mandrill/inbound", data=body, content_type="multipart/form-data; boundary=b",
                           headers=headers)  # fmt: skip
    assert response.status_code == 401
    urlencoded = client.post("/webhooks/mandrill/inbound", data={"mandrill_events": "[]"}, headers=headers)
    assert urlencoded.status_code == 200
