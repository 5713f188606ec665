"""One module per email provider; `PROVIDERS` lists the webhooks the relay serves and `FETCHERS`
how the worker completes the emails some of them only name (sent mail, metadata-only events)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.config import Settings
from relay.message import Email
from relay.providers import brevo, mailgun, mandrill, postmark, resend, ses, ses_s3
from relay.providers.base import WebhookProvider
from relay.providers.brevo import BrevoEventProvider, BrevoInboundProvider
from relay.providers.mailersend import MailerSendInboundProvider
from relay.providers.mailgun import MailgunEventProvider, MailgunRouteProvider
from relay.providers.mailjet import MailjetParseProvider
from relay.providers.mandrill import MandrillProvider
from relay.providers.mime import RawMimeProvider
from relay.providers.postmark import PostmarkDeliveryProvider, PostmarkInboundProvider
from relay.providers.resend import ResendProvider
from relay.providers.sendgrid import SendGridInboundProvider
from relay.providers.ses import SesSnsProvider
from relay.providers.sparkpost import SparkPostRelayProvider

PROVIDERS: tuple[WebhookProvider, ...] = (
    SendGridInboundProvider(),
    MailgunRouteProvider(),
    MailgunEventProvider(),
    PostmarkInboundProvider(),
    PostmarkDeliveryProvider(),
    SesSnsProvider(),
    SparkPostRelayProvider(),
    MandrillProvider(),
    MailjetParseProvider(),
    BrevoInboundProvider(),
    BrevoEventProvider(),
    ResendProvider(),
    MailerSendInboundProvider(),
    RawMimeProvider(),
)

#: How the worker completes each kind of PendingFetch: spec and settings in, the Email out.
FETCHERS: dict[str, Callable[[dict[str, Any], Settings], Email]] = {
    mailgun.STORED_MESSAGE: mailgun.email_from_storage,
    postmark.SENT_MESSAGE: postmark.email_from_postmark,
    resend.RECEIVED_EMAIL: resend.email_from_resend_received,
    resend.SENT_EMAIL: resend.email_from_resend_sent,
    mandrill.SENT_MESSAGE: mandrill.email_from_mandrill,
    ses_s3.STORED_IN_S3: ses.email_from_s3,
    brevo.SENT_EMAIL: brevo.email_from_brevo,
}
