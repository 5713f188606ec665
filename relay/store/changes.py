"""Writes to delivery records: creating them with their indexes and claims, and moving them
between statuses, each in one step."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from relay.store.indexes import ALL_KEY, index_keys, prospect_key
from relay.store.records import (
    DIRECTORY_VERSION_KEY,
    POSSIBLE_DUPLICATES_KEY,
    PREFIX,
    NewRecord,
    Stored,
    knock_stats_key,
    now_ms,
)
from relay.store.scripts import ScriptedStore, run_script_once


class Changes(ScriptedStore):
    """Creating records and changing them."""

    def create_all(
        self,
        records: Sequence[NewRecord],
        *,
        directory_version: str | None = None,
        replay_key: str | None = None,
        replay_answer: str = "",
        replay_ttl: int = 0,
        thread_candidates: Sequence[str] = (),
        thread_writes: Sequence[tuple[str, str, str, int]] = (),
    ) -> Stored:
        """Store the records of one call in one step (see _CREATE). With `directory_version` (what
        routing read the directory at), nothing is written if the directory changed since. With
        `replay_key`, nothing is written if an earlier call stored it, and it is stored with
        `replay_answer` for `replay_ttl` seconds when every record was written."""
        keys, args = self._create_call(
            records, directory_version, replay_key, replay_answer, replay_ttl, thread_candidates, thread_writes
        )
        reply = run_script_once(
            self.redis,
            self._create,
            keys,
            args,
            replicas=self.min_replicas,
            replica_timeout_ms=self.replica_timeout_ms,
        )
        if reply[0] == "replay":
            return Stored(replayed=str(reply[1]))
        if reply[0] == "stale":
            return Stored(stale=True)
        if reply[0] == "threads":
            found = reply[1:]
            return Stored(threads={str(key): _pairs(raw) for key, raw in zip(found[::2], found[1::2], strict=True)})
        return Stored(holders=tuple(str(h) if h else None for h in reply[1:]))

    def create_many(self, batches: Iterable[Sequence[NewRecord]], *, per_round_trip: int = 200) -> int:
        """Store many calls' records (each batch as create_all would), `per_round_trip` scripts
        pipelined at a time: for loading records in bulk. How many records were written."""
        written = 0
        pipe = self.redis.pipeline(transaction=False)
        queued = 0
        for records in batches:
            keys, args = self._create_call(records, None, None, "", 0)
            self._create(keys=keys, args=args, client=pipe)
            queued += 1
            if queued == per_round_trip:
                written += _written(pipe.execute())
                queued = 0
        if queued:
            written += _written(pipe.execute())
        return written

    def _create_call(
        self,
        records: Sequence[NewRecord],
        directory_version: str | None,
        replay_key: str | None,
        replay_answer: str,
        replay_ttl: int,
        thread_candidates: Sequence[str] = (),
        thread_writes: Sequence[tuple[str, str, str, int]] = (),
    ) -> tuple[list[str], list[Any]]:
        """The create script's keys and arguments for `records` (see _CREATE)."""
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
            len(thread_candidates),
            *thread_candidates,
            len(thread_writes),
            *(value for write in thread_writes for value in write),
        ]
        for record in records:
            delivery, write = record.delivery, record.enqueue
            hash_fields = delivery.to_hash()
            if record.payload is not None:
                hash_fields["payload"] = json.dumps(record.payload)
            indexes = index_keys(delivery, record.searched_addresses)
            args += [
                delivery.id,
                delivery.receivedAt,
                self.claim_key(delivery.messageId, delivery.prospectId) if record.claim else "",
                *((write.message_id, write.data) if write else ("", "")),
                len(indexes),
                *indexes,
                2 * len(hash_fields),
            ]
            for pair in hash_fields.items():
                args += pair
        return keys, args

    def assign_prospect(self, delivery_id: str, prospect_id: str) -> None:
        score = self.redis.zscore(ALL_KEY, delivery_id) or now_ms()
        earlier = self.redis.hget(self.record_key(delivery_id), "prospectId")
        pipe = self.redis.pipeline()
        if earlier and earlier != prospect_id:  # found under the prospect it has, and only that one
            pipe.zrem(prospect_key(str(earlier)), delivery_id)
        pipe.zadd(prospect_key(prospect_id), {delivery_id: score})
        pipe.expire(prospect_key(prospect_id), self.record_ttl)
        pipe.execute()

    def mark_enqueued(self, delivery_id: str) -> None:
        self.redis.hset(self.record_key(delivery_id), mapping={"enqueued": "1", "queuedAt": now_ms()})

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
        old = run_script_once(
            self.redis, self._transition, [self.record_key(delivery_id)], args,
            replicas=self.outcome_replicas, replica_timeout_ms=self.replica_timeout_ms,
        )  # fmt: skip
        return None if old is None else str(old)

    def update_fields(self, delivery_id: str, **changes: Any) -> None:
        mapping = {k: json.dumps(v) if k == "payload" else str(v) for k, v in changes.items() if v is not None}
        if mapping:
            self.redis.hset(self.record_key(delivery_id), mapping=mapping)  # type: ignore[arg-type]

    def begin_attempt(self, delivery_id: str, attempt: int) -> None:
        """Count the attempt and mark it in flight; written before anything is sent to Knock."""
        self.redis.hset(self.record_key(delivery_id), mapping={"attempts": attempt, "inFlight": attempt})

    @staticmethod
    def attempt_entry(attempt: int, status: int | None, latency_ms: float, answer: str | None) -> dict[str, Any]:
        """A call to Knock as the delivery's timeline keeps it (written with the outcome it led to)."""
        return {"at": now_ms(), "attempt": attempt, "status": status, "ms": latency_ms, "answer": (answer or "")[:300]}

    def mark_possible_duplicate(self, delivery_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.hset(self.record_key(delivery_id), "possibleDuplicate", "1")
        pipe.zadd(POSSIBLE_DUPLICATES_KEY, {delivery_id: now_ms()})
        pipe.zremrangebyscore(POSSIBLE_DUPLICATES_KEY, "-inf", now_ms() - self.record_ttl * 1000)
        pipe.execute()


def _written(replies: list[Any]) -> int:
    return sum(reply.count("") for reply in replies if reply and reply[0] == "ok")


def _pairs(raw: Sequence[Any]) -> dict[str, str]:
    """A flat [field, value, ...] reply as a dict of strings."""
    text = [item.decode() if isinstance(item, bytes) else str(item) for item in raw]
    return dict(zip(text[::2], text[1::2], strict=True))
