"""The normalised email: MIME parsing, header decoding, Message-ID rules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.errors import MalformedPayload
from relay.message import build_email, normalise_message_id, parse_date
from relay.mime import parse_mime

PAYLOADS = Path(__file__).parent / "payloads" / "mime"


def test_parses_encoded_headers_quoted_printable_parts_and_attachments() -> None:
    email = parse_mime((PAYLOADS / "inbound-reply-tag.eml").read_bytes())
    assert email.subject == "Réservation pour la visite"
    assert email.sender == "Jose.Garcia@example.com"
    assert email.to == ("leasing+prospect-4WXU6U2J@reply.acme-living.com",)
    assert email.cc == ("frontdesk@acme-living.com",)
    assert email.text == "Bonjour, je voudrais réserver une visite."
    assert email.html is not None and "réserver une visite" in email.html
    assert [(a.filename, a.size) for a in email.attachments] == [("pay stub.pdf", 78)]
    assert email.message_id == "CAF=visit-4711@mail.example.com"
    assert email.date == datetime(2020, 3, 31, 23, 22, 6, tzinfo=UTC)


def test_message_id_is_stripped_of_white_space_and_angle_brackets() -> None:
    assert normalise_message_id("  <abc@x.com>\r\n ") == "abc@x.com"
    assert normalise_message_id("<a b@x>") == "ab@x"
    assert normalise_message_id("<>") is None


def test_missing_message_id_falls_back_to_a_stable_hash() -> None:
    headers = [("From", "a@x.com"), ("To", "b@y.com"), ("Subject", "Hi"), ("Date", "Tue, 31 Mar 2020 16:22:06 -0700")]
    first = build_email(headers=headers, text="hello")
    again = build_email(headers=list(headers), text="hello")
    other_body = build_email(headers=headers, text="hello!")
    assert first.message_id == again.message_id
    assert first.message_id != other_body.message_id
    assert first.message_id.startswith("sha256-")


def test_explicit_metadata_headers_are_read() -> None:
    email = build_email(
        headers=[
            ("From", "a@x.com"),
            ("X-Knock-Prospect-Id", " P-1 "),
            ("X-Knock-Agent-Username", "dana"),
            ("X-Knock-Message-Type", "EMAIL_AUTOMATED_MESSAGE_SENT"),
        ]
    )
    assert (email.metadata.prospect_id, email.metadata.agent_username) == ("P-1", "dana")
    assert email.metadata.message_type == "EMAIL_AUTOMATED_MESSAGE_SENT"


@pytest.mark.parametrize("value", ["", "yesterday", "Tue, 99 Foo 2020 99:99:99 +0000", "\x00"])
def test_unreadable_dates_are_none(value: str) -> None:
    assert parse_date(value) is None


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"just some text without headers"])
def test_something_that_is_not_an_email_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedPayload):
        parse_mime(raw)


def test_unknown_charset_does_not_break_parsing() -> None:
    raw = b"From: a@x.com\r\nTo: b@y.com\r\nSubject: s\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\nqapla\r\n"
    assert parse_mime(raw).text is not None


def test_fallback_id_ignores_envelope_and_bcc_which_differ_between_copies() -> None:
    headers = [("From", "Dana@acme-living.com"), ("To", "renter@example.com"), ("Subject", "Tour")]
    sender_copy = build_email(
        headers=[*headers, ("Bcc", "log@acme-living.com")], text="hi", envelope_to=["log@acme-living.com"]
    )
    recipient_copy = build_email(headers=headers, text="hi", envelope_to=["renter@example.com"])
    assert sender_copy.message_id == recipient_copy.message_id


def test_attachment_names_in_rfc2231_and_rfc2047_are_decoded() -> None:
    from relay.mime import parse_mime

    raw = (
        b'From: a@example.com\r\nTo: b@acme-living.com\r\nSubject: files\r\nContent-Type: multipart/mixed; boundary="b"'
        b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; filename*=UTF-8''Re%C3%A7u.pdf\r\n\r\n"
        b"x\r\n--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="=?utf-8?b?w6l0w6kucGRm?="\r\n\r\nx\r\n--b--\r\n'
    )
    assert [a.filename for a in parse_mime(raw).attachments] == ["Reçu.pdf", "été.pdf"]
