"""Delivery records, de-duplication claims and status transitions, in Redis.

A delivery is one email logged for one prospect. Its record is a hash
`relay:delivery:{id}`; sorted sets index records by status, prospect and
Message-ID (score: receipt time in ms) so the API can list them newest first.
Claims `relay:dedup:{sha256(Message-ID)}:{prospectId}` make the same email
for the same prospect land once within the de-duplication window.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import hiredis
import redis
from redis.commands.core import Script

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

# Stores what one call brought, in one step. KEYS: the queue list and hash (declared, so that Redis
# checks access to them before anything is written: a script stopped by an error halfway keeps its
# earlier writes), the replay key and the directory version key. First, with a replay key (ARGV[4])
# that an earlier call already stored, it writes nothing and returns {"replay", that call's answer};
# then, unless ARGV[7] is "-", it compares the directory version routing read (ARGV[7]) and on a
# change writes nothing and returns {"stale"}. Otherwise, for each record: unless its claim (Message-ID, prospect)
# is held by a delivery that still exists, it takes the claim, writes the record and its indexes
# and, with a queue message id, the message (its id pushed onto the queue list, its body in the
# queue hash), all or nothing. Returns {"ok", holder or "" per record}; the replay key is stored
# with ARGV[6] as its answer when no claim was held (else the caller stores the answer it builds).
_CREATE = """
local prefix = ARGV[1]
local record_ttl = tonumber(ARGV[2])
local dedup_ttl = tonumber(ARGV[3])
local replay_key = ARGV[4]
if replay_key ~= "" then
  local answer = redis.call("get", KEYS[3])
  if answer then return {"replay", answer} end
end
if ARGV[7] ~= "-" and (redis.call("get", KEYS[4]) or "") ~= ARGV[7] then
  return {"stale"}
