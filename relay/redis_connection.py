"""Clients for the relay's Redis: a fixed address (REDIS_URL), or the primary of a Sentinel set
(REDIS_SENTINELS + REDIS_SENTINEL_MASTER), and a description of where the data lives now.

With Sentinel, each new connection asks the sentinels for the current primary; a connection to a
primary that died fails (the caller answers 503 or waits, as for any Redis fault), one to a
primary that came back demoted is refused by it (READONLY) and dropped. The next connection goes
to the promoted replica: every process follows a failover without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel

from relay.config import Settings


def connect(settings: Settings, **options: Any) -> redis.Redis:
    """A client for the primary, with redis-py connection `options` (timeouts, decoding…)."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, **options)
    return sentinel_for(settings).master_for(
        settings.redis_sentinel_master or "", redis_class=redis.Redis, **_data_node_options(settings, options)
    )


def sentinel_for(settings: Settings) -> Sentinel:
    """The sentinels, with their own password and, with REDIS_SENTINEL_TLS, TLS (REDIS_URL's options)."""
    # Sentinels answer at once or not at all: one short try each, then the next sentinel is asked
    # (a hung sentinel costs each new connection, and each readiness probe, one second).
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": 1,
        "socket_timeout": 1,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_sentinel_password:
        sentinel_options["password"] = settings.redis_sentinel_password
    if settings.redis_sentinel_tls:
        sentinel_options["ssl"] = True
        sentinel_options.update(_tls_options(settings))
    return Sentinel(list(settings.redis_sentinels), sentinel_kwargs=sentinel_options)


def _data_node_options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """What REDIS_URL says besides the address (database, credentials, TLS and its query options)."""
    from_url = parse_url(settings.redis_url)
    for address_part in ("host", "port", "path"):
        from_url.pop(address_part, None)
    if from_url.pop("connection_class", None) is SSLConnection:
        from_url["ssl"] = True  # the sentinel pool picks its TLS connection class from this flag
    return {**from_url, **options}


def _tls_options(settings: Settings) -> dict[str, Any]:
    """The TLS options (`ssl_ca_certs`…) REDIS_URL's query carries, for the sentinels too."""
    if not settings.redis_url.startswith("rediss:"):
        return {}
    return {name: value for name, value in parse_url(settings.redis_url).items() if name.startswith("ssl_")}


@dataclass(frozen=True)
class Topology:
    """Where the relay's data is now: the primary it writes to and the replicas that copy it."""

    mode: str  # "sentinel" or "direct"
    primary: str
    replicas: tuple[dict[str, Any], ...]

    def public(self) -> dict[str, Any]:
        return {"mode": self.mode, "primary": self.primary, "replicas": list(self.replicas)}

    def line(self) -> str:
        """`primary host:port (mode), N replica(s) online (host:port online, lag 0 s; …)`."""
        online = sum(r.get("state") == "online" for r in self.replicas)
        each = "; ".join(f"{r['address']} {r['state']}, lag {r['lagSeconds']} s" for r in self.replicas)
        return f"primary {self.primary} ({self.mode}), {online} replica(s) online" + (f" ({each})" if each else "")


def read_topology(client: redis.Redis) -> Topology:
    """The primary this client reaches and its replicas, from the primary's own INFO replication.
    Raises redis.RedisError when Redis (or, with Sentinel, every sentinel) is away."""
    pool = client.connection_pool
    info = client.info("replication")
    if hasattr(pool, "get_master_address"):
        host, port = pool.get_master_address()
        mode = "sentinel"
    else:
        kwargs = pool.connection_kwargs
        host, port, mode = kwargs.get("host") or kwargs.get("path", "?"), kwargs.get("port", ""), "direct"
    replicas = []
    for name, value in sorted(info.items()):
        if name.startswith("slave") and name[5:].isdigit() and isinstance(value, dict):
            replicas.append(
                {
                    "address": f"{value.get('ip')}:{value.get('port')}",
                    "state": str(value.get("state", "")),
                    "lagSeconds": value.get("lag"),
                }
            )
    primary = f"{host}:{port}" if port else str(host)
    return Topology(mode=mode, primary=primary, replicas=tuple(replicas))
