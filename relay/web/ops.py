"""Liveness, readiness and metrics for orchestrators and Prometheus."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from relay.metrics import exposition
from relay.queue import QUEUE_KEY
from relay.redis_connection import read_topology
from relay.web import services
from relay.web.contract import Answer, operation
from relay.web.schemas import Health, Readiness

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
@operation("Liveness: the process answers", answers={200: Answer("Alive", Health)}, uses_redis=False)
def healthz() -> dict[str, Any]:
    """No dependency is consulted."""
    return {"status": "ok"}


@ops.get("/readyz")
@operation(
    "Readiness: Redis answers, has the replicas RELAY_REDIS_MIN_REPLICAS asks and, when "
    "RELAY_REQUIRE_DURABLE_REDIS is on, keeps its data; names the Redis primary and its replicas",
    answers={200: Answer("Ready", Readiness), 503: Answer("Not ready: Redis unreachable or not durable", Readiness)},
    uses_redis=False,
)
def readyz() -> tuple[dict[str, Any], int]:
    """Without Redis nothing can be accepted."""
    check = services().persistence
    try:
        services().redis.ping()
        report = check.report()
        topology = read_topology(services().redis).public()
    except redis.RedisError:
        return {"status": "unavailable", "redis": "unreachable"}, 503
    if not check.acceptable(report):
        answer = {"status": "unavailable", "redis": "not durable", "persistence": report.public()}
        return {**answer, "topology": topology}, 503
    wanted = services().settings.redis_min_replicas
    if sum(replica["state"] == "online" for replica in topology["replicas"]) < wanted:
        # Every webhook would answer 503 (RELAY_REDIS_MIN_REPLICAS): not ready, so that it shows.
        answer = {
            "status": "unavailable",
            "redis": f"fewer than {wanted} replicas online",
            "persistence": report.public(),
        }
        return {**answer, "topology": topology}, 503
    return {"status": "ok", "redis": "ok", "persistence": report.public(), "topology": topology}, 200


@ops.get("/metrics")
@operation(
    "Prometheus metrics of every web process, with queue and backlog gauges read from Redis",
    answers={200: Answer("Prometheus text exposition format", media_type="text/plain")},
)
def metrics() -> Response:
    return Response(exposition(services().redis, QUEUE_KEY), mimetype=CONTENT_TYPE_LATEST)
