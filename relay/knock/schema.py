"""Knock's Log Prospect Email body: the schema and the mapping from an Email. Pure: no I/O."""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import nh3
from marshmallow import Schema, ValidationError, fields, validate

from relay.html_bounds import KEPT_ATTRIBUTES, KEPT_TAGS, BoundedHtml, bound_html
from relay.message import Attachment, Email
from relay.routing import MESSAGE_TYPES

SENT_TIME_FORMAT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
NO_SUBJECT = "(no subject)"

#: A Date header further ahead than this is a misconfigured clock, not a send time.
MAX_CLOCK_SKEW = timedelta(days=1)
#: A Date header before this is a broken clock too.
EARLIEST_SENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)

# Inline CSS is how most email is styled; these properties cannot run code or fetch anything.
_SAFE_STYLE_PROPERTIES = {
    "background-color", "border", "border-collapse", "border-color", "border-style", "border-width",
    "color", "display", "font", "font-family", "font-size", "font-style", "font-weight", "height",
    "line-height", "list-style", "margin", "margin-bottom", "margin-left", "margin-right", "margin-top",
    "padding", "padding-bottom", "padding-left", "padding-right", "padding-top", "text-align",
    "text-decoration", "vertical-align", "white-space", "width",
}  # fmt: skip
# Declaration values may only be words, numbers, colours and lists of them: no parentheses (so no
# url(), expression() or var()), no backslash escapes, no comments, no at-rules.
_SAFE_STYLE_VALUE = re.compile(r"^[#\w\s.,%'\"!+-]+$")
_URL_SCHEMES = {"http", "https", "mailto", "tel"}
_REMOTE_IMAGE = re.compile(r"<img\b[^>]*?\ssrc=\"(https?://[^\"]+)\"", re.IGNORECASE)


class AgentSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1))


class LogEmailSchema(Schema):
    """`POST /prospect/{prospectId}/email`: all five fields required."""

    type = fields.String(required=True, validate=validate.OneOf(MESSAGE_TYPES))
    sentTime = fields.String(required=True, validate=validate.Regexp(SENT_TIME_FORMAT))
    agent = fields.Nested(AgentSchema, required=True)
    subject = fields.String(required=True, validate=validate.Length(min=1))
    body = fields.String(required=True, validate=validate.Length(min=1))


# Built once: a schema instance is reusable and building one per email costs more than the check.
_COMPLETE = LogEmailSchema()
_AGENT_PENDING = LogEmailSchema(partial=("agent",))


def validate_log_email(body: dict[str, Any], *, agent_pending: bool = False) -> dict[str, list[str]]:
    """Field errors of a Knock body; empty when valid. `agent_pending` allows the agent to come later."""
    try:
        (_AGENT_PENDING if agent_pending else _COMPLETE).load(body)
    except ValidationError as err:
        return err.normalized_messages()  # type: ignore[return-value]
    return {}


def format_sent_time(moment: datetime) -> str:
    """`2026-11-27T06:18:31.000Z`; the year always has four digits (strftime drops leading zeros)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def sent_time_of(email: Email, received_at: datetime) -> str:
    """The Date header in UTC; else the provider's timestamp; else when we received it."""
    if email.date is not None and EARLIEST_SENT_TIME <= email.date <= received_at + MAX_CLOCK_SKEW:
        return format_sent_time(email.date)
    return format_sent_time(email.provider_timestamp or received_at)


def subject_of(email: Email) -> str:
    return email.subject.strip() or NO_SUBJECT


@lru_cache(maxsize=4096)
def safe_style(value: str) -> str | None:
    """Only declarations of the allowed properties whose values cannot load or run anything.
    Remembered: mail from one sender repeats the same few style attributes many times over."""
    kept = []
    for declaration in value.split(";"):
        name, colon, setting = declaration.partition(":")
        name, setting = name.strip().lower(), setting.strip()
        if colon and name in _SAFE_STYLE_PROPERTIES and _SAFE_STYLE_VALUE.match(setting):
            kept.append(f"{name}:{setting}")
    return ";".join(kept) or None


