"""The Knock client's connection settings: the proxy environment, read once when it is built."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from relay.knock.client import KnockClient, KnockTransientError


class _ForwardProxy(BaseHTTPRequestHandler):
    """Answers as Knock would, for any absolute URL a client hands its proxy; keeps what it saw."""

    seen: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        answer = json.dumps({"communicationId": "C1"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def forward_proxy() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _ForwardProxy.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_knock_is_called_through_the_proxy_the_environment_names(
    forward_proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = KnockClient("http://knock.invalid/v1", "key")
    monkeypatch.delenv("HTTP_PROXY")  # read when the client was built, not on each call
    assert client.log_email("P/1", {"subject": "Hi"}) == "C1"
    assert _ForwardProxy.seen == [("http://knock.invalid/v1/prospect/P%2F1/email", {"subject": "Hi"})]


def test_a_host_no_proxy_names_is_called_directly(forward_proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", forward_proxy)
    monkeypatch.setenv("NO_PROXY", "knock.invalid")
    client = KnockClient("http://knock.invalid", "key", timeout=2)
    with pytest.raises(KnockTransientError):  # no such host: it was not handed to the proxy
        client.log_email("P1", {"subject": "Hi"})
    assert _ForwardProxy.seen == []
