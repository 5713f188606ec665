"""Liveness and readiness for orchestrators."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from relay.web import services

ops = Blueprint("ops", __name__)


@ops.get("/healthz")
def healthz() -> tuple[Response, int]:
    """The process answers; no dependency is consulted."""
    return jsonify({"status": "ok"}), 200


@ops.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready only when Redis answers: without it nothing can be accepted."""
    try:
        services().redis.ping()
    except redis.RedisError:
        return jsonify({"status": "unavailable", "redis": "unreachable"}), 503
    return jsonify({"status": "ok", "redis": "ok"}), 200
