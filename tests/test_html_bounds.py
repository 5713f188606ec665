"""An email's HTML costs time linear in its size to prepare, whatever its shape, and reads as before."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.html_bounds import CUT_ATTRIBUTES, CUT_NESTING, CUT_SIZE, SMALL_CHARS, VOID_TAGS, bound_html
from relay.knock.schema import _CLEANER, body_of, sanitise_html
from relay.message import ParseLimits, build_email
from tests.helpers import basic_auth, delivery, grows_linearly, post_mime

# Shapes that cost html5ever (the parser under nh3) time quadratic in their size, or would if the
# rebuilt tree did not keep them from it: each makes `size` characters of markup.
HOSTILE_SHAPES: dict[str, Callable[[int], str]] = {
    "nested elements": lambda size: "<div>" * (size // 5),
    "nested and closed": lambda size: "<div>" * (size // 11) + "x" + "</div>" * (size // 11),
    "misnested: end tags it ignores": lambda size: "<span><div></span>" * (size // 18),
    "formatting it reopens on every line": lambda size: "".join(
        f"<p><b id={i}><div>x</div>y" for i in range(size // 26)
    ),
    "unclosed paragraphs": lambda size: "<p>x" * (size // 4),
    "unclosed formatting, each different": lambda size: "".join(f"<b id={i}>" for i in range(size // 12)),
    "nested tables": lambda size: "<table><tr><td>" * (size // 15),
    "nested lists": lambda size: "<ul><li>" * (size // 8),
    "deep, then many siblings": lambda size: "<div>" * 255 + "<p></p>" * ((size - 1275) // 7),
    "one tag, many attributes": lambda size: "<b " + " ".join(f"a{i}" for i in range(size // 8)) + ">x</b>",
    "many tags, long attribute values": lambda size: ('<p title="' + "x" * 20_000 + '">y</p>') * (size // 20_014),
    "attribute values full of &": lambda size: ('<p title="' + "&x" * 4000 + '">y</p>') * (size // 8014),
    "entity flood": lambda size: "&amp;" * (size // 5),
    "named entities without ;": lambda size: "&notin" * (size // 6),
    "bare ampersands": lambda size: "& " * (size // 2),
    "no-break spaces": lambda size: "\xa0" * size,
    "unclosed comments": lambda size: "<!--" * (size // 4),
    "tags the input ends inside": lambda size: "<a b='x" * (size // 7),
    "images without an end": lambda size: "<img src=cid:x " * (size // 15),
}


def prepare_body(markup: str) -> str:
    """What the relay does with an email's HTML: bound it when the email is built, sanitise it for Knock."""
    return body_of(build_email(headers=[("From", "renter@example.com")], html=markup))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("shape", HOSTILE_SHAPES)
def test_preparing_the_body_takes_time_linear_in_its_size(shape: str) -> None:
    make = HOSTILE_SHAPES[shape]
    # Large enough that each run takes tens of milliseconds: smaller, a busy machine's noise is the reading.
    assert grows_linearly(lambda size: prepare_body(make(size)), 300_000)


def padded(markup: str) -> str:
    """Past the size handed to the sanitiser as it is, so the rebuilt tree is what it reads."""
    return markup + "<!--" + "x" * SMALL_CHARS + "-->"


REAL_MARKUP = [
    "<p>a<table><tr><td>b</td></tr></table>",
    "<div><form><b>x</b></form></div>",
    "<p>x</br>y",
    "</p>",
    "<span><div></span>z",
    "<table><b>x<td>y</td></table>",
    "<ul><li>a<li>b<ul><li>c</ul></ul>",
    "<dl><dt>a<dd>b<dt>c</dl>",
    "<table><tr><td>a<td>b<tr><td>c</table>",
    "<table><thead><tr><th>h</th></tr></thead><tbody><tr><td>a</td></tr></tbody></table>",
    "<p>one<p>two<div>three</div>",
    "<!-- c -->x<!DOCTYPE html><html><head><title>T</title><style>p{}</style></head>"
    '<body><p style="color:red" onclick="x">Hi <b>there</b></p><script>alert(1)</script>',
    '<img src="http://x/y.png" alt=a>',
    '<a href="javascript:alert(1)">x</a><a href="https://acme-living.com/tour?a=1&amp;b=2">tour</a>',
    '<div "foo">x</div>',
    '<b a="1"b=2>x</b>',
    "a < b > c",
    "<textarea><b>x</b></textarea>",
    "<x-foo>bar</x-foo>",
    "<h1>a<h2>b</h2>",
    "<center><font face=Arial size=2><b>Tour</b> on <i>Friday</i></font></center>",
    '<table width="600" cellpadding="0"><tr><td align="center" bgcolor="#fff"><table><tr><td>'
    "<p>Nested</p></td></tr></table></td></tr></table>",
    "<blockquote>quoted<blockquote>twice</blockquote></blockquote><hr><pre>code &amp; more</pre>",
    "Jamie&nbsp;Lee &lt;jamie@example.org&gt; wrote:<br>On Friday &#8212; yes",
]


@pytest.mark.parametrize("markup", REAL_MARKUP)
def test_the_rebuilt_tree_sanitises_to_what_the_markup_did(markup: str) -> None:
    assert _CLEANER.clean(bound_html(padded(markup))[0]) == _CLEANER.clean(padded(markup))


def test_small_markup_is_handed_over_as_written() -> None:
    markup = '<P CLASS=x>Hi <b>there</b></P><img src="cid:logo">'
    assert bound_html(markup) == ("<P CLASS=x>Hi <b>there</b></P>", ())


