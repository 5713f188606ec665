"""One module per email provider; `PROVIDERS` lists the webhooks the relay serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.config import Settings
from relay.message import Email
from relay.providers.base import WebhookProvider
from relay.providers.mailgun import STORED_MESSAGE, MailgunEventProvider, MailgunRouteProvider, email_from_storage
from relay.providers.mime import RawMimeProvider
from relay.providers.postmark import PostmarkInboundProvider
from relay.providers.sendgrid import SendGridInboundProvider

PROVIDERS: tuple[WebhookProvider, ...] = (
    SendGridInboundProvider(),
    MailgunRouteProvider(),
    MailgunEventProvider(),
    PostmarkInboundProvider(),
    RawMimeProvider(),
)

#: How the worker completes each kind of PendingFetch: spec and settings in, the Email out.
FETCHERS: dict[str, Callable[[dict[str, Any], Settings], Email]] = {
    STORED_MESSAGE: email_from_storage,
}
