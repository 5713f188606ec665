"""A delivery record as Redis keeps it, and the names and helpers every part of the store shares.

A delivery is one email logged for one prospect. Its record is a hash `relay:delivery:{id}`
holding the fields of `Delivery` and, until it is sent, its Knock body (`payload`).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

PREFIX = "relay:"

QUEUED = "queued"
RETRYING = "retrying"
DELIVERED = "delivered"
DEAD = "dead"
UNMATCHED = "unmatched"
IGNORED = "ignored"
FETCHED = "fetched"  # a pending fetch done: the email it found is logged as deliveries of its own
DUPLICATE = "duplicate"  # an answer to the caller, never a stored status
STATUSES = (QUEUED, RETRYING, DELIVERED, DEAD, UNMATCHED, IGNORED, FETCHED)
PENDING = (QUEUED, RETRYING)
#: Statuses a bulk replay may take: dead deliveries (Knock refused them or their retries ran out),
#: and ignored ones, of which it takes those ignored as spam (relay.spam), never a virus.
REPLAYABLE = (DEAD, IGNORED)

DUE_KEY = f"{PREFIX}due"
#: The Knock circuit's state (relay.circuit), read with each delivery a worker takes.
KNOCK_CIRCUIT_KEY = f"{PREFIX}knock-circuit"
#: Written with every change of the directory (see relay.directory).
DIRECTORY_VERSION_KEY = f"{PREFIX}directory-version"
POSSIBLE_DUPLICATES_KEY = f"{PREFIX}idx:possible-duplicate"


@dataclass(frozen=True)
class QueueWrite:
    """A queue message written with its record: its id pushed onto `list_key`, its body stored
    under that id in the `hash_key` hash (how Dramatiq's Redis broker keeps a queue)."""

    list_key: str
    hash_key: str
    message_id: str
    data: bytes


@dataclass(frozen=True)
class NewRecord:
    """A delivery to store: its Knock body, whether it claims (Message-ID, prospect), and the queue
    message to write with it when it is to be sent."""

    delivery: Delivery
    payload: dict[str, Any] | None
    claim: bool = True
    enqueue: QueueWrite | None = None
    #: The addresses it is found by, when not all of the delivery's (see relay.intake: an email
    #: logged for many prospects is found, per prospect, by its sender and that prospect's addresses).
    searched_addresses: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Stored:
    """What `create_all` did: `replayed` is the answer already stored under the replay key (nothing
    written); `stale`, that the directory changed since routing read it (nothing written);
    `threads`, that remembered threads were found for unmatched emails (nothing written); else
    `holders` has, per record, the id of the delivery that already held its claim (that record was
    not written) or None."""

    replayed: str | None = None
    stale: bool = False
    holders: tuple[str | None, ...] = ()
    #: Nothing written: threads the call's unmatched emails reply to are remembered (key → {prospect
    #: id: direction}); the caller routes them again with it.
    threads: dict[str, dict[str, str]] | None = None


def now_ms() -> int:
    return int(time.time() * 1000)


def ms_from(moment: datetime | None) -> int | None:
    """Milliseconds since the epoch, for time-range filters; a moment beyond what a timestamp can
    say is the range's end."""
    if moment is None:
        return None
    try:
        return int(moment.timestamp() * 1000)
    except (OverflowError, ValueError, OSError):
        return 0 if moment.year < 1970 else 253402300799000


def iso_from_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def knock_stats_key(ms: int) -> str:
    return f"{PREFIX}knock-stats:{ms // 3_600_000}"


def message_key(message_id: str) -> str:
    return hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()


_id_lock = threading.Lock()
_last_id_ms = 0
_id_sequence = 0


def new_delivery_id() -> str:
    """32 hex digits that sort in creation order within a process: milliseconds, a sequence, randomness.

    Lists are ordered by receipt time and then by id, so two deliveries received in the
    same millisecond still come out newest first. The random part keeps ids of different processes
    apart; it comes from `random` (seeded from the system and again in every forked process), not
    from a system call per id: ids are not secrets, and each such call releases the GIL.
    """
    global _last_id_ms, _id_sequence
    with _id_lock:
        ms = max(time.time_ns() // 1_000_000, _last_id_ms)
        _id_sequence = _id_sequence + 1 if ms == _last_id_ms else 0
        if _id_sequence > 0xFFFF:
            ms, _id_sequence = ms + 1, 0
        _last_id_ms = ms
        sequence = _id_sequence
    return f"{ms & 0xFFFFFFFFFFFF:012x}{sequence:04x}{random.getrandbits(64):016x}"


@dataclass
class Delivery:
    id: str
    status: str
    type: str
    messageId: str
    provider: str
    subject: str
    sentTime: str
    receivedAt: int
    direction: str = ""
    prospectId: str | None = None
    agentUsername: str | None = None
    attempts: int = 0
    lastError: str | None = None
    communicationId: str | None = None
    deliveredAt: int | None = None
    reason: str | None = None
    retryFrom: int | None = None
    #: Remote images the body loads when Knock shows it.
    remoteImages: list[str] = field(default_factory=list)
    #: What parsing left out beyond the caps (addresses, parts, nesting).
    truncated: list[str] = field(default_factory=list)
    #: An earlier attempt may have reached Knock without its answer being recorded.
    possibleDuplicate: bool = False
    #: The sender authentication verdict and what it rests on (`pass: dkim=pass acme-living.com`).
    senderAuth: str | None = None
    #: Who wrote and who received it (for operators' searches), and how routing chose prospect and agent.
    sender: str | None = None
    recipients: list[str] = field(default_factory=list)
    #: The display name of the From header, for people reading the console.
    senderName: str | None = None
    prospectFoundBy: str | None = None
    agentFoundBy: str | None = None
    #: How the prospect was matched in one word (`metadata`, `address`, `reply tag`, `thread`), and
    #: for a thread the Message-ID of the earlier email it followed.
    matchedBy: str | None = None
    threadMessageId: str | None = None
    #: The attempt being sent; cleared when its outcome is recorded. Found set, the attempt's
    #: worker died between sending and recording.
    inFlight: int | None = None
    enqueued: bool = False

    _INTS = ("receivedAt", "attempts", "deliveredAt", "retryFrom", "inFlight")
    _LISTS = ("remoteImages", "truncated", "recipients")
    _FLAGS = ("possibleDuplicate", "enqueued")

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Delivery:
        values: dict[str, Any] = {k: v for k, v in raw.items() if k in _KNOWN_FIELDS}
        for name in cls._INTS:
            if name in values:
                values[name] = int(values[name])
        for name in cls._LISTS:
            if name in values:
                values[name] = json.loads(values[name])
        for name in cls._FLAGS:
            values[name] = raw.get(name) == "1"
        return cls(**values)

    def to_hash(self) -> dict[str, str]:
        """The record's hash fields: strings as they are, numbers in decimal, set flags as "1",
        non-empty lists in JSON; unset fields, empty lists and `enqueued` (the store's) are left out.
        Read from the instance's dict, which holds the fields in their declared order."""
        out: dict[str, str] = {}
        for name, value in self.__dict__.items():
            kind = value.__class__
            if kind is str:
                out[name] = value
            elif value is None or name == "enqueued":
                continue
            elif kind is bool:
                if value:
                    out[name] = "1"
            elif kind is list:
                if value:
                    out[name] = json.dumps(value)
            else:
                out[name] = str(value)
        return out

    def public(self) -> dict[str, Any]:
        """The delivery as the API shows it (SPEC §4.2)."""
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "direction": self.direction,
            "prospectId": self.prospectId,
            "agentUsername": self.agentUsername,
            "messageId": self.messageId,
            "provider": self.provider,
            "subject": self.subject,
            "sentTime": self.sentTime,
            "receivedAt": iso_from_ms(self.receivedAt),
            "attempts": self.attempts,
            "lastError": self.lastError,
            "communicationId": self.communicationId,
            "deliveredAt": iso_from_ms(self.deliveredAt),
            "reason": self.reason,
            "remoteImages": self.remoteImages,
            "truncated": self.truncated,
            "possibleDuplicate": self.possibleDuplicate,
            "senderAuth": self.senderAuth,
            "sender": self.sender,
            "recipients": self.recipients,
            "prospectFoundBy": self.prospectFoundBy,
            "agentFoundBy": self.agentFoundBy,
            "matchedBy": self.matchedBy,
            "threadMessageId": self.threadMessageId,
        }

    def addresses(self) -> list[str]:
        """Sender and recipients, lowercased, for searches."""
        return [a.lower() for a in [self.sender or "", *self.recipients] if a]

    def summary(self, status: str | None = None) -> dict[str, Any]:
        """The short form a webhook answers with."""
        return {
            "id": self.id,
            "status": status or self.status,
            "prospectId": self.prospectId,
            "type": self.type,
        }


def with_payload(raw: dict[str, str]) -> tuple[Delivery | None, dict[str, Any] | None]:
    """A record's hash as the record and its Knock body (None, None for no record)."""
    if not raw:
        return None, None
    return Delivery.from_hash(raw), (json.loads(raw["payload"]) if raw.get("payload") else None)


#: A record's field names in their declared order, and as a set for reading records back.
DELIVERY_FIELDS = tuple(f.name for f in fields(Delivery))
_KNOWN_FIELDS = frozenset(DELIVERY_FIELDS)
