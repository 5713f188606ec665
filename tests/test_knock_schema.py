"""Mapping an email to Knock's body (SPEC §5.6) and the schema that validates it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.knock.schema import (
    body_of,
    format_sent_time,
    render_log_email,
    sanitise_html,
    sent_time_of,
    validate_log_email,
)
from relay.message import Attachment, build_email
from relay.routing import MESSAGE_TYPES

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def message(date: str | None = None, **kwargs):  # type: ignore[no-untyped-def]
    headers = [("From", "a@x.com"), ("To", "b@y.com"), ("Subject", kwargs.pop("subject", "Hello"))]
    if date is not None:
        headers.append(("Date", date))
    return build_email(headers=headers, **kwargs)


def test_sent_time_is_the_date_header_in_utc_with_milliseconds() -> None:
    assert sent_time_of(message("Tue, 31 Mar 2020 16:22:06 -0700"), RECEIVED) == "2020-03-31T23:22:06.000Z"


def test_sent_time_falls_back_to_the_provider_timestamp_then_receipt() -> None:
    provider_ts = datetime(2026, 1, 2, 3, 0, 0, 250000, tzinfo=UTC)
    assert sent_time_of(message(None, provider_timestamp=provider_ts), RECEIVED) == "2026-01-02T03:00:00.250Z"
    assert sent_time_of(message("not a date"), RECEIVED) == "2026-01-02T03:04:05.678Z"


def test_a_date_more_than_a_day_ahead_is_not_trusted() -> None:
    ahead = (RECEIVED + timedelta(days=2)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    slightly_ahead = (RECEIVED + timedelta(hours=3)).strftime("%a, %d %b %Y %H:%M:%S +0000")
    assert sent_time_of(message(ahead), RECEIVED) == "2026-01-02T03:04:05.678Z"
    assert sent_time_of(message(slightly_ahead), RECEIVED) == "2026-01-02T06:04:05.000Z"


def test_a_date_before_1970_is_not_trusted_and_every_year_has_four_digits() -> None:
    assert sent_time_of(message("Mon, 4 Mar 0513 16:18:53 +0000"), RECEIVED) == "2026-01-02T03:04:05.678Z"
    assert sent_time_of(message("Thu, 1 Jan 1970 00:00:00 +0000"), RECEIVED) == "1970-01-01T00:00:00.000Z"
    assert format_sent_time(datetime(513, 3, 4, 16, 18, 53, tzinfo=UTC)) == "0513-03-04T16:18:53.000Z"


def test_empty_subject_becomes_no_subject() -> None:
    body = render_log_email(message(subject="  "), "EMAIL_MESSAGE_TO_PROSPECT_SENT", "dana", RECEIVED)
    assert body["subject"] == "(no subject)"


@pytest.mark.parametrize(
    "dangerous",
    [
        "<script>alert(1)</script>",
        "<iframe src='https://evil'></iframe>",
        "<object data='x'></object>",
        "<embed src='x'>",
        "<form action='https://evil'><input name='p'></form>",
        "<p onclick='steal()'>x</p>",
        "<img src=x onerror='steal()'>",
        "<a href='javascript:alert(1)'>x</a>",
        "<a href=' JaVaScRiPt:alert(1)'>x</a>",
        "<img src='cid:logo@acme' alt='logo'>",
    ],
)
def test_html_is_sanitised(dangerous: str) -> None:
    clean = sanitise_html(f"<p>keep</p>{dangerous}").lower()
    for marker in (
        "<script",
        "<iframe",
        "<object",
        "<embed",
        "<form",
        "<input",
        "onclick",
        "onerror",
        "javascript:",
        "cid:",
    ):
        assert marker not in clean
    assert "keep" in clean


def test_safe_html_survives() -> None:
    clean = sanitise_html(
        '<p style="color: red">Hi <a href="https://acme.com/apply">apply</a><img src="https://acme.com/a.png"></p>'
    )
    assert 'href="https://acme.com/apply"' in clean and 'src="https://acme.com/a.png"' in clean and "color" in clean


def test_text_only_is_escaped_with_line_breaks() -> None:
    body = body_of(message(text="Tour <Friday> & bring ID\nThanks\r\nDana"))
    assert body == "Tour &lt;Friday&gt; &amp; bring ID<br>Thanks<br>Dana"


def test_html_part_wins_over_text() -> None:
    assert body_of(message(text="plain", html="<b>rich</b>")) == "<b>rich</b>"


def test_attachments_are_listed_at_the_end_of_the_body() -> None:
    body = body_of(message(text="see attached", attachments=[Attachment("lease <draft>.pdf", 2048)]))
    assert body.startswith("see attached")
    assert body.endswith("<ul><li>lease &lt;draft&gt;.pdf (2.0 KB)</li></ul>")


@pytest.mark.parametrize("missing", ["type", "sentTime", "agent", "subject", "body"])
def test_schema_requires_every_field(missing: str) -> None:
    body = render_log_email(
        message("Tue, 31 Mar 2020 16:22:06 -0700", text="x"), "EMAIL_MESSAGE_TO_PROSPECT_SENT", "dana", RECEIVED
    )
    assert validate_log_email(body) == {}
    del body[missing]
    assert missing in validate_log_email(body)


_MOMENTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(
    subject=st.text(max_size=40),
    date=st.one_of(st.none(), st.text(max_size=40), _MOMENTS.map(lambda m: m.strftime("%a, %d %b %Y %H:%M:%S +0000"))),
    provider_timestamp=st.one_of(st.none(), _MOMENTS),
    text=st.one_of(st.none(), st.text(max_size=200)),
    html=st.one_of(st.none(), st.text(max_size=200), st.sampled_from(["<script>x</script>", "<p> </p>", " "])),
    attachments=st.lists(st.builds(Attachment, st.text(max_size=20), st.integers(0, 10**9)), max_size=3),
    message_type=st.sampled_from(MESSAGE_TYPES),
    agent=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
)
def test_every_mapped_email_is_a_body_the_schema_accepts(  # type: ignore[no-untyped-def]
    subject, date, provider_timestamp, text, html, attachments, message_type, agent
) -> None:
    """What routing hands the mapping (a known type, an agent or none yet) always maps to a body the
    schema accepts, whatever the email holds: the webhook stores the body unchecked, and the
    worker's check before sending is then only a guard."""
    email = message(
        date, subject=subject, text=text, html=html, attachments=attachments, provider_timestamp=provider_timestamp
    )
    body = render_log_email(email, message_type, agent, RECEIVED)
    assert validate_log_email(body, agent_pending=agent is None) == {}


