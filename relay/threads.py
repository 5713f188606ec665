"""Threads: which earlier email an email replies to, and the prospects that email was logged for.
Pure: no I/O.

Every email stored for prospects is remembered by its Message-ID (written by the script that stores
it, for as long as delivery records live): `relay:thread:<sha256 of the Message-ID>`, a hash of
prospect id → the direction the email went. A reply names its parent in `In-Reply-To` and its
ancestors in `References` (oldest first); routing follows the newest one that is remembered."""

from __future__ import annotations

import re
from collections.abc import Mapping

from relay.message import Email
from relay.store.records import PREFIX, message_key

#: Message-IDs of one email's references looked up, newest first: a long thread's oldest
#: ancestors add nothing its newer ones do not.
MAX_REFERENCES = 20
_MESSAGE_ID = re.compile(r"<([^<>\s]{1,998})>")
#: What the relay makes up for mail without a Message-ID: nobody can reply to it by that id.
_MADE_UP = re.compile(r"^sha256-[0-9a-f]{64}@relay$")

#: A thread remembered: prospect id → the direction of the email it was logged for.
Remembered = Mapping[str, str]


def thread_key(message_id: str) -> str:
    return f"{PREFIX}thread:{message_key(message_id)}"


def references(email: Email) -> list[str]:
    """The Message-IDs an email replies to, newest first: `In-Reply-To`, then `References` from its
    end, each once, at most MAX_REFERENCES, never the email's own."""
    found: list[str] = []
    in_reply_to = email.header("in-reply-to") or ""
    refs = email.header("references") or ""
    # Bounded before the expression reads them: a header block is capped at 1 MiB, this at 64 KiB.
    candidates = _MESSAGE_ID.findall(in_reply_to[:65536]) + _MESSAGE_ID.findall(refs[-65536:])[::-1]
    for candidate in candidates:
        if candidate != email.message_id and candidate not in found:
            found.append(candidate)
            if len(found) == MAX_REFERENCES:
                break
    return found


def remembers(email: Email) -> bool:
    """Whether an email can be replied to by its Message-ID (not one the relay made up)."""
    return bool(email.message_id) and not _MADE_UP.match(email.message_id)
