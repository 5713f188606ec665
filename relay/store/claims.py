"""Claims and locks: the same email lands once per prospect, one worker sends a delivery at a time,
and retries are leased to whoever queues them."""

from __future__ import annotations

from typing import Any, NamedTuple

from relay.store.records import DUE_KEY, KNOCK_CIRCUIT_KEY, PENDING, PREFIX, Delivery, now_ms, with_payload
from relay.store.scripts import ScriptedStore, run_script_once


class Locked(NamedTuple):
    """A delivery taken by a worker: milliseconds left on another's lock (and nothing else); or only
    `knock`, the time (ms) of the next probe to wait for (Knock is down: nothing was locked or read);
    or the record, its Knock body, and what the Knock circuit allows: "send", "recovering"
    (sending, failures counted) or "probe"."""

    held_for: int | None
    delivery: Delivery | None
    payload: dict[str, Any] | None
    knock: str = "send"


class Claims(ScriptedStore):
    """De-duplication claims, worker locks and the schedule of retries."""

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

    def lock_and_read(self, delivery_id: str, token: str, lock_ms: int, probe_ms: int = 30_000) -> Locked:
        """Take the lock on a delivery with `token` and read it with its Knock body and what the
        Knock circuit allows (taking the probe when one is due; the next `probe_ms` later), in one step."""
        keys = [self.lock_key(delivery_id), self.record_key(delivery_id), KNOCK_CIRCUIT_KEY]
        reply = run_script_once(self.redis, self._lock_and_read, keys, [token, lock_ms, now_ms(), probe_ms])
        if reply[0] == "wait":
            return Locked(None, None, None, str(int(reply[1])))
        if reply[0] == "locked":
            return Locked(max(int(reply[1]), 0), None, None)
        delivery, payload = with_payload(dict(zip(reply[2::2], reply[3::2], strict=True)))
        return Locked(None, delivery, payload, str(reply[1]))

    def release_lock(self, key: str, token: str) -> None:
        """Delete a lock only if it is still ours, in one step."""
        run_script_once(self.redis, self._release, [key], [token])

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
