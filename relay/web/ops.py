"""Liveness and readiness for orchestrators."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from relay.metrics import exposition
from relay.queue import QUEUE_KEY
from relay.web import services

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process answers; no dependency is consulted."""
    return jsonify({"status": "ok"}), 200


@ops.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready only when Redis answers (without it nothing can be accepted) and, when
    RELAY_REQUIRE_DURABLE_REDIS is on, persists its data."""
    check = services().persistence
    try:
        services().redis.ping()
        report = check.report()
    except redis.RedisError:
        return jsonify({"status": "unavailable", "redis": "unreachable"}), 503
    if not check.acceptable(report):
        return jsonify({"status": "unavailable", "redis": "not durable", "persistence": report.public()}), 503
    return jsonify({"status": "ok", "redis": "ok", "persistence": report.public()}), 200


@ops.get("/metrics")
def metrics() -> Response:
    """Prometheus: every gunicorn process's counters, and the queue and backlog gauges from Redis."""
    return Response(exposition(services().redis, QUEUE_KEY), mimetype=CONTENT_TYPE_LATEST)
