"""A local stand-in for Knock's syndication API (SPEC §8), for local runs and tests.

State lives in memory. Besides Knock's endpoints it has a control surface
under /_sandbox: seed prospects, inject faults, read the request log, reset.
"""

from __future__ import annotations

import random
import re
import string
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, jsonify, request

MESSAGE_TYPES = (
    "EMAIL_MESSAGE_TO_PROSPECT_SENT",
    "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED",
    "EMAIL_AUTOMATED_MESSAGE_SENT",
)
OUTBOUND_TYPES = {"EMAIL_MESSAGE_TO_PROSPECT_SENT", "EMAIL_AUTOMATED_MESSAGE_SENT"}
SENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
DEFAULT_API_KEY = "sandbox-key"
DEFAULT_AGENT = "sandbox.agent"


def _random_id(length: int = 8) -> str:
    return "".join(random.choices(string.ascii_uppercase + string.digits, k=length))


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Fault:
    """Answer the next `count` matching requests with `status` after `delay` seconds (status 0: answer normally)."""

    status: int = 503
    count: int = 1
    delay: float = 0.0
    rate: float = 1.0  # the share of matching requests that get the fault, until `count` have
    retry_after: str | None = None
    error_message: str = "sandbox fault"
    path: str = "email"  # "email", "prospect" or "any"


@dataclass
class Prospect:
    id: str
    agent_username: str
    status: str = "new"
    profile: dict[str, Any] = field(default_factory=dict)
    first_contact_at: str | None = None
    first_response_at: str | None = None
    last_inbound_at: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "agent": {"username": self.agent_username},
            "profile": self.profile,
            "firstContactAt": self.first_contact_at,
            "firstResponseAt": self.first_response_at,
        }


class SandboxState:
    def __init__(self, api_key: str = DEFAULT_API_KEY, id_field: str = "id") -> None:
        self.api_key = api_key
        self.id_field = id_field
        self.lock = threading.Lock()
        self.prospects: dict[str, Prospect] = {}
        self.faults: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []

    def take_fault(self, kind: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.path in (kind, "any"):
                    if fault.rate < 1 and random.random() >= fault.rate:
                        return None
                    fault.count -= 1
                    if fault.count <= 0:
                        self.faults.remove(fault)
                    return fault
        return None


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"errorMessage": message}), status