def test_schema_allows_a_pending_agent_only_when_asked() -> None:
    body = render_log_email(message(text="x"), "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED", None, RECEIVED)
    assert "agent" in validate_log_email(body)
    assert validate_log_email(body, agent_pending=True) == {}


@pytest.mark.parametrize(
    ("style", "kept"),
    [
        ("width:expression(alert(1))", None),
        ("background:url(https://tracker.example/x.gif)", None),
        ("background-image:url(javascript:alert(1))", None),
        ("color:re\\64", None),
        ("color:red/**/;width:1px", "width:1px"),
        ("behavior:url(x.htc);-moz-binding:url(x)", None),
        ("color:red; font-weight:bold; position:fixed", "color:red;font-weight:bold"),
        ("font-family:Arial, sans-serif;text-align:center", "font-family:Arial, sans-serif;text-align:center"),
    ],
)
def test_inline_css_keeps_only_inert_declarations(style: str, kept: str | None) -> None:
    from relay.knock.schema import safe_style

    assert safe_style(style) == kept
    body = sanitise_html(f'<p style="{style}">x</p>')
    assert "expression" not in body and "url(" not in body and "\\" not in body


def test_style_and_title_text_never_reach_knock() -> None:
    body = sanitise_html("<html><head><title>Secret title</title><style>p{color:red}</style></head><body><p>Hi</p>")
    assert body == "<p>Hi</p>"


def test_remote_images_are_listed_once_and_cid_images_dropped() -> None:
    from relay.knock.schema import remote_images

    body = sanitise_html(
        '<img src="https://t.example/p.gif?a=1&b=2"><img src="cid:logo"><img src="https://t.example/p.gif?a=1&b=2">'
    )
    assert remote_images(body) == ["https://t.example/p.gif?a=1&b=2"]
    assert "cid:" not in body


def test_sent_time_truncates_to_milliseconds_never_rounding_into_the_next_second() -> None:
    moment = datetime(2020, 3, 31, 23, 22, 6, 999_500, tzinfo=UTC)
    assert format_sent_time(moment) == "2020-03-31T23:22:06.999Z"
    assert format_sent_time(moment.replace(microsecond=999_999)) == "2020-03-31T23:22:06.999Z"
