"""The one rule for an id that goes into a URL path: a prospect id, an agent username, a provider's
message id. Pure: no I/O.

An id is spliced into a path as one segment (`/prospect/{id}/email`). Percent-encoding keeps `/`,
`?`, `#` and `%` from changing the path, but `.` and `..` are dot segments that clients and servers
collapse after decoding (`/prospect/../email` is `/email`), and control characters and white space
are never part of a real id: such values are refused where they enter (the API, the directory
import, routing, a provider's webhook), and `path_segment` refuses them again at the last moment.
Everything else is percent-encoded, so the path always has exactly the segments intended.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

#: The values that are a path's own dot segments (RFC 3986 §5.2.4), not names.
DOT_SEGMENTS = frozenset({".", ".."})
#: Unicode categories never found in an id: controls (C0, DEL, C1) and lone surrogates (which no
#: encoding can spell, so they cannot be percent-encoded either).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
#: The byte-order mark: white space to ECMA-262's regular expressions, so refused with white space
#: for PATH_ID_PATTERN to read the same in every engine.
_BYTE_ORDER_MARK = "\ufeff"

#: Controls and white space spelled out, not as `\s`, whose reach differs between regular expression
#: engines: C0 and space, DEL to NO-BREAK SPACE (C1 and NEL among them), then Unicode's spaces.
_NEVER = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
#: Characters that are `.` once normalised (NFKC), and those that are `..`.
_DOTS = r".\u2024\ufe52\uff0e"
_TWO_DOTS = r"\u2025\ufe30"
#: The rule as a regular expression that reads the same in Python, ECMA-262 (JSON Schema) and Rust,
#: for URL routing and the OpenAPI document: characters that are neither white space nor control,
#: and not only one or two dots (of any width). No look-around, so that generators of examples can
#: read it. Lone surrogates, which no JSON text or URL can carry, are left to `path_id_problem`.
PATH_ID_PATTERN = (
    rf"(?:[^{_NEVER}]*[^{_DOTS}{_TWO_DOTS}{_NEVER}][^{_NEVER}]*"
    rf"|[{_DOTS}{_TWO_DOTS}]{{3,}}|[{_TWO_DOTS}][{_DOTS}{_TWO_DOTS}]|[{_DOTS}][{_TWO_DOTS}])"
)


class InvalidPathId(ValueError):
    """A value that cannot be an id in a URL path; the message says why."""


def path_id_problem(value: object) -> str | None:
    """Why `value` cannot be an id in a URL path (a phrase such as "is empty"), or None when it can."""
    if not isinstance(value, str) or not value:
        return "is empty"
    if len(value) <= 2 and unicodedata.normalize("NFKC", value) in DOT_SEGMENTS:
        # also `．．` (full-width) or `‥`, which read as `..` to a server that normalises what it decodes
        return "is a dot segment ('.' or '..')"
    for character in value:
        if character.isspace() or character == _BYTE_ORDER_MARK:
            return "contains white space"
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return "contains a control character"
    return None


def is_path_id(value: object) -> bool:
    """Whether `value` can be an id in a URL path: not empty, not `.` or `..`, no control character
    (C0, DEL, C1) and no white space of any script (nor a lone surrogate or a byte-order mark)."""
    return path_id_problem(value) is None


def path_segment(value: str, what: str = "id") -> str:
    """`value` as exactly one percent-encoded path segment (`/`, `?`, `#` and `%` encoded too);
    InvalidPathId, naming `what`, when it cannot be an id."""
    problem = path_id_problem(value)
    if problem is not None:
        raise InvalidPathId(f"{what} {problem}")
    return quote(value, safe="")
