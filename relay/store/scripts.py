"""The store's Lua scripts, each one step in Redis, and the base every part of the store builds on.

Index keys (sorted sets scored by receipt time in ms) are written by these scripts in the same
step as the records they point at; see relay.store.indexes for what they are and how searches read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import redis
from redis.commands.core import Script

from relay.errors import NotReplicated
from relay.store.records import PREFIX, message_key, now_ms

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
# Threads (relay.threads): ARGV[9] thread keys that unmatched emails reply to; when any of them is
# remembered, nothing is written and {"threads", key, {prospect, direction, ...}, ...} returned.
# Then, after the records, the thread entries of the emails logged for prospects (key, prospect,
# direction, record index quadruples, their count after the keys), living as long as records: only
# for a record this call wrote (not one whose claim was held: a copy says nothing new), and only on
# a key no earlier email wrote (a stranger reusing a Message-ID cannot add to its thread).
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
local asked = tonumber(ARGV[9])
local threads = {"threads"}
for k = 10, 9 + asked do
  local remembered = redis.call("hgetall", ARGV[k])
  if #remembered > 0 then
    threads[#threads + 1] = ARGV[k]
    threads[#threads + 1] = remembered
  end
end
if #threads > 1 then return threads end
local thread_writes = tonumber(ARGV[10 + asked])
local i = 11 + asked + 4 * thread_writes
local result = {"ok"}
local held = false
local trimmed = {}  -- index keys trimmed and renewed by this call: once each, however many records
for n = 1, tonumber(ARGV[8]) do
  local id, score = ARGV[i], ARGV[i + 1]
  local claim_key, queue_id, queue_body = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local indexes_end = i + 5 + tonumber(ARGV[i + 5])
  local pairs_end = indexes_end + 1 + tonumber(ARGV[indexes_end + 1])
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
    for k = indexes_end + 2, pairs_end do fields[#fields + 1] = ARGV[k] end
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
    -- Its indexes (relay.store.indexes.index_keys): entries older than the record lifetime point
    -- at expired records and are trimmed on every write; a key lives as long as its newest record.
    for k = i + 6, indexes_end do
      redis.call("zadd", ARGV[k], score, id)
      if not trimmed[ARGV[k]] then
        redis.call("zremrangebyscore", ARGV[k], "-inf", cutoff)
        redis.call("expire", ARGV[k], record_ttl)
        trimmed[ARGV[k]] = true
      end
    end
  end
  i = pairs_end + 1
end
local existed = {}
local j = 11 + asked
for n = 1, thread_writes do
  local key = ARGV[j]
  if existed[key] == nil then existed[key] = redis.call("exists", key) == 1 end
  if not existed[key] and result[tonumber(ARGV[j + 3]) + 2] == "" then
    redis.call("hset", key, ARGV[j + 1], ARGV[j + 2])
    redis.call("expire", key, record_ttl)
  end
  j = j + 4
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
redis.call("expire", prefix .. "idx:status:" .. new_status, tonumber(ARGV[11]))
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


# What the Knock circuit (KEYS[3], relay.circuit) allows, then a delivery's lock (KEYS[1], token
# ARGV[1] for ARGV[2] ms) and its record (KEYS[2]), in one step. While the circuit is open and no
# probe is due (ARGV[3] is now), {"wait", the time of the next probe}: nothing is locked or read.
# A due probe is taken (the next one ARGV[4] ms later). Else {"locked", ms left} when another holds
# the lock, or {"read", allowed, field, value, ...}, allowed being "send" (closed, no failure
# counted), "recovering" (closed, failures counted: a success resets them) or "probe".
_LOCK_AND_READ = """
local state, failures, probe_at = unpack(redis.call("hmget", KEYS[3], "state", "failures", "probeAt"))
local allowed = "send"
if state == "open" then
  local now = tonumber(ARGV[3])
  local due = tonumber(probe_at) or 0
  if due > now then
    return {"wait", due}
  end
  redis.call("hset", KEYS[3], "probeAt", now + tonumber(ARGV[4]))
  allowed = "probe"
elseif failures and failures ~= "0" then
  allowed = "recovering"