# The elements and attributes kept are relay/html_bounds.py's, which rebuilds markup with only them.
_CLEANER_SETTINGS: dict[str, Any] = {
    "tags": KEPT_TAGS,
    "attributes": KEPT_ATTRIBUTES,
    "url_schemes": _URL_SCHEMES,  # no cid: either, so a cid: src goes too
    "filter_style_properties": _SAFE_STYLE_PROPERTIES,
    "clean_content_tags": {"script", "style", "iframe", "object", "embed", "form", "title", "head"},
}
# Built once: nh3 builds its sanitiser from the settings on every `nh3.clean` call.
_CLEANER = nh3.Cleaner(**_CLEANER_SETTINGS)
# In the sanitiser's output every "<" opens a tag and every ">" closes one (in text and attribute
# values both are written "&lt;" and "&gt;"), and every attribute is written name="value" with any
# '"' in the value written "&quot;". Read attribute by attribute from a tag's name, this finds
# exactly the tag's style attribute.
_TAG_WRITTEN = re.compile(r"<[a-zA-Z][^>]*>")
_STYLE_ATTRIBUTE = re.compile(r'(<[a-zA-Z][^\s/>]*(?:\s[^\s=>"/]+(?:="[^"]*")?)*?) style="([^"]*)"')
_WRITTEN_STYLE = re.compile(r' style="([^"]*)"')
# How the sanitiser writes an attribute value.
_ATTRIBUTE_ESCAPES = {"&": "&amp;", "\u00a0": "&nbsp;", '"': "&quot;", "<": "&lt;", ">": "&gt;"}
_ATTRIBUTE_ESCAPE = re.compile('[&\u00a0"<>]')


def _write_attribute_value(value: str) -> str:
    return _ATTRIBUTE_ESCAPE.sub(lambda found: _ATTRIBUTE_ESCAPES[found[0]], value)


def _inert_styles(cleaned: str) -> str:
    """`cleaned` (the sanitiser's output) with each tag's style attribute cut to its inert
    declarations (see safe_style); text that reads like a style attribute is left alone."""

    def rewrite(found: re.Match[str]) -> str:
        kept = safe_style(html_lib.unescape(found[2]))
        return f'{found[1]} style="{_write_attribute_value(kept)}"' if kept else found[1]

    def rewrite_tag(tag: re.Match[str]) -> str:
        written = tag[0]
        return _STYLE_ATTRIBUTE.sub(rewrite, written, count=1) if ' style="' in written else written

    return _TAG_WRITTEN.sub(rewrite_tag, cleaned)


@lru_cache(maxsize=4096)
def _is_inert_style(written: str) -> bool:
    value = html_lib.unescape(written)
    return safe_style(value) == value


def sanitise_html(markup: str) -> str:
    """No scripts, frames, objects, forms, event handlers, javascript: URLs or cid: images; only
    inert inline CSS, judged as the sanitiser writes it.

    Style attributes are checked in the sanitiser's output rather than by a callback per attribute
    (which costs a fifth of the sanitising). Most mail repeats a few inert styles: when every
    ' style="…"' in the output is inert as written, there is nothing to cut, whether each is an
    attribute or text that reads like one. (A match that began in text or inside another
    attribute's value can reach past a real style attribute only across a '<' or an attribute's
    '=', which no inert style holds, so none hides behind one.) Otherwise each style attribute is
    cut to its inert part.

    Markup is bounded first (relay/html_bounds.py: no image of a cid: part, and a shape the
    sanitiser reads in linear time) unless it already was: an Email's HTML is."""
    bounded = markup if isinstance(markup, BoundedHtml) else bound_html(markup)[0]
    cleaned = _CLEANER.clean(bounded)
    if 'style="' in cleaned:
        written, occurrences = _WRITTEN_STYLE.findall(cleaned), cleaned.count('style="')
        if len(written) != occurrences or not all(map(_is_inert_style, set(written))):
            cleaned = _inert_styles(cleaned)
    return cleaned.strip()


def remote_images(body: str) -> list[str]:
    """The remote images a (sanitised) body loads when shown: Knock shows them, so the record lists them."""
    return list(dict.fromkeys(html_lib.unescape(url) for url in _REMOTE_IMAGE.findall(body)))


def text_as_html(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    return html_lib.escape(lines).replace("\n", "<br>")


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def attachments_note(attachments: tuple[Attachment, ...]) -> str:
    """Knock has no attachment field, so names and sizes are listed at the end of the body."""
    if not attachments:
        return ""
    items = "".join(f"<li>{html_lib.escape(a.filename)} ({_human_size(a.size)})</li>" for a in attachments)
    return f"<hr><p>Attachments (not included):</p><ul>{items}</ul>"


def body_of(email: Email) -> str:
    body = ""
    if email.html and email.html.strip():
        body = sanitise_html(email.html)
    if not body and email.text and email.text.strip():
        body = text_as_html(email.text)
    body += attachments_note(email.attachments)
    return body or "<p>(empty message)</p>"


def render_log_email(
    email: Email, message_type: str, agent_username: str | None, received_at: datetime
) -> dict[str, Any]:
    """The Knock body for one email; `agent` is left out while the agent is still to be resolved."""
    body: dict[str, Any] = {
        "type": message_type,
        "sentTime": sent_time_of(email, received_at),
        "subject": subject_of(email),
        "body": body_of(email),
    }
    if agent_username:
        body["agent"] = {"username": agent_username}
    return body
