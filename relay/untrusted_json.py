"""JSON from outside the relay: a parse that fails as ValueError whatever the input, and whose
cost is bounded before it starts.

`json.loads` raises RecursionError on deeply nested input (a hundred thousand `[`), which is
not a ValueError and would escape every `except ValueError` meant for bad input. And it builds
whatever it is given: 30 MB of `[{},{},…]` becomes seven million dictionaries (about 800 MB).
No provider sends anything like either, so a linear pre-pass (a regular expression that skips
strings, then byte counts between them, with no copy of the input) refuses input nested deeper
than MAX_DEPTH or holding more than MAX_VALUES arrays, objects and elements, before a single
Python object is made. Strings, however long, cost about their own size and are left alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from flask.json.provider import DefaultJSONProvider

#: Deepest nesting of arrays and objects read. Providers nest a few levels; SES about six.
MAX_DEPTH = 64
#: Most arrays, objects and their members read from one document (a batch of a thousand events
#: with a hundred fields each is a fifth of this).
MAX_VALUES = 500_000

# A string, its escapes included ("unrolled": the fastest form for Python's engine).
_STRINGS = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class JSONTooComplex(ValueError):
    """Input that no provider sends: refused before it is parsed."""


def _gaps(raw: bytes) -> Iterator[tuple[int, int]]:
    """The spans of `raw` between its strings (a pattern that skips escapes finds each string)."""
    kept_to = 0
    for string in _STRINGS.finditer(raw):
        yield kept_to, string.start()
        kept_to = string.end()
    yield kept_to, len(raw)


def check_shape(raw: bytes) -> None:
    """JSONTooComplex when `raw` (UTF-8) nests deeper than MAX_DEPTH or holds more than MAX_VALUES
    values. Linear in the size of `raw`, and with no copy of it: strings are skipped by a
    possessive pattern, values are counted by their separators in the text between strings, and
    the depth is walked only once the count is known to be small."""
    if raw[:4].count(0):
        raise JSONTooComplex("JSON must be UTF-8")  # UTF-16 and UTF-32 would hide the structure
    # Every string is a key or a value (two quotes each): at most 2 × MAX_VALUES strings. Counted
    # first, cheaply, from a lower bound on the quotes that are not escaped, so that a flood of
    # tiny strings is refused before the pattern below visits each one.
    if raw.count(b'"') - raw.count(b'\\"') > 4 * MAX_VALUES + 2:
        raise JSONTooComplex(f"JSON holds more than {MAX_VALUES} values")
    opened = separators = 0
    for start, end in _gaps(raw):
        opened += raw.count(b"[", start, end) + raw.count(b"{", start, end)
        separators += raw.count(b",", start, end)
        if opened + separators > MAX_VALUES:
            raise JSONTooComplex(f"JSON holds more than {MAX_VALUES} values")
    if opened <= MAX_DEPTH:
        return
    depth = 0
    for start, end in _gaps(raw):
        for bracket in _BRACKETS.finditer(raw, start, end):
            if bracket.group() in (b"[", b"{"):
                depth += 1
                if depth > MAX_DEPTH:
                    raise JSONTooComplex(f"JSON nested deeper than {MAX_DEPTH} levels")
            else:
                depth -= 1


def loads(raw: str | bytes) -> Any:
    check_shape(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    return loads_checked(raw)


def loads_checked(raw: str | bytes) -> Any:
    """`json.loads` of text whose shape `check_shape` has passed (as bytes, before decoding). A
    lone surrogate (`"\\ud800"`, which JSON allows and no text encoding can write) is replaced
    by U+FFFD wherever it is: strings go on to Redis and to Knock as UTF-8."""
    try:
        value = json.loads(raw)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
    if _SURROGATE_ESCAPE[type(raw)].search(raw):
        value = _without_lone_surrogates(value)
    return value


#: What spells a surrogate in JSON text: a `\uD800`-`\uDFFF` escape (a pair of them is one
#: character once parsed), or the bytes of one let through by json's `surrogatepass` decoding.
_SURROGATE_ESCAPE: dict[type, re.Pattern[Any]] = {
    bytes: re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]"),
    str: re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]"),
}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


class UntrustedJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with request bodies parsed by `loads` above (so get_json(silent=True) holds)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        if kwargs:
            check_shape(s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s)
            return super().loads(s, **kwargs)
        return loads(s)