end
if not redis.call("set", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
  return {"locked", redis.call("pttl", KEYS[1])}
end
local found = redis.call("hgetall", KEYS[2])
table.insert(found, 1, allowed)
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

# A search (relay.store.indexes): KEYS are the indexes every match is in. ARGV: the highest and
# lowest receipt times, the cursor's id (at the highest time only lower ids count; "" for none),
# how many matches to find, how many index entries to read at most, the record key prefix. Walks
# the index with the fewest entries in the range newest first, 256 ids at a time by rank (no
# scores: the range is a span of ranks), keeping the ids every other index holds and whose record
# exists. Returns {outcome, score, id, match id, match score, ...}: "full" with as many as wanted,
# "done" when the range ended, "stopped" when the budget ran out with every id down to that score
# and id examined.
_SEARCH = """
local top, bottom, after = ARGV[1], ARGV[2], ARGV[3]
local want, budget, record = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local counts = {}
local driver = 1
for k = 1, #KEYS do
  counts[k] = redis.call("zcount", KEYS[k], bottom, top)
  if counts[k] < counts[driver] then driver = k end
end
local result = {"done", "", ""}
if counts[driver] == 0 then return result end
-- The other indexes, smallest first: each is asked only about the ids every smaller one holds.
local others = {}
for k = 1, #KEYS do
  if k ~= driver then others[#others + 1] = k end
end
table.sort(others, function(x, y) return counts[x] < counts[y] end)
local key = KEYS[driver]
local rank = 0
if top ~= "+inf" then rank = redis.call("zcount", key, "(" .. top, "+inf") end
local last = redis.call("zcount", key, bottom, "+inf") - 1
if after ~= "" then
  -- At the cursor's own time, ids from the cursor's up come first (same score: reverse id order).
  for _, id in ipairs(redis.call("zrevrangebyscore", key, top, top)) do
    if id >= after then rank = rank + 1 end
  end
end
local spent, found = 0, 0
while rank <= last do
  local ids = redis.call("zrevrange", key, rank, math.min(rank + 255, last))
  if #ids == 0 then return result end
  rank = rank + #ids
  spent = spent + #ids
  local kept = ids
  for _, k in ipairs(others) do
    if #kept == 0 then break end
    spent = spent + #kept
    local scores = redis.call("zmscore", KEYS[k], unpack(kept))
    local still = {}
    for n = 1, #kept do
      if scores[n] then still[#still + 1] = kept[n] end
    end
    kept = still
  end
  for _, id in ipairs(kept) do
    if redis.call("exists", record .. id) == 1 then
      result[#result + 1] = id
      result[#result + 1] = redis.call("zscore", key, id)
      found = found + 1
      if found >= want then
        result[1] = "full"
        return result
      end
    end
  end
  if spent >= budget and rank <= last then
    local id = ids[#ids]
    return {"stopped", redis.call("zscore", key, id), id, unpack(result, 4)}
  end
end
return result
"""

_RELEASE = 'if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0'


#: The key a replication barrier writes: replicas apply writes in order, so one that holds this
#: write holds every write the primary took before it.
BARRIER_KEY = f"{PREFIX}replication-barrier"


def run_script_once(
    client: redis.Redis,
    script: Script,
    keys: Sequence[str],
    args: Sequence[Any],
    *,
    replicas: int = 0,
    replica_timeout_ms: int = 0,
) -> Any:
    """`script(keys=keys, args=args)` through one pooled connection, the command packed by hiredis
    in one call: redis-py's command layer (its argument checks, retry wrapper and observability
    hooks) costs about as many instructions as packing, sending and reading the reply, and the
    webhook's one round trip would pay it for every email, the worker for each of its steps. A
    connection that fails is dropped by redis-py and the error raised, as its own call does (the
    relay's clients do not retry); a script Redis does not have (it restarted) is loaded on the same
    connection and run again.

    With `replicas`, it then writes the replication barrier and waits (Redis WAIT, on the same
    connection, in the same round trip) up to `replica_timeout_ms` for that many replicas to hold
    it, and so everything the primary took before it: what the script wrote, and what an earlier
    call wrote that this one found (a provider's retry answered as a duplicate). NotReplicated
    (with the script's reply) if fewer do."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        try:
            reply = _evalsha(connection, script, keys, args)
        except redis.exceptions.NoScriptError:
            connection.send_command("SCRIPT", "LOAD", script.script)
            connection.read_response()
            reply = _evalsha(connection, script, keys, args)
        if replicas:
            connection.send_packed_command(
                [
                    _packed("SET", BARRIER_KEY, now_ms()),
                    _packed("WAIT", replicas, replica_timeout_ms),
                ]
            )
            connection.read_response()
            acknowledged = int(connection.read_response())
            if acknowledged < replicas:
                error = NotReplicated(
                    f"stored, but on {acknowledged} of the {replicas} Redis replicas required: retry later"
                )
                error.reply = reply
                raise error
        return reply
    except (redis.ConnectionError, redis.TimeoutError):
        connection.disconnect()  # half-read or to a primary that is gone: never handed out again
        raise
    finally:
        pool.release(connection)


def _evalsha(connection: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    connection.send_packed_command([_packed("EVALSHA", script.sha, len(keys), *keys, *args)])
    return connection.read_response()


def _packed(*parts: Any) -> bytes:
    """One command as Redis reads it, packed by hiredis in one call."""
    return hiredis.pack_command(parts)  # type: ignore[no-any-return]


class ScriptedStore:
    """The Redis client, the store's lifetimes and its registered scripts."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        record_ttl: int,
        dedup_ttl: int,
        sent_body_ttl: int = 0,
        min_replicas: int = 0,
        replica_timeout_ms: int = 500,
        outcome_replicas: int = 0,
    ) -> None:
        self.redis = client
        #: Replicas that must hold a status change before `transition` returns (the worker's outcomes).
        self.outcome_replicas = outcome_replicas
        #: Replicas that must hold a new email's records before create_all returns (see run_script_once).
        self.min_replicas = min_replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.record_ttl = record_ttl
        self.dedup_ttl = dedup_ttl
        #: How long the body Knock was sent stays readable after delivery (for people checking it).
        self.sent_body_ttl = sent_body_ttl
        self._create = client.register_script(_CREATE)
        self._transition = client.register_script(_TRANSITION)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._release = client.register_script(_RELEASE)
        self._release_due = client.register_script(_RELEASE_DUE)
        self._lock_and_read = client.register_script(_LOCK_AND_READ)
        self._search = client.register_script(_SEARCH)
        self._noop = client.register_script("return 1")

    def replication_barrier(self, replicas: int) -> None:
        """Wait (up to the replica timeout) until `replicas` replicas hold every write the primary
        took so far; NotReplicated when fewer do."""
        run_script_once(self.redis, self._noop, [], [], replicas=replicas, replica_timeout_ms=self.replica_timeout_ms)

    @staticmethod
    def record_key(delivery_id: str) -> str:
        return f"{PREFIX}delivery:{delivery_id}"

    @staticmethod
    def claim_key(message_id: str, prospect_id: str | None) -> str:
        return f"{PREFIX}dedup:{message_key(message_id)}:{prospect_id or ''}"

    @staticmethod
    def lock_key(delivery_id: str) -> str:
        """Held by the worker sending the delivery, so that two messages for it never both send."""
        return f"{PREFIX}lock:{delivery_id}"
