"""Does the Redis the relay depends on keep its data across a restart?

Queued deliveries, de-duplication keys and the directory all live in Redis. A
Redis without an append-only file loses them on restart (queued emails are never
logged, and the providers' retries are then logged twice), and one that evicts
keys under memory pressure drops them silently. The relay reads the server's
own view (`INFO`, and `CONFIG GET` where the server allows it) at start and on
`/readyz`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis

log = logging.getLogger(__name__)

SAFE_EVICTION_POLICY = "noeviction"
# fsync policies with which a crash loses at most about a second of writes.
SAFE_FSYNC = ("everysec", "always")


@dataclass(frozen=True)
class PersistenceReport:
    """What the server said about its persistence; `durable` is None when it would not say."""

    durable: bool | None
    aof: bool | None = None
    appendfsync: str | None = None
    rdb_save: str | None = None
    maxmemory_policy: str | None = None
    problems: tuple[str, ...] = field(default_factory=tuple)

    def public(self) -> dict[str, Any]:
        return {
            "durable": self.durable,
            "appendonly": self.aof,
            "appendfsync": self.appendfsync,
            "save": self.rdb_save,
            "maxmemoryPolicy": self.maxmemory_policy,
            "problems": list(self.problems),
        }


def _config_value(client: redis.Redis, name: str) -> str | None:
    """CONFIG GET, which managed services (ElastiCache, Memorystore…) often refuse."""
    try:
        reply = client.config_get(name)
    except redis.ResponseError:
        return None
    value = reply.get(name)
    return value.decode() if isinstance(value, bytes) else value


def inspect_persistence(client: redis.Redis) -> PersistenceReport:
    """Read the server's persistence settings. Raises redis.ConnectionError/TimeoutError when it is away."""
    try:
        persistence = client.info("persistence")
        memory = client.info("memory")
    except redis.ResponseError as error:  # INFO denied by an ACL
        return PersistenceReport(durable=None, problems=(f"cannot read INFO ({error}); persistence unknown",))
    aof = bool(int(persistence.get("aof_enabled", 0)))
    policy = str(memory.get("maxmemory_policy", "")) or _config_value(client, "maxmemory-policy")
    fsync = _config_value(client, "appendfsync")
    save = _config_value(client, "save")
    problems = []
    if not aof:
        problems.append("appendonly is off: a restart loses queued deliveries, de-duplication keys and the directory")
    elif fsync is not None and fsync not in SAFE_FSYNC:
        problems.append(f"appendfsync is {fsync!r}: a crash may lose more than a second of writes (use everysec)")
    if policy and policy != SAFE_EVICTION_POLICY:
        problems.append(f"maxmemory-policy is {policy!r}: Redis may evict queued deliveries (use noeviction)")
    durable: bool | None = not problems
    if not policy:
        problems.append("maxmemory-policy unknown")
        durable = False if len(problems) > 1 else None
    return PersistenceReport(
        durable=durable,
        aof=aof,
        appendfsync=fsync,
        rdb_save=save,
        maxmemory_policy=policy or None,
        problems=tuple(problems),
    )


class PersistenceCheck:
    """The report, re-read at most every `max_age` seconds so that readiness probes stay cheap."""

    def __init__(self, client: redis.Redis, *, required: bool, max_age: float = 30.0) -> None:
        self.client = client
        self.required = required
        self.max_age = max_age
        self._report: PersistenceReport | None = None
        self._read_at = 0.0

    def report(self) -> PersistenceReport:
        now = time.monotonic()
        if self._report is None or now - self._read_at > self.max_age:
            self._report = inspect_persistence(self.client)
            self._read_at = now
        return self._report

    def acceptable(self, report: PersistenceReport) -> bool:
        """Whether the relay may take work on this Redis: always, unless durability is required."""
        return not self.required or report.durable is True

    def check_at_start(self) -> list[str]:
        """Log what start-up found; the problems that forbid starting (only when durability is required)."""
        try:
            report = self.report()
        except redis.RedisError as error:
            log.warning("redis persistence not checked: redis unreachable", extra={"error": type(error).__name__})
            return []
        if report.durable:
            log.info("redis persists its data", extra={"redis": report.public()})
            return []
        for problem in report.problems:
            log.warning("redis persistence: %s", problem)
        if self.acceptable(report):
            return []
        return [f"REDIS_URL: {problem} (RELAY_REQUIRE_DURABLE_REDIS is on)" for problem in report.problems]
