"""`POST /webhooks/...`: verify, parse, route, store, queue; answer once durably queued."""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Any

from flask import Blueprint, Request, Response, g, jsonify

from relay.errors import MalformedPayload, PayloadTooLarge
from relay.intake import accept_items
from relay.metrics import WEBHOOKS
from relay.providers import PROVIDERS
from relay.providers.base import WebhookProvider
from relay.quarantine import Quarantine
from relay.request_body import LARGE_BODY_BYTES, body_start, forget_body
from relay.web import current_request, services
from relay.web.contract import Answer, operation
from relay.web.schemas import Accepted

log = logging.getLogger(__name__)

webhooks = Blueprint("webhooks", __name__)


def _quarantine(provider: WebhookProvider, error: MalformedPayload, current: Request) -> None:
    """Keep the raw request; if Redis cannot take it, the RedisError becomes a 503 and the provider retries."""
    start, size = body_start(current)
    Quarantine(services().redis).keep(provider=provider.name, reason=error.message,
                                      content_type=current.content_type, body=start, size=size)  # fmt: skip


def _replay_key(provider: WebhookProvider, token: str | None) -> str | None:
    """Where the answer to a call with this signed token (or provider delivery id) is kept."""
    return f"relay:webhook-token:{provider.name}:{hashlib.sha256(token.encode()).hexdigest()}" if token else None


def refuse_larger_than(limit: int | None, current: Request) -> None:
    """PayloadTooLarge when the body is over the provider's own limit (RELAY_MAX_REQUEST_BYTES is
    checked for every request before this): by its stated length, unread, when it has one."""
    if limit is None:
        return
    length = current.content_length
    if (length if length is not None else len(current.get_data(cache=True))) > limit:
        raise PayloadTooLarge(f"request larger than the {limit} bytes this provider ever posts")


def receive(provider: WebhookProvider) -> Response:
    relay = services()
    current = current_request()
    refuse_larger_than(provider.max_body_bytes, current)
    provider.verify_request(current, relay.settings)
    replay_key = _replay_key(provider, provider.replay_token(current))
    try:
        items = provider.parse_request(current, relay.settings)
        if (current.content_length or 0) >= LARGE_BODY_BYTES:
            # The emails are read: a 30 MB body (and the form parsed from it) need not stay in
            # memory while they are routed, rendered and stored.
            forget_body(current)
        intake = accept_items(
            relay, items, provider.name, replay_key=replay_key, replay_ttl=relay.settings.signature_max_age_seconds
        )
    except MalformedPayload as error:
        log.info("unreadable webhook quarantined", extra={"provider": provider.name, "reason": error.message})
        _quarantine(provider, error, current)
        raise MalformedPayload(error.message, details=error.details, status=provider.malformed_status) from error
    answer = intake.body()
    g.webhook_outcome = answer["status"]
    # Answered as is: the intake builds it in the shape of `Accepted`, so the contract's pass
    # through that schema (a marshmallow dump on every call) would only copy it.
    return jsonify(answer)


#: Outcomes of webhook calls that were not accepted, by the status they were answered with.
_REFUSALS = {
    401: "unauthorized",
    400: "malformed",
    406: "malformed",
    413: "too_large",
    429: "unavailable",
    503: "unavailable",
}


@functools.cache
def _webhook_counter(provider: str, outcome: str) -> Any:
    """The counter's child for these labels, kept: `labels()` checks and locks on every call. (A
    child follows its process across a fork: prometheus_client opens the new process's files.)"""
    return WEBHOOKS.labels(provider, outcome)


@webhooks.after_app_request
def count_webhook(response: Response) -> Response:
    # By path, so that a call refused before its view ran (a body over the size cap) counts too;
    # a provider's HEAD check of the URL is not a webhook call.
    current = current_request()
    provider = _PROVIDER_BY_PATH.get(current.path) if current.method == "POST" else None
    if provider:
        status = response.status_code
        outcome = g.get("webhook_outcome") if status == 200 else None
        _webhook_counter(provider, outcome or _REFUSALS.get(status, "error")).inc()
    return response


def _register(provider: WebhookProvider) -> None:
    @operation(
        provider.summary,
        description=f"Authentication: {provider.authentication}",
        answers={200: Answer("Received: accepted, ignored, unmatched or a duplicate of an earlier post", Accepted)},
        errors=(401, provider.malformed_status, provider.retry_status),
        security=provider.security,
        media_types=provider.media_types,
    )
    def view() -> Response:
        return receive(provider)

    webhooks.add_url_rule(provider.path, endpoint=provider.path.strip("/"), view_func=view, methods=["POST"])
    if provider.answers_head:
        webhooks.add_url_rule(
            provider.path, endpoint=provider.path.strip("/") + "-check", view_func=_url_check, methods=["HEAD"]
        )


def _url_check() -> Response:
    """200 to a provider checking that the URL exists before it starts posting."""
    return Response(status=200)


for _provider in PROVIDERS:
    _register(_provider)

_PROVIDER_BY_PATH = {provider.path: provider.name for provider in PROVIDERS}
_RETRY_STATUS_BY_PATH = {provider.path: provider.retry_status for provider in PROVIDERS}


def retry_status_for(path: str) -> int:
    """What a request to `path` is answered when a retry could fix its failure: 503, or the status
    its provider retries (relay.providers.base.WebhookProvider.retry_status)."""
    return _RETRY_STATUS_BY_PATH.get(path, 503)
