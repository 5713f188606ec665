"""What each HTTP operation takes and answers, declared once on its view.

`@operation(...)` validates the body and query with the declared schemas before
the view runs and serialises what the view returns with the schema declared for
that status. relay/web/openapi.py reads the same declarations to build the
OpenAPI document, so what is documented is what is enforced.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Response, jsonify, request
from marshmallow import Schema, ValidationError

from relay.errors import InvalidRequest

#: Statuses any operation may answer with, and why.
ERROR_REASONS: dict[int, str] = {
    400: "Invalid body or query; `details` holds field-level messages",
    401: "Missing or wrong credentials",
    404: "No such resource",
    406: "Authenticated but unreadable; the provider stops retrying",
    409: "The resource is not in a state that allows this",
    413: "Request larger than RELAY_MAX_REQUEST_BYTES",
    429: "Redis is unavailable; retry after `Retry-After` seconds (the status this provider retries)",
    502: "Knock could not be reached or failed",
    503: "Redis (or a provider resource) is unavailable; retry after `Retry-After` seconds",
}


@dataclass(frozen=True)
class Answer:
    description: str
    schema: type[Schema] | None = None
    #: Media type of the answer when it is not JSON (e.g. Prometheus text).
    media_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    summary: str
    answers: Mapping[int, Answer]
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    #: Error statuses besides those implied by a body (400, 413) and a token (401); 503 is always possible.
    errors: tuple[int, ...] = ()
    #: Security scheme names (components.securitySchemes); None means the blueprint's default.
    security: tuple[str, ...] | None = None
    description: str | None = None
    #: Bodies the view reads itself (webhooks): media type -> JSON Schema of what is accepted.
    media_types: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    #: Whether the operation needs Redis (and so may answer 503 while it is away).
    uses_redis: bool = True


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


def operation(
    summary: str,
    *,
    answers: Mapping[int, Answer],
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    errors: tuple[int, ...] = (),
    security: tuple[str, ...] | None = None,
    description: str | None = None,
    media_types: Mapping[str, dict[str, Any]] | None = None,
    uses_redis: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Declare a view's contract. The view gets `body=` and/or `query=` already validated and
    returns `data` or `(data, status)`; `data` is serialised with the schema of that status.
    A view that builds its own Response (webhooks, Prometheus text) returns it as is."""
    spec = Operation(summary, answers, body, query, errors, security, description, dict(media_types or {}), uses_redis)
    # Schema instances built once here: building them per request costs CPU.
    body_schema, query_schema = body() if body else None, query() if query else None
    answer_schemas = {status: a.schema() if a.schema else None for status, a in answers.items()}

    def decorate(view: Callable[..., Any]) -> Callable[..., Response]:
        @functools.wraps(view)
        def run(**kwargs: Any) -> Response:
            if body_schema is not None:
                kwargs["body"] = load_body(body_schema)
            if query_schema is not None:
                kwargs["query"] = load_query(query_schema)
            result = view(**kwargs)
            if isinstance(result, Response):
                return result
            data, status = result if isinstance(result, tuple) else (result, min(spec.answers))
            answer_schema = answer_schemas[status]
            if answer_schema is None:
                return Response(status=status)
            response = jsonify(answer_schema.dump(data))
            response.status_code = status
            return response

        run.operation = spec  # type: ignore[attr-defined]
        return run

    return decorate
