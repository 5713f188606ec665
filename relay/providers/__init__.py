"""One module per email provider; `PROVIDERS` lists the webhooks the relay serves."""

from __future__ import annotations

from relay.providers.base import WebhookProvider
from relay.providers.mailgun import MailgunEventProvider, MailgunRouteProvider
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
