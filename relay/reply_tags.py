"""Reply tags: the `+prospect-<id>` part of a leasing mailbox's address that says which prospect a
reply belongs to, signed when the relay has a secret (`+prospect-<id>.<signature>`). Pure: no I/O.

The signature is an HMAC-SHA256 of the prospect id under the secret, written in lower-case base32
and cut to 11 characters (55 bits): letters and digits only, so that it survives an MTA that
lower-cases local parts, and short enough that the address stays under the 64 characters a local
part may have. It is computed over the lower-cased id for the same reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.config import Settings

SIGNATURE_CHARS = 11
SIGNATURE_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")
#: RFC 5321: at most 64 octets before the @.
MAX_LOCAL_PART = 64
#: Prospect ids a reply tag can carry: what every MTA passes unchanged in a local part.
_WRITABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

SIGNED = "signed"
UNSIGNED = "unsigned"
WRONG = "wrong"


@dataclass(frozen=True)
class ReplyTag:
    """A tag as found in an address: the prospect id it names and its signature, if it has one."""

    prospect_id: str
    signature: str | None


def signature_of(prospect_id: str, secret: str) -> str:
    mac = hmac.new(secret.encode(), b"knock-relay reply tag\0" + prospect_id.lower().encode(), hashlib.sha256)
    return base64.b32encode(mac.digest()).decode().lower()[:SIGNATURE_CHARS]


def read_tag(address: str, prefix: str) -> ReplyTag | None:
    """`leasing+prospect-4WXU6U2J.k3j9x2m4qpa@reply.acme.com` → ReplyTag('4WXU6U2J', 'k3j9x2m4qpa');
    without a signature, ReplyTag('4WXU6U2J', None). The prefix is matched case-insensitively; the
    id is as written (whether it is a usable id is routing's question)."""
    local = address.rpartition("@")[0]
    for tag in local.split("+")[1:]:
        if not (prefix and tag.lower().startswith(prefix.lower()) and len(tag) > len(prefix)):
            continue
        named = tag[len(prefix) :]
        prospect_id, dot, signature = named.rpartition(".")
        if dot and prospect_id and len(signature) == SIGNATURE_CHARS and set(signature.lower()) <= SIGNATURE_ALPHABET:
            return ReplyTag(prospect_id, signature.lower())
        return ReplyTag(named, None)
    return None


def check(tag: ReplyTag, secrets: Iterable[str]) -> str:
    """SIGNED when one of the secrets signed the tag's id, UNSIGNED without a signature, else WRONG."""
    if tag.signature is None:
        return UNSIGNED
    expected = [signature_of(tag.prospect_id, secret) for secret in secrets]
    # Every secret is compared, in constant time, so timing says nothing about which one or how much.
    matched = [hmac.compare_digest(tag.signature.encode(), sig.encode()) for sig in expected]
    return SIGNED if any(matched) else WRONG


def reply_address(mailbox: str, prospect_id: str, prefix: str, secret: str | None, leasing_side: frozenset[str]) -> str:
    """`leasing@reply.acme.com` → `leasing+prospect-P123.<signature>@reply.acme.com` (unsigned
    without a secret). ValueError, saying why, when the mailbox is not an address on the leasing
    side (a tag routes only there) or the address would be too long."""
    mailbox = mailbox.strip()
    local, at, domain = mailbox.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or "@" in local
        or any(c.isspace() or ord(c) < 32 or c in "<>,+" for c in mailbox)
    ):
        raise ValueError("not a mailbox address (one @, no + tag)")
    if not _WRITABLE_ID.fullmatch(prospect_id):
        raise ValueError("this prospect id cannot be written in an email address (letters, digits, '.', '_', '-')")
    if mailbox.lower() not in leasing_side and domain.lower() not in leasing_side:
        raise ValueError("not on the leasing side: its domain is not in RELAY_MAILBOX_DOMAINS")
    tag = prefix + prospect_id + (f".{signature_of(prospect_id, secret)}" if secret else "")
    tagged = f"{local}+{tag}"
    if len(tagged.encode()) > MAX_LOCAL_PART:
        raise ValueError(f"the address would have {len(tagged.encode())} characters before the @, more than 64")
    return f"{tagged}@{domain}"


def reply_address_of(settings: Settings, prospect_id: str, mailbox: str | None) -> dict[str, object]:
    """{"address", "signed"} for the API, the console and the CLI; ValueError saying why there is none."""
    mailbox = mailbox or settings.reply_mailbox
    if not mailbox:
        raise ValueError("give a mailbox, or set RELAY_REPLY_MAILBOX")
    secret = settings.reply_tag_secrets[0] if settings.reply_tag_secrets else None
    address = reply_address(mailbox, prospect_id, settings.reply_tag_prefix, secret, settings.mailbox_domains)
    return {"address": address, "signed": secret is not None}
