"""HTTP edges of the relay: provider webhooks, the partner API, operations endpoints."""

from __future__ import annotations

from flask import Request, current_app, request

from relay.services import Services


def services() -> Services:
    return current_app.extensions["relay"]  # type: ignore[no-any-return]


def current_request() -> Request:
    """The request itself, not Flask's proxy to it, for code that reads it many times: each read
    through the proxy is a context lookup."""
    return request._get_current_object()  # type: ignore[attr-defined, no-any-return]
