"""Who did what: every operator action from the console, kept in Redis and logged."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from relay.store import PREFIX

log = logging.getLogger(__name__)

KEY = f"{PREFIX}audit"
KEPT = 5000


def record_action(client: redis.Redis, operator: str, action: str, target: str, detail: str = "") -> None:
    entry = {"at": int(time.time() * 1000), "operator": operator, "action": action, "target": target, "detail": detail}
    pipe = client.pipeline()
    pipe.lpush(KEY, json.dumps(entry))
    pipe.ltrim(KEY, 0, KEPT - 1)
    pipe.execute()
    log.info("operator action", extra={"operator": operator, "action": action, "target": target})


def recent_actions(client: redis.Redis, count: int = 20) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(KEY, 0, count - 1)]
