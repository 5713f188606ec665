"""Listing deliveries and counting them, from the indexes the store's scripts keep."""

from __future__ import annotations

from relay.store.records import PREFIX, STATUSES, Delivery, knock_stats_key, message_key, now_ms
from relay.store.scripts import ScriptedStore


class Indexes(ScriptedStore):
    """Searches and counts over the indexes."""

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
