"""Attachment file names and sizes come from strangers: a name of thousands of RFC 2047 words is
read to a bound (the standard library's decoder costs far more than linear time and memory in the
number of words), and a size header a sender writes is never taken for the relay's own."""

from __future__ import annotations

import time
from typing import Any

from tests.helpers import BEARER, post_mime


def message_with_file_name(name: str, extra: str = "") -> bytes:
    return (
        (
            "From: lee@example.com\r\nTo: leasing@acme-living.com\r\nSubject: lease\r\n"
            "Message-ID: <names-{n}@example.com>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            f'--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="{name}"\r\n{extra}'
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQgZmFrZQ==\r\n--b--\r\n"
        )
        .replace("{n}", str(len(name) + len(extra)))
        .encode()
    )


def listed_body(client: Any, services: Any, raw: bytes) -> str:
    answer = post_mime(client, raw)
    assert answer.status_code == 200, answer.json
    (delivery,) = answer.json["deliveries"]
    return str(services.store.payload(delivery["id"])["body"])


def test_a_name_of_many_encoded_words_is_read_to_a_bound_in_linear_time(make_settings: Any) -> None:
    from relay.app import create_app

    app = create_app(make_settings(RELAY_MAX_REQUEST_BYTES="1048576"))
    client, services = app.test_client(), app.extensions["relay"]
    client.put("/v1/prospects/P1", json={"emails": ["lee@example.com"]}, headers=BEARER)

    def cost(words: int) -> float:
        raw = message_with_file_name("=?utf-8?q?a?= " * words)
        start = time.perf_counter()
        body = listed_body(client, services, raw)
        assert "aaaa" in body  # decoded, as far as it was read
        return time.perf_counter() - start

    cost(1000)
    assert cost(8000) < 3 * cost(4000) + 0.05


def test_a_size_header_written_by_the_sender_is_not_believed(client: Any, services: Any) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    for size in ("9" * 400, "9" * 5000, "12345678"):
        raw = message_with_file_name("lease.pdf", f"X-Relay-Omitted-Body-Size: {size}\r\n")
        body = listed_body(client, services, raw)
        assert "lease.pdf (13 B)" in body, body
