"""Partner API under /v1 (SPEC §4.2): directory, messages, deliveries. Bearer token required."""

from __future__ import annotations

import hmac
from dataclasses import replace
from email.utils import format_datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate

from relay.deliveries import STATUSES
from relay.errors import InvalidRequest, NotFound, Unauthorized, UpstreamUnavailable
from relay.intake import accept_email, replay_dead, replay_delivery, resolve_delivery
from relay.knock.client import KnockRejected, KnockTransientError
from relay.message import Metadata, build_email, normalise_message_id
from relay.routing import MESSAGE_TYPES
from relay.sender_auth import vouched_by
from relay.web import services
from relay.web.openapi import OPENAPI

api = Blueprint("api", __name__, url_prefix="/v1")

_non_empty = validate.Length(min=1)


class ProspectSchema(Schema):
    emails = fields.List(fields.Email(), required=True, validate=_non_empty)
    agentUsername = fields.String(load_default=None, allow_none=True, validate=_non_empty)


class AgentSchema(Schema):
    emails = fields.List(fields.Email(), required=True, validate=_non_empty)


class MessageSchema(Schema):
    from_ = fields.Email(required=True, data_key="from")
    to = fields.List(fields.Email(), required=True, validate=_non_empty)
    cc = fields.List(fields.Email(), load_default=list)
    subject = fields.String(required=True)
    html = fields.String(load_default=None, allow_none=True)
    text = fields.String(load_default=None, allow_none=True)
    sentTime = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)
    messageId = fields.String(load_default=None, allow_none=True, validate=_non_empty)
    type = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(MESSAGE_TYPES))
    prospectId = fields.String(load_default=None, allow_none=True, validate=_non_empty)
    agentUsername = fields.String(load_default=None, allow_none=True, validate=_non_empty)


class ResolveSchema(Schema):
    prospectId = fields.String(required=True, validate=_non_empty)
    agentUsername = fields.String(load_default=None, allow_none=True, validate=_non_empty)


class BulkReplaySchema(Schema):
    status = fields.String(required=True, validate=validate.Equal("dead"))


class DeliveryQuerySchema(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf(STATUSES))
    messageId = fields.String(load_default=None)
    prospectId = fields.String(load_default=None)
    cursor = fields.String(load_default=None, validate=validate.Regexp(r"^\d+_[0-9a-f]+$"))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


def load_body(schema: Schema) -> dict[str, Any]:
    """The JSON body validated by `schema`; 400 with field-level messages otherwise."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    try:
        return schema.load(body)  # type: ignore[no-any-return]
    except ValidationError as err:
        raise InvalidRequest("invalid body", details=err.normalized_messages()) from err


def load_query(schema: Schema) -> dict[str, Any]:
    try:
        return schema.load(request.args.to_dict())  # type: ignore[no-any-return]
    except ValidationError as err:
        raise InvalidRequest("invalid query", details=err.normalized_messages()) from err


@api.before_request
def require_token() -> None:
    token = services().settings.api_token
    if not token:
        raise NotFound()  # the API does not exist until a token is configured
    if request.endpoint == "api.openapi":
        return
    header = request.headers.get("Authorization", "")
    presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise Unauthorized("missing or wrong bearer token")


# Prospects -------------------------------------------------------------------


@api.put("/prospects/<prospect_id>")
def put_prospect(prospect_id: str) -> Response:
    body = load_body(ProspectSchema())
    return jsonify(services().directory.put_prospect(prospect_id, body["emails"], body["agentUsername"]))


@api.get("/prospects/<prospect_id>")
def get_prospect(prospect_id: str) -> Response:
    record = services().directory.get_prospect(prospect_id)
    if record is None:
        raise NotFound(f"no prospect {prospect_id!r} in the directory")
    return jsonify(record)


@api.delete("/prospects/<prospect_id>")
def delete_prospect(prospect_id: str) -> tuple[str, int]:
    if not services().directory.delete_prospect(prospect_id):
        raise NotFound(f"no prospect {prospect_id!r} in the directory")
    return "", 204


@api.get("/prospects")
def find_prospects() -> Response:
    address = request.args.get("email", "").strip()
    if not address:
        raise InvalidRequest("invalid query", details={"email": ["Missing data for required field."]})
    return jsonify({"prospects": services().directory.prospects_for_email(address)})


@api.post("/prospects")
def create_prospect() -> tuple[Response, int]:
    """Create the prospect in Knock and keep the id Knock returns with the prospect's email."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    profile = body.get("profile")
    address = profile.get("email") if isinstance(profile, dict) else None
    try:
        fields.Email().deserialize(address)
    except ValidationError as err:
        raise InvalidRequest("invalid body", details={"profile": {"email": err.messages}}) from err
    relay = services()
    try:
        prospect_id = relay.knock.create_prospect(body)
    except KnockTransientError as exc:
        raise UpstreamUnavailable(f"Knock unavailable: {exc.message}") from exc
    except KnockRejected as exc:
        raise InvalidRequest("Knock rejected the prospect", details={"knock": [exc.message]}) from exc
    agent = body.get("agentUsername") if isinstance(body.get("agentUsername"), str) else None
    relay.directory.put_prospect(prospect_id, [str(address)], agent)
    return jsonify({"prospectId": prospect_id}), 201


