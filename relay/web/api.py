"""Partner API under /v1: directory, messages, deliveries. Bearer token required."""

from __future__ import annotations

import hmac
from dataclasses import replace
from email.utils import format_datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.routing import BaseConverter

from relay.errors import Conflict, InvalidRequest, NotFound, Unauthorized, UpstreamUnavailable
from relay.ids import PATH_ID_PATTERN, path_id_problem
from relay.intake import accept_email, replay_delivery, resolve_delivery
from relay.knock.client import KnockRejected, KnockTransientError
from relay.message import Metadata, build_email, normalise_message_id
from relay.providers.base import bearer_token
from relay.redrive import Redrive, replay_matching
from relay.reply_tags import reply_address_of
from relay.sender_auth import vouched_by
from relay.store import Search, address_searched, iso_from_ms, ms_from
from relay.web import schemas, services
from relay.web.contract import Answer, operation
from relay.web.openapi import openapi_document

api = Blueprint("api", __name__, url_prefix="/v1")

_REMOVED = {204: Answer("Removed")}


class PathIdConverter(BaseConverter):
    """A prospect id or agent username in this API's paths. The class's pattern, which the OpenAPI
    document shows, is relay.ids' rule; routing itself takes any one segment, so that a view can
    refuse an id that breaks the rule with a 400 saying why (`require_path_id`) rather than a bare
    404, and a read or removal of one answers 404 (no entry can have it)."""

    regex = PATH_ID_PATTERN

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.regex = BaseConverter.regex  # what routing matches: one segment


def require_path_id(value: str, field: str) -> str:
    """`value`, when relay.ids accepts it as an id; else 400 naming `field`."""
    problem = path_id_problem(value)
    if problem:
        raise InvalidRequest("invalid id", details={field: [f"Not a usable id: it {problem}."]})
    return value


@api.record_once
def _register_path_id_converter(state: BlueprintSetupState) -> None:
    """Recorded before any route, so the converter exists when the routes are added."""
    state.app.url_map.converters["path_id"] = PathIdConverter


@api.before_request
def require_token() -> None:
    token = services().settings.api_token
    if not token:
        raise NotFound()  # the API does not exist until a token is configured
    if request.endpoint == "api.openapi":
        return
    presented = bearer_token(request.headers.get("Authorization")) or ""
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise Unauthorized("missing or wrong bearer token")


# Prospects -------------------------------------------------------------------


@api.put("/prospects/<path_id:prospect_id>")
@operation(
    "Register a prospect's addresses (and optionally its agent) in the directory",
    body=schemas.ProspectInput,
    answers={200: Answer("Stored", schemas.Prospect)},
)
def put_prospect(prospect_id: str, body: dict[str, Any]) -> dict[str, Any]:
    require_path_id(prospect_id, "prospectId")
    return services().directory.put_prospect(prospect_id, body["emails"], body["agentUsername"])


@api.get("/prospects/<path_id:prospect_id>")
@operation("Read a prospect", answers={200: Answer("Found", schemas.Prospect)}, errors=(404,))
def get_prospect(prospect_id: str) -> dict[str, Any]:
    record = services().directory.get_prospect(prospect_id)
    if record is None:
        raise NotFound(f"no prospect {prospect_id!r} in the directory")
    return record


@api.delete("/prospects/<path_id:prospect_id>")
@operation("Remove a prospect from the directory", answers=_REMOVED, errors=(404,))
def delete_prospect(prospect_id: str) -> tuple[None, int]:
    if not services().directory.delete_prospect(prospect_id):
        raise NotFound(f"no prospect {prospect_id!r} in the directory")
    return None, 204


@api.get("/prospects")
@operation(
    "Look prospects up by email address (case-insensitive)",
    query=schemas.ProspectQuery,
    answers={200: Answer("The prospects with that address (possibly none)", schemas.ProspectMatches)},
)
def find_prospects(query: dict[str, Any]) -> dict[str, Any]:
    return {"prospects": services().directory.prospects_for_email(query["email"].strip())}


@api.get("/prospects/<path_id:prospect_id>/reply-address")
@operation(
    "A leasing mailbox with the prospect's reply tag (signed with RELAY_REPLY_TAG_SECRET): where replies should go",
    query=schemas.ReplyAddressQuery,
    answers={200: Answer("The reply address", schemas.ReplyAddress)},
    errors=(409,),
)
def get_reply_address(prospect_id: str, query: dict[str, Any]) -> dict[str, Any]:
    require_path_id(prospect_id, "prospectId")
    settings = services().settings
    try:
        return reply_address_of(settings, prospect_id, query.get("mailbox"))
    except ValueError as exc:  # an address the relay's settings give no reply address for
        raise Conflict(f"no reply address: {exc}") from exc


