"""`POST /webhooks/...`: verify, parse, route, store, queue; answer once durably queued."""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, jsonify, request

from relay.errors import MalformedPayload
from relay.intake import Intake, accept_email
from relay.providers import PROVIDERS
from relay.providers.base import WebhookProvider
from relay.quarantine import Quarantine
from relay.web import services

log = logging.getLogger(__name__)

webhooks = Blueprint("webhooks", __name__)


def _quarantine(provider: WebhookProvider, error: MalformedPayload) -> None:
    try:
        Quarantine(services().redis).keep(
            provider=provider.name,
            reason=error.message,
            content_type=request.content_type,
            body=request.get_data(cache=True),
        )
    except redis.RedisError:
        log.warning("could not quarantine unreadable request", extra={"provider": provider.name})


def receive(provider: WebhookProvider) -> tuple[Response, int]:
    relay = services()
    provider.verify_request(request, relay.settings)
    try:
        emails = provider.parse_request(request, relay.settings)
        intakes = [accept_email(relay, email, provider.name) for email in emails]
    except MalformedPayload as error:
        log.info(
            "unreadable webhook quarantined",
            extra={"provider": provider.name, "reason": error.message},
        )
        _quarantine(provider, error)
        raise MalformedPayload(error.message, details=error.details, status=provider.malformed_status) from error
    combined = Intake(tuple(d for intake in intakes for d in intake.deliveries))
    return jsonify(combined.body()), 200


def _register(provider: WebhookProvider) -> None:
    def view() -> tuple[Response, int]:
        return receive(provider)

    webhooks.add_url_rule(provider.path, endpoint=provider.name, view_func=view, methods=["POST"])


for _provider in PROVIDERS:
    _register(_provider)
