"""Reading one delivery: its record, its Knock body and its timeline of calls to Knock."""

from __future__ import annotations

import json
from typing import Any

from relay.store.records import PREFIX, Delivery, with_payload
from relay.store.scripts import ScriptedStore


class Reads(ScriptedStore):
    """One delivery at a time."""

    def get(self, delivery_id: str) -> Delivery | None:
        raw: dict[str, str] = self.redis.hgetall(self.record_key(delivery_id))  # type: ignore[assignment]
        return Delivery.from_hash(raw) if raw else None

    def payload(self, delivery_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(self.record_key(delivery_id), "payload")
        return json.loads(str(raw)) if raw else None

    def get_with_payload(self, delivery_id: str) -> tuple[Delivery | None, dict[str, Any] | None]:
        """The record and its Knock body, in one read."""
        return with_payload(self.redis.hgetall(self.record_key(delivery_id)))  # type: ignore[arg-type]

    def sent_payload(self, delivery_id: str) -> dict[str, Any] | None:
        """The body as Knock received it, while RELAY_SENT_BODY_TTL_SECONDS keeps it."""
        raw = self.redis.get(f"{PREFIX}sent:{delivery_id}")
        return json.loads(str(raw)) if raw else None

    def attempts_of(self, delivery_id: str) -> list[dict[str, Any]]:
        # Written by the transition script, as prefix .. "attempts:" .. id.
        return [json.loads(raw) for raw in self.redis.lrange(f"{PREFIX}attempts:{delivery_id}", 0, -1)]