end
local result = {"ok"}
local held = false
local i = 9
for n = 1, tonumber(ARGV[8]) do
  local id, score, status, prospect = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local message_key, claim_key = ARGV[i + 4], ARGV[i + 5]
  local queue_id, queue_body = ARGV[i + 6], ARGV[i + 7]
  local pairs_end = i + 8 + tonumber(ARGV[i + 8])
  local holder = false
  if claim_key ~= "" then
    holder = redis.call("get", claim_key)
    if holder and redis.call("exists", prefix .. "delivery:" .. holder) == 0 then holder = false end
  end
  if holder then
    result[#result + 1] = holder
    held = true
  else
    result[#result + 1] = ""
    if claim_key ~= "" then redis.call("set", claim_key, id, "EX", dedup_ttl) end
    local cutoff = tonumber(score) - record_ttl * 1000
    local record = prefix .. "delivery:" .. id
    local fields = {}
    for k = i + 9, pairs_end do fields[#fields + 1] = ARGV[k] end
    if queue_id ~= "" then
      redis.call("hset", KEYS[2], queue_id, queue_body)
      redis.call("rpush", KEYS[1], queue_id)
      fields[#fields + 1] = "enqueued"
      fields[#fields + 1] = "1"
      fields[#fields + 1] = "queuedAt"
      fields[#fields + 1] = score
    end
    redis.call("hset", record, unpack(fields))
    redis.call("expire", record, record_ttl)
    -- Entries older than the record TTL point at expired records: trim on every write.
    for _, index in ipairs({"idx:all", "idx:status:" .. status}) do
      redis.call("zremrangebyscore", prefix .. index, "-inf", cutoff)
      redis.call("zadd", prefix .. index, score, id)
    end
    redis.call("zadd", prefix .. "idx:message:" .. message_key, score, id)
    redis.call("expire", prefix .. "idx:message:" .. message_key, record_ttl)
    if prospect ~= "" then
      redis.call("zremrangebyscore", prefix .. "idx:prospect:" .. prospect, "-inf", cutoff)
      redis.call("zadd", prefix .. "idx:prospect:" .. prospect, score, id)
    end
  end
  i = pairs_end + 1
end
if replay_key ~= "" and not held then
  redis.call("set", KEYS[3], ARGV[6], "EX", tonumber(ARGV[5]))
end
return result
"""

# Moves a record to a new status (only from the allowed ones, when given),
# keeping the status index in step, and schedules it when ARGV[7] names a due time;
# returns the old status or false. With ARGV[12] and ARGV[13], first releases that lock if it
# still holds that token (the worker's lock on the delivery, released with its outcome).
_TRANSITION = """
if ARGV[12] ~= "" and redis.call("get", ARGV[12]) == ARGV[13] then redis.call("del", ARGV[12]) end
local prefix = ARGV[1]
local id = ARGV[2]
local new_status = ARGV[3]
local allowed = ARGV[4]
-- "keep", or drop the body from the record, keeping a copy for that many seconds (0: none).
local drop_payload = ARGV[5]
local record = prefix .. "delivery:" .. id
local old = redis.call("hget", record, "status")
if not old then return false end
if allowed ~= "" and not string.find("," .. allowed .. ",", "," .. old .. ",", 1, true) then
  return false
end
local score = redis.call("zscore", prefix .. "idx:all", id) or "0"
redis.call("zrem", prefix .. "idx:status:" .. old, id)
-- Entries older than the record TTL point at expired records: trim on every write.
redis.call("zremrangebyscore", prefix .. "idx:status:" .. new_status, "-inf", ARGV[6])
redis.call("zadd", prefix .. "idx:status:" .. new_status, score, id)
local fields = {"status", new_status}
if ARGV[7] ~= "" then redis.call("zadd", prefix .. "due", ARGV[7], id) end
-- A call to Knock whose outcome this records: onto the delivery's timeline and the hourly tally.
if ARGV[8] ~= "" then
  local timeline = prefix .. "attempts:" .. id
  redis.call("rpush", timeline, ARGV[8])
  redis.call("ltrim", timeline, -50, -1)
  redis.call("expire", timeline, tonumber(ARGV[11]))
  redis.call("hincrby", ARGV[10], ARGV[9], 1)
  redis.call("expire", ARGV[10], 8 * 86400)
end
for i = 14, #ARGV, 2 do
  if ARGV[i + 1] == "" then
    redis.call("hdel", record, ARGV[i])
  else
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
end
redis.call("hset", record, unpack(fields))
if drop_payload ~= "keep" then
  local keep = tonumber(drop_payload)
  local body = redis.call("hget", record, "payload")
  if body and keep > 0 then redis.call("set", prefix .. "sent:" .. id, body, "EX", keep) end
  redis.call("hdel", record, "payload")
end
return old
"""


# Takes the worker's lock on a delivery (KEYS[1], token ARGV[1], for ARGV[2] ms) and reads the
# record (KEYS[2]): {"read", field, value, ...}; or, when another holds the lock, {"locked", its ms left}.
_LOCK_AND_READ = """
if not redis.call("set", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return {"locked", redis.call("pttl", KEYS[1])}
end
local found = redis.call("hgetall", KEYS[2])
table.insert(found, 1, "read")
return found
"""

# Pops up to ARGV[3] retries due by ARGV[1], leasing each until ARGV[2]: a worker that dies
# before queueing them leaves them due again once the lease runs out.
_CLAIM_DUE = """
local ids = redis.call("zrangebyscore", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call("zadd", KEYS[1], ARGV[2], id) end
return ids
"""

# Drops a leased retry once queued, unless it was scheduled anew meanwhile (its score changed).
_RELEASE_DUE = """
local score = redis.call("zscore", KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then redis.call("zrem", KEYS[1], ARGV[1]) end
"""

DUE_KEY = f"{PREFIX}due"
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
    payload: dict[str, Any]
    claim: bool = True
    enqueue: QueueWrite | None = None


@dataclass(frozen=True)
class Stored:
    """What `create_all` did: `replayed` is the answer already stored under the replay key (nothing
    written); `stale`, that the directory changed since routing read it (nothing written); else
    `holders` has, per record, the id of the delivery that already held its claim (that record was
    not written) or None."""

    replayed: str | None = None
    stale: bool = False
    holders: tuple[str | None, ...] = ()


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
    prospectFoundBy: str | None = None
    agentFoundBy: str | None = None
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


def _with_payload(raw: dict[str, str]) -> tuple[Delivery | None, dict[str, Any] | None]:
    """A record's hash as the record and its Knock body (None, None for no record)."""
    if not raw:
        return None, None
    return Delivery.from_hash(raw), (json.loads(raw["payload"]) if raw.get("payload") else None)


def run_script_once(client: redis.Redis, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """`script(keys=keys, args=args)` through one pooled connection, the command packed by hiredis
    in one call: redis-py's command layer (its argument checks, retry wrapper and observability
    hooks) costs about as many instructions as packing, sending and reading the reply, and the
    webhook's one round trip would pay it for every email, the worker for each of its steps. A
    connection that fails is dropped by redis-py and the error raised, as its own call does (the
    relay's clients do not retry); a script Redis does not have (it restarted) goes the full way,
    which loads it."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))])
        return connection.read_response()
    except redis.exceptions.NoScriptError:
        pass
    finally:
        pool.release(connection)
    return script(keys=keys, args=args)


#: A record's field names in their declared order, and as a set for reading records back.
DELIVERY_FIELDS = tuple(f.name for f in fields(Delivery))
_KNOWN_FIELDS = frozenset(DELIVERY_FIELDS)


class DeliveryStore:
    def __init__(self, client: redis.Redis, *, record_ttl: int, dedup_ttl: int, sent_body_ttl: int = 0) -> None:
        self.redis = client
        self.record_ttl = record_ttl
        self.dedup_ttl = dedup_ttl
        #: How long the body Knock was sent stays readable after delivery (for people checking it).
        self.sent_body_ttl = sent_body_ttl
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._release = client.register_script(
            'if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0'
        )
        self._release_due = client.register_script(_RELEASE_DUE)
        self._lock_and_read = client.register_script(_LOCK_AND_READ)

    @staticmethod
    def claim_key(message_id: str, prospect_id: str | None) -> str:
        return f"{PREFIX}dedup:{message_key(message_id)}:{prospect_id or ''}"

    @staticmethod
    def lock_key(delivery_id: str) -> str:
        """Held by the worker sending the delivery, so that two messages for it never both send."""
        return f"{PREFIX}lock:{delivery_id}"

    @staticmethod
    def record_key(delivery_id: str) -> str:
        return f"{PREFIX}delivery:{delivery_id}"

    def create_all(
        self,
        records: Sequence[NewRecord],
        *,
        directory_version: str | None = None,
        replay_key: str | None = None,
        replay_answer: str = "",
        replay_ttl: int = 0,
    ) -> Stored:
        """Store the records of one call in one step (see _CREATE). With `directory_version` (what
        routing read the directory at), nothing is written if the directory changed since. With
        `replay_key`, nothing is written if an earlier call stored it, and it is stored with
        `replay_answer` for `replay_ttl` seconds when every record was written."""
        writes = [record.enqueue for record in records if record.enqueue]
        queue_keys = (writes[0].list_key, writes[0].hash_key) if writes else (f"{PREFIX}none", f"{PREFIX}none")
        keys = [*queue_keys, replay_key or f"{PREFIX}none", DIRECTORY_VERSION_KEY]
        args: list[Any] = [
            PREFIX,
            self.record_ttl,
            self.dedup_ttl,
            replay_key or "",
            replay_ttl,
            replay_answer,
            "-" if directory_version is None else directory_version,
            len(records),
        ]
        for record in records:
            delivery, write = record.delivery, record.enqueue
            hash_fields = delivery.to_hash()
            hash_fields["payload"] = json.dumps(record.payload)
            args += [
                delivery.id,
                delivery.receivedAt,
                delivery.status,
                delivery.prospectId or "",
                message_key(delivery.messageId),
                self.claim_key(delivery.messageId, delivery.prospectId) if record.claim else "",
                *((write.message_id, write.data) if write else ("", "")),
                2 * len(hash_fields),
            ]
            for pair in hash_fields.items():
                args += pair
        reply = run_script_once(self.redis, self._create, keys, args)
        if reply[0] == "replay":
            return Stored(replayed=str(reply[1]))
        if reply[0] == "stale":
            return Stored(stale=True)
        return Stored(holders=tuple(str(h) if h else None for h in reply[1:]))

    def claim(self, message_id: str, prospect_id: str, delivery_id: str) -> str | None:
        """Take the claim for (Message-ID, prospect) for an existing delivery; the holder's id if taken."""
        key = self.claim_key(message_id, prospect_id)
        if self.redis.set(key, delivery_id, nx=True, ex=self.dedup_ttl):
            return None
        holder_id = str(self.redis.get(key))
        if holder_id == delivery_id or not self.redis.exists(self.record_key(holder_id)):
            self.redis.set(key, delivery_id, ex=self.dedup_ttl)
            return None
        return holder_id

    def assign_prospect(self, delivery_id: str, prospect_id: str) -> None:
        score = self.redis.zscore(f"{PREFIX}idx:all", delivery_id) or now_ms()
        self.redis.zadd(f"{PREFIX}idx:prospect:{prospect_id}", {delivery_id: score})

    def mark_enqueued(self, delivery_id: str) -> None:
        self.redis.hset(self.record_key(delivery_id), mapping={"enqueued": "1", "queuedAt": now_ms()})

    def stranded(self, older_than_ms: int, limit: int = 500) -> list[str]:
        """Pending deliveries last queued longer ago than `older_than_ms` that are neither scheduled
        nor being sent. Called only while the queue is empty: then no queued message can be theirs,
        and their message was lost (fetched by a worker whose Redis reply never came)."""
        cutoff = now_ms() - older_than_ms
        candidates: list[str] = []
        for status in PENDING:
            candidates += [str(i) for i in self.redis.zrangebyscore(f"{PREFIX}idx:status:{status}", "-inf", cutoff,
                                                                     start=0, num=limit)]  # fmt: skip
        if not candidates:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in candidates:
            pipe.hmget(self.record_key(delivery_id), ["status", "queuedAt"])
            pipe.zscore(DUE_KEY, delivery_id)
            pipe.exists(self.lock_key(delivery_id))
        replies = pipe.execute()
        lost = []
        for i, delivery_id in enumerate(candidates):
            (status, queued_at), due, locked = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            if status in PENDING and due is None and not locked and int(queued_at or 0) <= cutoff:
                lost.append(delivery_id)
        return lost

    def get(self, delivery_id: str) -> Delivery | None:
        raw: dict[str, str] = self.redis.hgetall(self.record_key(delivery_id))  # type: ignore[assignment]
        return Delivery.from_hash(raw) if raw else None

    def payload(self, delivery_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.record_key(delivery_id), "payload")
        return json.loads(str(raw)) if raw else None

    def get_with_payload(self, delivery_id: str) -> tuple[Delivery | None, dict[str, Any] | None]:
        """The record and its Knock body, in one read."""
        return _with_payload(self.redis.hgetall(self.record_key(delivery_id)))  # type: ignore[arg-type]

    def sent_payload(self, delivery_id: str) -> dict[str, Any] | None:
        """The body as Knock received it, while RELAY_SENT_BODY_TTL_SECONDS keeps it."""
        raw = self.redis.get(f"{PREFIX}sent:{delivery_id}")
        return json.loads(str(raw)) if raw else None

    def lock_and_read(
        self, delivery_id: str, token: str, lock_ms: int
    ) -> tuple[int | None, Delivery | None, dict[str, Any] | None]:
        """Take the lock on a delivery with `token` and read it with its Knock body, in one step:
        (None, record, body); or (milliseconds left, None, None) when another holds the lock."""
        keys = [self.lock_key(delivery_id), self.record_key(delivery_id)]
        reply = run_script_once(self.redis, self._lock_and_read, keys, [token, lock_ms])
        if reply[0] == "locked":
            return max(int(reply[1]), 0), None, None
        return None, *_with_payload(dict(zip(reply[1::2], reply[2::2], strict=True)))

    def release_lock(self, key: str, token: str) -> None:
        """Delete a lock only if it is still ours, in one step."""
        run_script_once(self.redis, self._release, [key], [token])

    def transition(
        self,
        delivery_id: str,
        status: str,
        *,
        allowed_from: Iterable[str] = (),
        drop_payload: bool = False,
        schedule_at: int | None = None,
        attempt: dict[str, Any] | None = None,
        release_lock: tuple[str, str] | None = None,
        **changes: Any,
    ) -> str | None:
        """Move a delivery to `status`, setting `changes` (None deletes a field) and, with `schedule_at`,
        scheduling it then, and with `attempt` (a call to Knock, see `attempt_entry`) adding it to the
        delivery's timeline, all at once; the old status, or None if refused. `release_lock` (key,
        token) releases that lock in the same step if the token still holds it."""
        args: list[Any] = [
            PREFIX,
            delivery_id,
            status,
            ",".join(allowed_from),
            self.sent_body_ttl if drop_payload else "keep",
            now_ms() - self.record_ttl * 1000,
            "" if schedule_at is None else schedule_at,
            "" if attempt is None else json.dumps(attempt),
            "ok" if attempt and attempt["status"] and 200 <= attempt["status"] < 300 else "error",
            knock_stats_key(now_ms()),
            self.record_ttl,
            *(release_lock or ("", "")),
        ]
        for name, value in changes.items():
            if name == "payload":
                value = json.dumps(value)
            args += [name, "" if value is None else str(value)]
        old = run_script_once(self.redis, self._transition, [self.record_key(delivery_id)], args)
        return None if old is None else str(old)

    def update_fields(self, delivery_id: str, **changes: Any) -> None:
        mapping = {k: json.dumps(v) if k == "payload" else str(v) for k, v in changes.items() if v is not None}
        if mapping:
            self.redis.hset(self.record_key(delivery_id), mapping=mapping)  # type: ignore[arg-type]

    # Attempts and retries ------------------------------------------------------------------

    def begin_attempt(self, delivery_id: str, attempt: int) -> None:
        """Count the attempt and mark it in flight; written before anything is sent to Knock."""
        self.redis.hset(self.record_key(delivery_id), mapping={"attempts": attempt, "inFlight": attempt})

    @staticmethod
    def attempt_entry(attempt: int, status: int | None, latency_ms: float, answer: str | None) -> dict[str, Any]:
        """A call to Knock as the delivery's timeline keeps it (written with the outcome it led to)."""
        return {"at": now_ms(), "attempt": attempt, "status": status, "ms": latency_ms, "answer": (answer or "")[:300]}

    def attempts_of(self, delivery_id: str) -> list[dict[str, Any]]:
        # Written by the transition script, as prefix .. "attempts:" .. id.
        return [json.loads(raw) for raw in self.redis.lrange(f"{PREFIX}attempts:{delivery_id}", 0, -1)]

    def knock_answers_since(self, since_ms: int) -> tuple[int, int]:
        """Knock's 2xx answers and errors (other statuses, timeouts) in the hours since `since_ms`."""
        keys = [knock_stats_key(ms) for ms in range(since_ms - since_ms % 3_600_000, now_ms() + 1, 3_600_000)]
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.hmget(key, "ok", "error")
        ok = error = 0
        for good, bad in pipe.execute():
            ok += int(good or 0)
            error += int(bad or 0)
        return ok, error

    def count_by_status(self, since_ms: int) -> dict[str, int]:
        pipe = self.redis.pipeline()
        for status in STATUSES:
            pipe.zcount(f"{PREFIX}idx:status:{status}", since_ms, "+inf")
        return dict(zip(STATUSES, map(int, pipe.execute()), strict=True))

    def received_per_hour(self, hours: int) -> list[tuple[int, int]]:
        """(hour start in ms, deliveries received) for the last `hours` hours, oldest first."""
        current = now_ms() - now_ms() % 3_600_000
        starts = [current - i * 3_600_000 for i in range(hours - 1, -1, -1)]
        pipe = self.redis.pipeline()
        for start in starts:
            pipe.zcount(f"{PREFIX}idx:all", start, f"({start + 3_600_000}")
        return list(zip(starts, map(int, pipe.execute()), strict=True))

    def mark_possible_duplicate(self, delivery_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.record_key(delivery_id), "possibleDuplicate", "1")
        pipe.zadd(POSSIBLE_DUPLICATES_KEY, {delivery_id: now_ms()})
        pipe.zremrangebyscore(POSSIBLE_DUPLICATES_KEY, "-inf", now_ms() - self.record_ttl * 1000)
        pipe.execute()

    def schedule(self, delivery_id: str, due_ms: int) -> None:
        """Queue the delivery again at `due_ms` (the worker's retry scheduler moves it when due)."""
        self.redis.zadd(DUE_KEY, {delivery_id: due_ms})

    def claim_due(self, now: int, lease_ms: int, limit: int = 100) -> tuple[list[str], int]:
        """Retries due by `now`, leased for `lease_ms`; and the lease score to release them with."""
        lease = now + lease_ms
        ids = run_script_once(self.redis, self._claim_due, [DUE_KEY], [now, lease, limit])
        return [str(i) for i in ids], lease

    def release_due(self, delivery_id: str, lease: int) -> None:
        run_script_once(self.redis, self._release_due, [DUE_KEY], [delivery_id, lease])

    def ids_with_status(self, status: str) -> list[str]:
        return [str(m) for m in self.redis.zrange(f"{PREFIX}idx:status:{status}", 0, -1)]

    def list(
        self,
        *,
        status: str | None = None,
        message_id: str | None = None,
        prospect_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        provider: str | None = None,
        address: str | None = None,
        words: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        scan_limit: int = 5000,
    ) -> tuple[list[Delivery], str | None]:
        """Deliveries matching every filter, newest first, and the cursor of the next page.

        Message-ID, prospect and status are indexed; provider, an address (sender or recipient),
        subject words and the time range filter what those indexes (or all deliveries) give,
        reading at most `scan_limit` records per page."""
        if message_id:
            index = f"{PREFIX}idx:message:{message_key(message_id)}"
        elif prospect_id:
            index = f"{PREFIX}idx:prospect:{prospect_id}"
        elif status:
            index = f"{PREFIX}idx:status:{status}"
        else:
            index = f"{PREFIX}idx:all"

        max_score: str = "+inf" if until_ms is None else str(until_ms)
        min_score: str = "-inf" if since_ms is None else str(since_ms)
        after: tuple[int, str] | None = None
        if cursor:
            score_text, _, last_id = cursor.partition("_")
            after = (int(score_text), last_id)
            max_score = score_text if until_ms is None else str(min(int(score_text), until_ms))
        wanted_words = [w for w in (words or "").lower().split() if w]
        wanted_address = (address or "").strip().lower()
        read = 0

        found: list[Delivery] = []
        offset = 0
        batch = max(limit * 2, 50)
        while len(found) <= limit:
            members: list[tuple[str, float]] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                index, max_score, min_score, start=offset, num=batch, withscores=True
            )
            if not members:
                break
            offset += len(members)
            candidates = []
            for delivery_id, score in members:
                if after and (int(score), delivery_id) >= after:
                    continue
                candidates.append(delivery_id)
            pipe = self.redis.pipeline()
            for delivery_id in candidates:
                pipe.hgetall(self.record_key(delivery_id))
            for delivery_id, raw in zip(candidates, pipe.execute(), strict=False):
                if not raw:
                    self.redis.zrem(index, delivery_id)  # expired record: tidy the index as we go
                    offset -= 1
                    continue
                delivery = Delivery.from_hash(raw)
                if status and delivery.status != status:
                    continue
                if prospect_id and delivery.prospectId != prospect_id:
                    continue
                if message_id and delivery.messageId != message_id:
                    continue
                if provider and delivery.provider != provider:
                    continue
                if wanted_address and wanted_address not in delivery.addresses():
                    continue
                if wanted_words and not all(w in (delivery.subject or "").lower() for w in wanted_words):
                    continue
                found.append(delivery)
            read += len(members)
            if len(members) < batch or read >= scan_limit:
                break
        page = found[:limit]
        next_cursor = None
        if len(found) > limit:
            last = page[-1]
            next_cursor = f"{last.receivedAt}_{last.id}"
        return page, next_cursor
