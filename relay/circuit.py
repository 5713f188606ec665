"""The Knock circuit, shared by every worker through Redis.

Closed, deliveries are sent as they come. After `threshold` calls in a row have failed (5xx,
timeouts, refused connections; not 429, which is Knock pacing us) it opens: no worker sends,
each delivery it picks up waits for the next probe, and every `probe_seconds` one worker sends
one delivery as a probe. The first success closes it and the waiting deliveries drain. What the
circuit allows is read (and a due probe taken) in the same step that locks a delivery for a
worker (relay.store's lock_and_read), so that a closed circuit costs no extra round trip.

The time the circuit was open does not count toward a delivery's maximum age: a Knock outage
of any length makes no delivery dead. The open spells are kept (as `start:end` members scored
by their end) for as long as a delivery can live.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import redis

from relay.store import KNOCK_CIRCUIT_KEY, now_ms

STATE_KEY = KNOCK_CIRCUIT_KEY
SPELLS_KEY = f"{KNOCK_CIRCUIT_KEY}:spells"
CLOSED = "closed"
OPEN = "open"

# KEYS: state. ARGV: now, threshold, probe ms. "opened" when this failure opened the circuit, else "".
_FAILED = """
local state = redis.call("hget", KEYS[1], "state")
local failures = redis.call("hincrby", KEYS[1], "failures", 1)
local now = tonumber(ARGV[1])
if state == "open" then
  redis.call("hset", KEYS[1], "probeAt", now + tonumber(ARGV[3]))
  return ""
end
if failures >= tonumber(ARGV[2]) then
  redis.call("hset", KEYS[1], "state", "open", "openedAt", now, "probeAt", now + tonumber(ARGV[3]))
  return "opened"
end
return ""
"""

# KEYS: state, spells. ARGV: now, spells kept ms. "closed" when this success closed the circuit.
_SUCCEEDED = """
local state, failures, opened = unpack(redis.call("hmget", KEYS[1], "state", "failures", "openedAt"))
if state == "open" then
  local now = tonumber(ARGV[1])
  redis.call("zadd", KEYS[2], now, (tonumber(opened) or now) .. ":" .. now)
  redis.call("zremrangebyscore", KEYS[2], "-inf", now - tonumber(ARGV[2]))
  redis.call("pexpire", KEYS[2], tonumber(ARGV[2]))
  redis.call("hset", KEYS[1], "state", "closed", "failures", 0)
  redis.call("hdel", KEYS[1], "openedAt", "probeAt")
  return "closed"
end
if failures and failures ~= "0" then
  redis.call("hset", KEYS[1], "failures", 0)
end
return ""
"""


@dataclass(frozen=True)
class CircuitState:
    state: str
    failures: int
    opened_at: int | None
    probe_at: int | None

    @property
    def open(self) -> bool:
        return self.state == OPEN


class KnockCircuit:
    def __init__(self, client: redis.Redis, *, threshold: int, probe_seconds: float, keep_seconds: int) -> None:
        self.redis = client
        self.threshold = threshold
        self.probe_ms = max(1, int(probe_seconds * 1000))
        self.keep_ms = keep_seconds * 1000
        self._failed = client.register_script(_FAILED)
        self._succeeded = client.register_script(_SUCCEEDED)

    def wait_until(self, probe_at: int) -> int:
        """When a delivery that found the circuit open (the next probe due at `probe_at`) is tried
        again: spread over the interval after the probe, so that when it succeeds they drain
        rather than all arrive at once."""
        return probe_at + random.randint(50, self.probe_ms + 50)

    def failed(self) -> bool:
        """A call failed as an outage does; True when that opened the circuit."""
        return self._failed(keys=[STATE_KEY], args=[now_ms(), self.threshold, self.probe_ms]) == "opened"

    def succeeded(self) -> bool:
        """A call succeeded; True when that closed the circuit."""
        return self._succeeded(keys=[STATE_KEY, SPELLS_KEY], args=[now_ms(), self.keep_ms]) == "closed"

    def read(self) -> CircuitState:
        return read_circuit(self.redis)

    def open_seconds_since(self, start_ms: int, now: int | None = None) -> float:
        """How long the circuit has been open between `start_ms` and now."""
        now = now_ms() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrangebyscore(SPELLS_KEY, start_ms, "+inf")
        pipe.hmget(STATE_KEY, "state", "openedAt")
        spells, (state, opened_at) = pipe.execute()
        spans = [tuple(int(part) for part in str(spell).split(":")) for spell in spells]
        if state == OPEN and opened_at:
            spans.append((int(opened_at), now))
        return open_overlap(spans, start_ms, now) / 1000


def open_overlap(spans: list[tuple[int, ...]], start_ms: int, end_ms: int) -> int:
    """Milliseconds of [start_ms, end_ms] covered by the (open, close) `spans`."""
    return sum(max(0, min(end, end_ms) - max(opened, start_ms)) for opened, end in spans)


def read_circuit(client: redis.Redis) -> CircuitState:
    state, failures, opened_at, probe_at = client.hmget(STATE_KEY, "state", "failures", "openedAt", "probeAt")
    return CircuitState(
        state=OPEN if state == OPEN else CLOSED,
        failures=int(failures or 0),
        opened_at=int(opened_at) if opened_at else None,
        probe_at=int(probe_at) if probe_at else None,
    )