@api.post("/prospects")
@operation(
    "Create the prospect in Knock and keep the id Knock returns with the prospect's address",
    body=schemas.KnockProspectInput,
    answers={201: Answer("Created in Knock and stored in the directory", schemas.CreatedProspect)},
    errors=(502,),
)
def create_prospect(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    relay = services()
    agent = body.pop("agentUsername")  # the relay's own field, not Knock's
    try:
        prospect_id = relay.knock.create_prospect(body)
    except KnockTransientError as exc:
        raise UpstreamUnavailable(f"Knock unavailable: {exc.message}") from exc
    except KnockRejected as exc:
        raise InvalidRequest("Knock rejected the prospect", details={"knock": [exc.message]}) from exc
    relay.directory.put_prospect(prospect_id, [body["profile"]["email"]], agent)
    return {"prospectId": prospect_id}, 201


# Agents ----------------------------------------------------------------------


@api.put("/agents/<path_id:username>")
@operation(
    "Register an agent's addresses (mail from them is leasing-side)",
    body=schemas.AgentInput,
    answers={200: Answer("Stored", schemas.Agent)},
    errors=(409,),
)
def put_agent(username: str, body: dict[str, Any]) -> dict[str, Any]:
    require_path_id(username, "username")
    return services().directory.put_agent(username, body["emails"])


@api.get("/agents/<path_id:username>")
@operation("Read an agent", answers={200: Answer("Found", schemas.Agent)}, errors=(404,))
def get_agent(username: str) -> dict[str, Any]:
    record = services().directory.get_agent(username)
    if record is None:
        raise NotFound(f"no agent {username!r} in the directory")
    return record


@api.delete("/agents/<path_id:username>")
@operation("Remove an agent", answers=_REMOVED, errors=(404,))
def delete_agent(username: str) -> tuple[None, int]:
    if not services().directory.delete_agent(username):
        raise NotFound(f"no agent {username!r} in the directory")
    return None, 204


# Messages --------------------------------------------------------------------


@api.post("/messages")
@operation(
    "Log an email sent or received by other means, through the same pipeline as webhooks",
    body=schemas.MessageInput,
    answers={202: Answer("Accepted: stored and queued, or recorded as unmatched", schemas.Accepted)},
)
def log_message(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
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
    return accept_email(services(), email, "api").body(), 202


# Deliveries ------------------------------------------------------------------


@api.get("/deliveries/<delivery_id:delivery_id>")
@operation(
    "One delivery: its status, decisions and Knock's last answer",
    answers={200: Answer("Found", schemas.Delivery)},
    errors=(404,),
)
def get_delivery(delivery_id: str) -> dict[str, Any]:
    delivery = services().store.get(delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id!r}")
    return delivery.public()


def search_of(filters: dict[str, Any]) -> Search:
    """The search that the delivery list's filters (schemas.DeliveryFilters, loaded) ask for."""
    return Search(
        status=filters.get("status"),
        message_id=normalise_message_id(filters.get("messageId")),
        prospect_id=filters.get("prospectId"),
        provider=(filters.get("provider") or "").lower() or None,
        address=address_searched(filters.get("address")),
        words=filters.get("subject"),
        since_ms=ms_from(filters.get("since")),
        until_ms=ms_from(filters.get("until")),
    )


@api.get("/deliveries")
@operation(
    "Search deliveries, newest first, by status, Message-ID, prospect, provider, address, subject words and time",
    query=schemas.DeliveryQuery,
    answers={200: Answer("A page; pass nextCursor as cursor for the next one", schemas.DeliveryPage)},
)
def list_deliveries(query: dict[str, Any]) -> dict[str, Any]:
    page = services().store.search(search_of(query), cursor=query.get("cursor"), limit=query["limit"])
    return {
        "deliveries": [d.public() for d in page.deliveries],
        "nextCursor": page.next_cursor,
        "stoppedAt": iso_from_ms(page.stopped_at),
    }


@api.post("/deliveries/<delivery_id:delivery_id>/replay")
@operation(
    "Queue a dead delivery again",
    answers={202: Answer("Queued", schemas.Delivery)},
    errors=(404, 409),
)
def replay_one(delivery_id: str) -> tuple[dict[str, Any], int]:
    return replay_delivery(services(), delivery_id).public(), 202


@api.post("/deliveries/replay")
@operation(
    "Queue again every dead delivery the filters of the delivery list (and lastError) find; each is "
    "audited, and replaying twice queues nothing new",
    body=schemas.BulkReplayInput,
    answers={202: Answer("Queued", schemas.Replayed)},
)
def replay_all(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    redrive = Redrive(search_of(body), body.get("lastError"))
    replayed = replay_matching(services(), redrive, "api-token")
    return {"replayed": len(replayed), "ids": replayed}, 202


@api.post("/deliveries/<delivery_id:delivery_id>/resolve")
@operation(
    "Give an unmatched delivery its prospect (and agent) and queue it; a prospect neither the directory "
    "nor Knock knows is refused (409), and 502 when Knock cannot be asked",
    body=schemas.ResolveInput,
    answers={202: Answer("Queued", schemas.Delivery)},
    errors=(404, 409, 502),
)
def resolve(delivery_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    delivery = resolve_delivery(services(), delivery_id, body["prospectId"], body["agentUsername"])
    return delivery.public(), 202


@api.get("/openapi.json")
@operation("This document", answers={200: Answer("OpenAPI 3.0")}, security=(), uses_redis=False)
def openapi() -> Response:
    """This interface described in OpenAPI 3, generated from the schemas the views validate with."""
    return jsonify(openapi_document())
