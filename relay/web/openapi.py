"""The OpenAPI document, generated from the running app's routes and their declared contracts.

Every route whose view carries an `Operation` (relay/web/contract.py) is described:
the partner API, each provider's webhook and the probes. Schemas are converted by
apispec's marshmallow plugin from the very classes the views validate and answer with.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, current_app

from relay import __version__
from relay.web import schemas
from relay.web.contract import ERROR_REASONS, Operation

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "RELAY_API_TOKEN"},
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "RELAY_WEBHOOK_BASIC_AUTH, put in the webhook URL configured at the provider",
    },
}

_PATH_PARAMETER = re.compile(r"<(?:([^:<>]+):)?([^<>]+)>")


def openapi_document() -> dict[str, Any]:
    """The document for the current app, built once and kept on it."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    document: dict[str, Any] | None = app.extensions.get("relay.openapi")
    if document is None:
        document = app.extensions["relay.openapi"] = build_document(app)
    return document


def build_document(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="Knock Email Relay",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={
            "description": "Provider webhooks in, Knock's Log Prospect Email API out; "
            "the partner API under /v1 and the probes."
        },
    )
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    spec.components.schema("Error", schema=schemas.Error)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        contract: Operation | None = getattr(app.view_functions.get(rule.endpoint), "operation", None)
        if contract is None:
            continue
        path = _PATH_PARAMETER.sub(r"{\2}", rule.rule)
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": f"^{app.url_map.converters[converter or 'default'].regex}$"},
            }
            for converter, name in _PATH_PARAMETER.findall(rule.rule)
        ]
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        spec.path(
            path=path,
            parameters=parameters,
            operations={method.lower(): _operation(contract, rule.endpoint, method) for method in methods},
        )
    return spec.to_dict()


def _operation(contract: Operation, endpoint: str, method: str) -> dict[str, Any]:
    security = contract.security if contract.security is not None else _default_security(endpoint)
    operation: dict[str, Any] = {
        "operationId": re.sub(r"\W+", "_", endpoint),
        "summary": contract.summary,
        "tags": [endpoint.split(".")[0]],
        "security": [{name: []} for name in security],
        "responses": {},
    }
    if contract.description:
        operation["description"] = contract.description
    if contract.query is not None:
        operation["parameters"] = [{"in": "query", "schema": contract.query}]
    if contract.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": contract.body}}}
    elif contract.media_types:
        operation["requestBody"] = {
            "required": True,
            "content": {media_type: {"schema": shape} for media_type, shape in contract.media_types.items()},
        }
    for status, answer in contract.answers.items():
        described: dict[str, Any] = {"description": answer.description}
        if answer.schema is not None:
            described["content"] = {answer.media_type: {"schema": answer.schema}}
        elif answer.media_type != "application/json":
            described["content"] = {answer.media_type: {"schema": {"type": "string"}}}
        operation["responses"][str(status)] = described
    errors = set(contract.errors)
    if contract.body is not None or contract.query is not None:
        errors.add(400)
    if method in ("POST", "PUT"):
        errors.add(413)
    if security:
        errors.add(401)
    if contract.uses_redis:
        errors.add(503)
    for status in sorted(errors - set(contract.answers)):
        operation["responses"][str(status)] = {
            "description": ERROR_REASONS[status],
            "content": {"application/json": {"schema": "Error"}},
        }
    return operation


def _default_security(endpoint: str) -> tuple[str, ...]:
    return ("bearer",) if endpoint.startswith("api.") else ()