def validate_email_body(body: Any) -> str | None:
    """Knock's rules for a logged email, strictly: the first problem found, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    required = ("type", "sentTime", "agent", "subject", "body")
    for name in required:
        if name not in body:
            return f"{name} is required"
    unknown = set(body) - set(required)
    if unknown:
        return f"unknown fields: {', '.join(sorted(unknown))}"
    if body["type"] not in MESSAGE_TYPES:
        return f"type must be one of {', '.join(MESSAGE_TYPES)}"
    if not isinstance(body["sentTime"], str) or not SENT_TIME.match(body["sentTime"]):
        return "sentTime must be an ISO-8601 UTC timestamp with milliseconds"
    try:
        datetime.strptime(body["sentTime"], "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return "sentTime is not a valid date"
    agent = body["agent"]
    if not isinstance(agent, dict) or not isinstance(agent.get("username"), str) or not agent["username"].strip():
        return "agent.username is required"
    if set(agent) - {"username"}:
        return "agent may only carry username"
    for name in ("subject", "body"):
        if not isinstance(body[name], str) or not body[name].strip():
            return f"{name} must be a non-empty string"
    return None


def create_sandbox(api_key: str = DEFAULT_API_KEY, id_field: str = "id") -> Flask:
    app = Flask("knock-sandbox")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = SandboxState(api_key, id_field)
    app.extensions["sandbox"] = state

    def record_request(kind: str, prospect_id: str | None, body: Any, status: int) -> None:
        with state.lock:
            state.requests.append(
                {
                    "kind": kind,
                    "prospectId": prospect_id,
                    "body": body,
                    "status": status,
                    "at": _now_iso(),
                }
            )

    def apply_fault(kind: str, prospect_id: str | None, body: Any) -> tuple[Response, int] | None:
        fault = state.take_fault(kind)
        if fault is None:
            return None
        with state.lock:
            state.requests.append(
                {
                    "kind": kind,
                    "prospectId": prospect_id,
                    "body": body,
                    "status": "started",
                    "at": _now_iso(),
                }
            )
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status == 0:
            return None  # a slow but otherwise normal answer
        record_request(kind, prospect_id, body, fault.status)
        response, status = _error(fault.status, fault.error_message)
        if fault.retry_after is not None:
            response.headers["Retry-After"] = fault.retry_after
        return response, status

    def authorised() -> bool:
        return request.headers.get("x-api-key") == state.api_key

    # Knock's endpoints --------------------------------------------------------

    @app.post("/prospect")
    def create_prospect() -> tuple[Response, int]:
        if not authorised():
            return _error(401, "invalid api key")
        body = request.get_json(silent=True)
        faulted = apply_fault("prospect", None, body)
        if faulted:
            return faulted
        if not isinstance(body, dict) or not isinstance(body.get("profile"), dict):
            return _error(400, "profile is required")
        prospect = Prospect(
            id=_random_id(),
            agent_username=str(body.get("agentUsername") or DEFAULT_AGENT),
            profile=body["profile"],
        )
        with state.lock:
            state.prospects[prospect.id] = prospect
        record_request("prospect", prospect.id, body, 200)
        return jsonify({state.id_field: prospect.id}), 200

    @app.get("/prospect/<prospect_id>")
    def get_prospect(prospect_id: str) -> tuple[Response, int]:
        if not authorised():
            return _error(401, "invalid api key")
        faulted = apply_fault("prospect", prospect_id, None)
        if faulted:
            return faulted
        prospect = state.prospects.get(prospect_id)
        if prospect is None:
            return _error(404, "prospect not found")
        return jsonify({"prospect": prospect.as_json()}), 200

    @app.post("/prospect/<prospect_id>/email")
    def log_email(prospect_id: str) -> tuple[Response, int]:
        if not authorised():
            return _error(401, "invalid api key")
        body: Any = request.get_json(silent=True)
        faulted = apply_fault("email", prospect_id, body)
        if faulted:
            return faulted
        prospect = state.prospects.get(prospect_id)
        if prospect is None:
            record_request("email", prospect_id, body, 404)
            return _error(404, "prospect not found")
        problem = validate_email_body(body)
        if problem:
            record_request("email", prospect_id, body, 400)
            return _error(400, problem)
        communication_id = f"{_random_id()}-{random.randint(10000000, 99999999)}"
        with state.lock:
            event = {
                "communicationId": communication_id,
                "loggedAt": _now_iso(),
                **body,
            }
            prospect.events.append(event)
            if body["type"] in OUTBOUND_TYPES:
                # Logging has the effects of a real email: first contact opens the prospect.
                if prospect.status == "new":
                    prospect.status = "open"
                if prospect.first_contact_at is None:
                    prospect.first_contact_at = body["sentTime"]
                if prospect.first_response_at is None and prospect.last_inbound_at is not None:
                    prospect.first_response_at = body["sentTime"]
            else:
                prospect.last_inbound_at = prospect.last_inbound_at or body["sentTime"]
        record_request("email", prospect_id, body, 200)
        return jsonify({"communicationId": communication_id}), 200

    @app.get("/prospect/<prospect_id>/events")
    def list_events(prospect_id: str) -> tuple[Response, int]:
        if not authorised():
            return _error(401, "invalid api key")
        faulted = apply_fault("events", prospect_id, None)
        if faulted:
            return faulted
        prospect = state.prospects.get(prospect_id)
        if prospect is None:
            return _error(404, "prospect not found")
        try:
            start = int(request.args.get("cursor") or 0)
            limit = min(max(int(request.args.get("limit") or 50), 1), 200)
        except ValueError:
            return _error(400, "cursor and limit must be whole numbers")
        events = prospect.events[start : start + limit]
        next_cursor = str(start + limit) if start + limit < len(prospect.events) else None
        return jsonify({"events": events, "nextCursor": next_cursor}), 200

    # Control surface ------------------------------------------------------------

    @app.put("/_sandbox/prospects/<prospect_id>")
    def seed_prospect(prospect_id: str) -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        prospect = Prospect(
            id=prospect_id,
            agent_username=str(body.get("agentUsername") or DEFAULT_AGENT),
            profile=body.get("profile") or {},
        )
        with state.lock:
            state.prospects[prospect_id] = prospect
        return jsonify(prospect.as_json()), 200

    @app.post("/_sandbox/faults")
    def add_fault() -> tuple[Response, int]:
        body = request.get_json(silent=True) or {}
        fault = Fault(
            status=int(body.get("status", 503)),
            count=int(body.get("count", 1)),
            delay=float(body.get("delay", 0)),
            rate=float(body.get("rate", 1.0)),
            retry_after=None if body.get("retryAfter") is None else str(body["retryAfter"]),
            error_message=str(body.get("errorMessage", "sandbox fault")),
            path=str(body.get("path", "email")),
        )
        with state.lock:
            state.faults.append(fault)
        return jsonify({"queued": len(state.faults)}), 200

    @app.get("/_sandbox/requests")
    def list_requests() -> tuple[Response, int]:
        with state.lock:
            return jsonify({"requests": list(state.requests)}), 200

    @app.post("/_sandbox/reset")
    def reset() -> tuple[Response, int]:
        with state.lock:
            state.prospects.clear()
            state.faults.clear()
            state.requests.clear()
        return jsonify({"status": "reset"}), 200

    @app.get("/_sandbox/health")
    @app.get("/healthz")
    def health() -> tuple[Response, int]:
        return jsonify({"status": "ok"}), 200

    return app
