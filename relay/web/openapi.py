"""The OpenAPI document served at /v1/openapi.json."""

from __future__ import annotations

from typing import Any

from relay.deliveries import STATUSES
from relay.routing import MESSAGE_TYPES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema:
        answer.update(_json(schema))
    return answer


_ERRORS = {
    "400": _ok("Invalid body or query; details holds field-level messages", _ref("Error")),
    "401": _ok("Missing or wrong bearer token", _ref("Error")),
    "404": _ok("Unknown id", _ref("Error")),
}
_STR = {"type": "string"}
_STR_LIST = {"type": "array", "items": {"type": "string", "format": "email"}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _STR}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "Knock Email Relay partner API", "version": "1"},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": _STR, "details": {"type": "object"}},
            },
            "Prospect": {
                "type": "object",
                "properties": {
                    "prospectId": _STR,
                    "emails": _STR_LIST,
                    "agentUsername": {**_STR, "nullable": True},
                },
            },
            "ProspectInput": {
                "type": "object",
                "required": ["emails"],
                "properties": {
                    "emails": {**_STR_LIST, "minItems": 1},
                    "agentUsername": {**_STR, "nullable": True},
                },
            },
            "Agent": {
                "type": "object",
                "properties": {"username": _STR, "emails": _STR_LIST},
            },
            "AgentInput": {
                "type": "object",
                "required": ["emails"],
                "properties": {"emails": {**_STR_LIST, "minItems": 1}},
            },
            "Message": {
                "type": "object",
                "required": ["from", "to", "subject"],
                "properties": {
                    "from": {"type": "string", "format": "email"},
                    "to": {**_STR_LIST, "minItems": 1},
                    "cc": _STR_LIST,
                    "subject": _STR,
                    "html": _STR,
                    "text": _STR,
                    "sentTime": {"type": "string", "format": "date-time"},
                    "messageId": _STR,
                    "type": {"type": "string", "enum": list(MESSAGE_TYPES)},
                    "prospectId": _STR,
                    "agentUsername": _STR,
                },
            },
            "DeliverySummary": {
                "type": "object",
                "properties": {
                    "id": _STR,
                    "status": _STR,
                    "prospectId": {**_STR, "nullable": True},
                    "type": _STR,
                },
            },
            "Accepted": {
                "type": "object",
                "properties": {
                    "status": _STR,
                    "deliveries": {"type": "array", "items": _ref("DeliverySummary")},
                },
            },
            "Delivery": {
                "type": "object",
                "properties": {
                    "id": _STR,
                    "status": {"type": "string", "enum": list(STATUSES)},
                    **{
                        name: {**_STR, "nullable": True}
                        for name in (
                            "type",
                            "direction",
                            "prospectId",
                            "agentUsername",
                            "messageId",
                            "provider",
                            "subject",
                            "sentTime",
                            "receivedAt",
                            "lastError",
                            "communicationId",
                            "deliveredAt",
                            "reason",
                        )
                    },  # fmt: skip
                    "attempts": {"type": "integer"},
                },
            },
        },
    },
    "paths": {
        "/v1/prospects": {
            "get": {
                "summary": "Look prospects up by email (case-insensitive)",
                "parameters": [{"name": "email", "in": "query", "required": True, "schema": _STR}],
                "responses": {
                    "200": _ok(
                        "Matches",
                        {
                            "type": "object",
                            "properties": {
                                "prospects": {
                                    "type": "array",
                                    "items": _ref("Prospect"),
                                }
                            },
                        },
                    ),
                    **_ERRORS,
                },
            },
            "post": {
                "summary": "Create the prospect in Knock and keep its id with its email",
                "requestBody": _json(
                    {
                        "type": "object",
                        "description": "Knock's prospect-creation body; profile.email is required",
                    }
                ),
                "responses": {
                    "201": _ok(
                        "Created",
                        {"type": "object", "properties": {"prospectId": _STR}},
                    ),
                    **_ERRORS,
                },
            },
        },
        "/v1/prospects/{prospectId}": {
            "parameters": [_path_param("prospectId")],
            "put": {
                "summary": "Register a prospect",
                "requestBody": _json(_ref("ProspectInput")),
                "responses": {"200": _ok("Stored", _ref("Prospect")), **_ERRORS},
            },
            "get": {
                "summary": "Read a prospect",
                "responses": {"200": _ok("Found", _ref("Prospect")), **_ERRORS},
            },
            "delete": {
                "summary": "Remove a prospect",
                "responses": {"204": _ok("Removed"), **_ERRORS},
            },
        },
        "/v1/agents/{username}": {
            "parameters": [_path_param("username")],
            "put": {
                "summary": "Register an agent's addresses",
                "requestBody": _json(_ref("AgentInput")),
                "responses": {"200": _ok("Stored", _ref("Agent")), **_ERRORS},
            },
            "get": {
                "summary": "Read an agent",
                "responses": {"200": _ok("Found", _ref("Agent")), **_ERRORS},
            },
            "delete": {
                "summary": "Remove an agent",
                "responses": {"204": _ok("Removed"), **_ERRORS},
            },
        },
        "/v1/messages": {
            "post": {
                "summary": "Log an email sent or received by other means",
                "requestBody": _json(_ref("Message")),
                "responses": {"202": _ok("Accepted", _ref("Accepted")), **_ERRORS},
            },
        },
        "/v1/deliveries": {
            "get": {
                "summary": "List deliveries, newest first",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": list(STATUSES)},
                    },
                    {"name": "messageId", "in": "query", "schema": _STR},
                    {"name": "prospectId", "in": "query", "schema": _STR},
                    {"name": "cursor", "in": "query", "schema": _STR},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                    },
                ],
                "responses": {
                    "200": _ok(
                        "A page",
                        {
                            "type": "object",
                            "properties": {
                                "deliveries": {
                                    "type": "array",
                                    "items": _ref("Delivery"),
                                },
                                "nextCursor": {**_STR, "nullable": True},
                            },
                        },
                    ),
                    **_ERRORS,
                },
            },
        },
        "/v1/deliveries/{id}": {
            "parameters": [_path_param("id")],
            "get": {
                "summary": "One delivery",
                "responses": {"200": _ok("Found", _ref("Delivery")), **_ERRORS},
            },
        },
        "/v1/deliveries/{id}/replay": {
            "parameters": [_path_param("id")],
            "post": {
                "summary": "Queue a dead delivery again",
                "responses": {
                    "202": _ok("Queued", _ref("Delivery")),
                    "409": _ok("Not dead", _ref("Error")),
                    **_ERRORS,
                },
            },
        },
        "/v1/deliveries/replay": {
            "post": {
                "summary": "Queue every dead delivery again",
                "requestBody": _json(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": ["dead"]}},
                    }
                ),
                "responses": {
                    "202": _ok(
                        "Queued",
                        {
                            "type": "object",
                            "properties": {
                                "replayed": {"type": "integer"},
                                "ids": {"type": "array", "items": _STR},
                            },
                        },
                    ),
                    **_ERRORS,
                },
            },
        },
        "/v1/deliveries/{id}/resolve": {
            "parameters": [_path_param("id")],
            "post": {
                "summary": "Give an unmatched delivery its prospect and queue it",
                "requestBody": _json(
                    {
                        "type": "object",
                        "required": ["prospectId"],
                        "properties": {"prospectId": _STR, "agentUsername": _STR},
                    }
                ),
                "responses": {
                    "202": _ok("Queued", _ref("Delivery")),
                    "409": _ok(
                        "Not unmatched, or already logged for that prospect",
                        _ref("Error"),
                    ),
                    **_ERRORS,
                },
            },
        },
    },
}