# Agents ----------------------------------------------------------------------


@api.put("/agents/<username>")
def put_agent(username: str) -> Response:
    body = load_body(AgentSchema())
    return jsonify(services().directory.put_agent(username, body["emails"]))


@api.get("/agents/<username>")
def get_agent(username: str) -> Response:
    record = services().directory.get_agent(username)
    if record is None:
        raise NotFound(f"no agent {username!r} in the directory")
    return jsonify(record)


@api.delete("/agents/<username>")
def delete_agent(username: str) -> tuple[str, int]:
    if not services().directory.delete_agent(username):
        raise NotFound(f"no agent {username!r} in the directory")
    return "", 204


# Messages --------------------------------------------------------------------


@api.post("/messages")
def log_message() -> tuple[Response, int]:
    """An email the partner sent or received by other means, through the same pipeline."""
    body = load_body(MessageSchema())
    headers = [
        ("From", body["from_"]),
        ("To", ", ".join(body["to"])),
        ("Subject", body["subject"]),
    ]
    if body["cc"]:
        headers.append(("Cc", ", ".join(body["cc"])))
    if body["sentTime"] is not None:
        headers.append(("Date", format_datetime(body["sentTime"])))
    email = build_email(
        limits=services().settings.parse_limits,
        headers=headers,
        text=body["text"],
        html=body["html"],
        message_id=body["messageId"],
        metadata=Metadata(body["prospectId"], body["agentUsername"], body["type"]),
    )
    email = replace(email, sender_auth=vouched_by("partner API"))
    return jsonify(accept_email(services(), email, "api").body()), 202


# Deliveries ------------------------------------------------------------------


@api.get("/deliveries/<delivery_id>")
def get_delivery(delivery_id: str) -> Response:
    delivery = services().store.get(delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    return jsonify(delivery.public())


@api.get("/deliveries")
def list_deliveries() -> Response:
    query = load_query(DeliveryQuerySchema())
    page, next_cursor = services().store.list(
        status=query["status"],
        message_id=normalise_message_id(query["messageId"]),
        prospect_id=query["prospectId"],
        cursor=query["cursor"],
        limit=query["limit"],
    )
    return jsonify({"deliveries": [d.public() for d in page], "nextCursor": next_cursor})


@api.post("/deliveries/<delivery_id>/replay")
def replay_one(delivery_id: str) -> tuple[Response, int]:
    return jsonify(replay_delivery(services(), delivery_id).public()), 202


@api.post("/deliveries/replay")
def replay_all() -> tuple[Response, int]:
    load_body(BulkReplaySchema())
    replayed = replay_dead(services())
    return jsonify({"replayed": len(replayed), "ids": replayed}), 202


@api.post("/deliveries/<delivery_id>/resolve")
def resolve(delivery_id: str) -> tuple[Response, int]:
    body = load_body(ResolveSchema())
    delivery = resolve_delivery(services(), delivery_id, body["prospectId"], body["agentUsername"])
    return jsonify(delivery.public()), 202


@api.get("/openapi.json")
def openapi() -> Response:
    return jsonify(OPENAPI)
