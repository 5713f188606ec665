"""One module per email provider; `PROVIDERS` lists the webhooks the relay serves."""

from __future__ import annotations

from relay.providers.base import WebhookProvider
from relay.providers.mime import RawMimeProvider

PROVIDERS: tuple[WebhookProvider, ...] = (RawMimeProvider(),)
