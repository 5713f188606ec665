"""What every webhook provider shares (relay.providers.base): basic auth against each configured
pair, and which of the attachments a provider lists are images the HTML shows."""

from __future__ import annotations

from typing import Any

import pytest

from relay.providers.base import inline_image
from tests.helpers import basic_auth, mime, post_mime


def test_basic_auth_is_checked_against_each_configured_pair(client: Any) -> None:
    assert post_mime(client, mime(), headers=basic_auth("old", "rotated-out")).status_code == 200
    assert post_mime(client, mime(), headers=basic_auth("old", "s3cret")).status_code == 401
    assert post_mime(client, mime(), headers=basic_auth("relay", "rotated-out")).status_code == 401
    assert post_mime(client, mime(), headers=basic_auth("relay", "s3cre")).status_code == 401


@pytest.mark.parametrize(
    ("content_type", "content_id", "disposition", "inline"),
    [
        ("image/png", "logo@acme", None, True),
        ("IMAGE/JPEG", "photo@acme", "inline", True),
        ("image/png", "logo@acme", 'attachment; filename="logo.png"', False),  # sent as a file
        ("application/pdf", "lease@apple", None, False),  # Apple Mail gives every attachment a Content-ID
        ("image/png", None, None, False),
        ("image/png", "", "inline", False),
        (None, "x@y", None, False),
    ],
)
def test_only_an_image_with_a_content_id_not_sent_as_a_file_is_left_out(
    content_type: str | None, content_id: str | None, disposition: str | None, inline: bool
) -> None:
    """As raw MIME reads a part (relay.mime): such an image is shown by the HTML, not attached."""
    assert inline_image(content_type, content_id, disposition) is inline
