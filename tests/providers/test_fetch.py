"""The shared fetch from provider APIs and storage (relay.providers.fetch): which URLs it may
reach, no redirect followed, failures retried by the worker."""

from __future__ import annotations

from typing import Any

import pytest

from relay.providers.fetch import allowed_fetch_url
from tests.conftest import StorageStub
from tests.helpers import basic_auth, logged_as, payload_json


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://se.api.mailgun.net/v3/domains/x/messages/k", True),
        ("https://storage-us-east4.api.mailgun.net/v3/x", True),
        ("https://mailgun.net.evil.com/v3/x", False),
        ("https://evilmailgun.net/v3/x", False),
        ("http://se.api.mailgun.net/v3/x", False),
        ("https://se.api.mailgun.net:8443/v3/x", False),
        ("https://user:pw@se.api.mailgun.net/v3/x", False),
        ("https://[::1]/x", False),
        ("not a url", False),
        # Parser confusion: requests would connect to evil.com for each of these.
        ("https://evil.com\\.mailgun.net/", False),
        ("https://evil.com\\@se.api.mailgun.net/", False),
        ("https://evil.com#.mailgun.net", False),
        ("https://evil.com?.mailgun.net", False),
        ("https://evil.com%5c.mailgun.net/", False),
        ("https://evil.com%2f.mailgun.net/", False),
        ("https://se.api.mailgun.net@evil.com/", False),
        ("https://se.api.mailgun.net\t.evil.com/", False),
        ("https://se.api.mailgun.net./v3/x", False),
        # Lookalike hosts.
        ("https://x.mailgun.net.evil.com/v3/x", False),
        ("https://mailgun.net.evil/v3/x", False),
        ("https://mailgun.net/v3/x", False),  # `*.` needs a subdomain
        ("https://se.api.mailgun.net/v3/x@y", False),
    ],
)
def test_storage_origin_allow_list(url: str, allowed: bool) -> None:
    assert (allowed_fetch_url(url, ("https://*.mailgun.net",)) is not None) is allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://storage.example.com/v3/x", True),
        ("https://STORAGE.example.com/v3/x", True),
        ("https://storage.example.com.evil.com/v3/x", False),
        ("https://host.evil.com/v3/x", False),
        ("https://evil.storage.example.com/v3/x", False),
        ("https://storage.example.com:443/v3/x", False),
        ("https://evil.com\\.storage.example.com/v3/x", False),
    ],
)
def test_exact_host_origins_admit_only_that_host(url: str, allowed: bool) -> None:
    assert (allowed_fetch_url(url, ("https://storage.example.com",)) is not None) is allowed


def test_a_provider_api_outage_is_retried_and_a_redirect_never_followed(
    api_client: Any, storage: StorageStub, api_worker: Any
) -> None:
    storage.failures.extend([503, 302])
    response = api_client.post("/webhooks/postmark/outbound", json=payload_json("postmark/delivery.json"),
                               headers=basic_auth())  # fmt: skip
    logged_as(api_client, response.json["deliveries"][0]["id"])
    assert [r["path"] for r in storage.seen] == ["/messages/outbound/883953f4-6105-42a2-a16a-77a8eac79483/details"] * 3
