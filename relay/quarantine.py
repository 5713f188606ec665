"""Raw requests that authenticated but could not be read, kept for inspection."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import redis

KEY = "relay:quarantine"
KEEP = 100  # newest entries kept
TTL_SECONDS = 7 * 86400
# Bodies may be 30 MiB; the first MiB shows what went wrong without letting the list eat Redis.
MAX_BODY_BYTES = 1024 * 1024


class Quarantine:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def keep(
        self, *, provider: str, reason: str, content_type: str | None, body: bytes, size: int | None = None
    ) -> str:
        """Keep the request; `body` may be only its start (at least MAX_BODY_BYTES of it) when
        `size` gives the whole body's length."""
        entry_id = uuid.uuid4().hex
        entry = {
            "id": entry_id,
            "provider": provider,
            "reason": reason,
            "contentType": content_type,
            "receivedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "size": len(body) if size is None else size,
            "truncated": (len(body) if size is None else size) > MAX_BODY_BYTES,
            "body": base64.b64encode(body[:MAX_BODY_BYTES]).decode(),
        }
        pipe = self.redis.pipeline()
        pipe.lpush(KEY, json.dumps(entry))
        pipe.ltrim(KEY, 0, KEEP - 1)
        pipe.expire(KEY, TTL_SECONDS)
        pipe.execute()
        return entry_id

    def entries(self, limit: int = KEEP) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(KEY, 0, limit - 1)]
