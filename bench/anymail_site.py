"""django-anymail's Mailgun inbound view as a one-file Django site (the peer in the benchmark)."""

from __future__ import annotations

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["anymail"],
    MIDDLEWARE=[],
    DATA_UPLOAD_MAX_MEMORY_SIZE=31457280,
    ANYMAIL={
        "MAILGUN_WEBHOOK_SIGNING_KEY": os.environ["MAILGUN_WEBHOOK_SIGNING_KEY"],
        "WEBHOOK_SECRET": os.environ["BENCH_BASIC_AUTH"],
    },
    LOGGING_CONFIG=None,
)
django.setup()

from anymail.signals import inbound  # noqa: E402
from anymail.webhooks.mailgun import MailgunInboundWebhookView  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import path  # noqa: E402


def receive(sender, event, esp_name, **kwargs):  # type: ignore[no-untyped-def]
    """What an application would do first: read the message's routing fields."""
    message = event.message
    return (message.from_email, message.to, message.subject, message["Message-ID"])


inbound.connect(receive)
urlpatterns = [path("anymail/mailgun/inbound/", MailgunInboundWebhookView.as_view())]
application = get_wsgi_application()
