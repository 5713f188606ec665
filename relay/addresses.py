"""Email addresses from header values: read within a bound, normalised, formatted. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.utils import getaddresses

_SPACE_CHARACTER = re.compile(r"\s")  # as str.isspace() reads it


def normalise_address(value: str) -> str | None:
    """An addr-spec with its domain lowercased; the local part keeps its case (reply tags carry ids)."""
    local, at, domain = value.strip().strip("<>").rpartition("@")
    if not at or not local or not domain or _SPACE_CHARACTER.search(local) or _SPACE_CHARACTER.search(domain):
        return None
    return f"{local}@{domain.lower()}"


def addresses(values: Iterable[str], limit: int | None = None) -> tuple[str, ...]:
    """Addresses from header values such as `"Doe, Jo" <jo@x.com>, b@y.com`, each once, in order.

    At most `limit` of them: see `addresses_within`.
    """
    return addresses_within(values, limit)[0]


_ATOMS = r'[^<>",;:()\\@\[\]\s]+'
#: One mailbox in its plainest forms, `Name <local@domain>` or `local@domain`: no quotes, comments,
#: groups, routes or lists, whose parse is the standard library's.
_PLAIN_MAILBOX = re.compile(rf"\s*(?:[^<>\",;:()\\@\[\]]*?\s*<({_ATOMS}@{_ATOMS})>|({_ATOMS}@{_ATOMS}))\s*")


#: An addr-spec as it stands in any header value, for values the standard parser cannot read.
_ADDR_SPEC = re.compile(rf"{_ATOMS}@{_ATOMS}")


def mailbox_addresses(values: list[str]) -> list[str]:
    """The addr-specs of header values, as email.utils.getaddresses reads them; values that are each
    one plain mailbox are read without it (its parser is most of an email's address work)."""
    plain = [_PLAIN_MAILBOX.fullmatch(value) for value in values]
    if all(plain):
        return [match[1] or match[2] for match in plain if match]
    try:
        return [addr for _, addr in getaddresses(values)]
    except RecursionError:
        # The standard parser recurses once per nested comment or group (`((((…` or `g:g:g:…`):
        # a value no mail program writes. Its addr-specs are then read by pattern, in one pass.
        return [found for value in values for found in _ADDR_SPEC.findall(value)]


#: Characters of header value read per address wanted (a long display name and address fit).
_CHARS_PER_ADDRESS = 1024


def _within_reach(values: Iterable[str], limit: int | None) -> tuple[list[str], bool]:
    """The header values, each cut after 4 × `limit` commas and `limit` × _CHARS_PER_ADDRESS
    characters: the standard parser reads every address of a value, and a Cc of a million
    addresses must cost no more than one of `limit`. A cut leaves at least `limit` addresses
    unless their display names hold more than three commas each (quoted names may hold commas)."""
    kept = [v for v in values if v]
    if limit is None:
        return kept, False
    cut = False
    for index, value in enumerate(kept):
        short = value[: limit * _CHARS_PER_ADDRESS]
        if short.count(",") > 4 * limit:
            short = ",".join(short.split(",", 4 * limit + 1)[: 4 * limit + 1])
        if len(short) < len(value):
            kept[index], cut = short, True
    return kept, cut


def addresses_within(values: Iterable[str], limit: int | None) -> tuple[tuple[str, ...], bool]:
    """The addresses (at most `limit`) and whether more were left out."""
    found: list[str] = []
    seen: set[str] = set()
    values, cut = _within_reach(values, limit)
    for addr in mailbox_addresses(values):
        normalised = normalise_address(addr)
        if not normalised or normalised.lower() in seen:
            continue
        if limit is not None and len(found) >= limit:
            return tuple(found), True
        seen.add(normalised.lower())
        found.append(normalised)
    return tuple(found), cut


def format_address(name: str | None, address: str) -> str:
    """A header value for one mailbox; unlike email.utils.formataddr it keeps non-ASCII addresses."""
    cleaned = address.strip().strip("<>")
    if not name or not name.strip():
        return f"<{cleaned}>"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{quoted}" <{cleaned}>'