@pytest.mark.parametrize("markup", ['<img src="cid:logo@x">', "<IMG alt=x SRC = ' CID:logo'>", "<img src=cid:x/>"])
def test_images_of_cid_parts_go_whole_in_both_paths(markup: str) -> None:
    for candidate in (markup + "after", padded(markup + "after")):
        assert sanitise_html(candidate) == "after"


def test_deeper_elements_are_left_out_but_their_text_is_kept() -> None:
    markup = "<div>" * 300 + "bottom" + "</div>" * 300
    html, cut = bound_html(markup, max_depth=256)
    assert cut == (CUT_NESTING,)
    assert html.count("<div>") == 256 and "bottom" in html
    assert depth_of(html) == 256


def test_long_html_is_read_up_to_the_cap() -> None:
    html, cut = bound_html("<p>x</p>" * 1000, max_chars=4000)
    assert cut == (CUT_SIZE,) and html.count("<p>") == 500


def test_long_attribute_values_are_left_out() -> None:
    html, cut = bound_html(padded('<p title="' + "x" * 10_000 + '" style="color:red">y</p>'))
    assert cut == (CUT_ATTRIBUTES,) and html.startswith('<p style="color:red">y</p>')


def test_text_full_of_ampersands_is_split_where_no_one_sees_it() -> None:
    markup = "&x" * 5000 + "<p>end</p>"
    html, _ = bound_html(padded(markup))
    assert html.count("<!---->") >= 5000 // 256
    assert _CLEANER.clean(html) == _CLEANER.clean(padded(markup))


def test_a_deep_email_is_logged_with_its_text_and_says_what_was_cut(client: Any) -> None:
    html = "<div>" * 2000 + "<p>Can I tour on Friday?</p>" + "</div>" * 2000
    raw = (
        "From: renter@example.com\r\nTo: leasing+prospect-P1@acme-living.com\r\nSubject: deep\r\n"
        "Message-ID: <deep-html@example.com>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html
    ).encode()
    response = post_mime(client, raw, basic_auth())
    assert response.status_code == 200, response.json
    found = delivery(client, response.json["deliveries"][0]["id"])
    assert found["status"] == "queued" and CUT_NESTING in found["truncated"]
    assert "Can I tour on Friday?" in client.application.extensions["relay"].store.payload(found["id"])["body"]


def test_email_caps_come_from_the_settings(make_settings: Any) -> None:
    limits = make_settings(RELAY_MAX_HTML_DEPTH="16", RELAY_MAX_HTML_CHARS="4096").parse_limits
    email = build_email(headers=[("From", "a@b.c")], html="<div>" * 20 + "<br>" * 600 + "x" * 3000, limits=limits)
    assert set(email.truncated) == {CUT_NESTING, CUT_SIZE}
    assert build_email(headers=[], html="<div>" * 20, limits=ParseLimits()).truncated == ()


# The rebuilt tree, whatever the input: well nested, never deeper than the cap -------------------

# Every "<" of rebuilt markup opens one of its own tags (a "<" of text is written "&lt;").
_REBUILT_TAG = re.compile(r'<(/?)([a-z0-9]+)(?: [a-z-]+="[^"]*")*>|<!---->|<p></p>')


def depth_of(html: str) -> int:
    """The deepest nesting of the rebuilt markup, asserting on the way that every end tag closes the
    innermost open element (the rebuilt tree writes every end tag it means)."""
    stack: list[str] = []
    deepest = 0
    for closing, name in _REBUILT_TAG.findall(html):
        if not name:
            continue
        if closing:
            assert stack and stack[-1] == name, (name, stack[-5:])
            stack.pop()
        elif name not in VOID_TAGS:
            stack.append(name)
            deepest = max(deepest, len(stack))
    return deepest


tag_soup = st.lists(
    st.sampled_from(
        ["<div>", "</div>", "<p>", "</p>", "<span>", "</span>", "<b id=1>", "<b>", "</b>", "<a href=x>", "</a>",
         "<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>", "<tbody>", "<caption>", "<ul>", "<ol>",
         "</ul>", "<li>", "</li>", "<dl>", "<dt>", "<dd>", "<h1>", "</h2>", "<br>", "</br>", "<img src=x>",
         "<script>", "</script>", "<style>x</style>", "<textarea>", "<!--", "-->", "<!x>", "text", "&amp;",
         "&x", "<", ">", "'", '"', "<i title='a>b'>", "<u x=\"1\"y=2>", "<plaintext>", "<svg><path/>", "<em"]
    ),
    max_size=300,
).map("".join)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(tag_soup, st.integers(min_value=1, max_value=12))
def test_the_rebuilt_tree_is_well_nested_and_within_the_cap(soup: str, max_depth: int) -> None:
    html, cut = bound_html(padded(soup), max_depth=max_depth)
    assert depth_of(html) <= max_depth
    if CUT_NESTING not in cut:  # a cap not reached changes nothing
        assert bound_html(padded(soup), max_depth=512)[0] == html
    assert "<script" not in nh3.clean(html).lower()


def test_elements_past_the_cap_are_left_out_with_their_text_kept() -> None:
    from relay.html_bounds import CUT_ELEMENTS, MAX_ELEMENTS

    markup = "<b>x</b>" * (MAX_ELEMENTS + 5_000)
    bounded, cuts = bound_html(markup)
    assert CUT_ELEMENTS in cuts
    assert bounded.count("<b>") == MAX_ELEMENTS
    assert bounded.count("x") == MAX_ELEMENTS + 5_000
    _, within = bound_html("<b>x</b>" * (MAX_ELEMENTS // 2))
    assert CUT_ELEMENTS not in within
