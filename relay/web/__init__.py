"""HTTP edges of the relay: provider webhooks, the partner API, operations endpoints."""

from __future__ import annotations

from flask import current_app

from relay.services import Services


def services() -> Services:
    return current_app.extensions["relay"]  # type: ignore[no-any-return]
