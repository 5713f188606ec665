"""Slow uploads behind the chart's buffering ingress.

gunicorn's threads read request bodies themselves, so a client that trickles its body ties up a
thread for as long as it likes: with the shipped settings (2 processes x 4 threads) sixteen such
clients leave nothing for the providers. The chart's ingress therefore buffers whole bodies
(ingress-nginx `proxy-request-buffering: "on"`). This test puts nginx, configured as those
annotations configure it, in front of the real gunicorn and shows normal webhooks still answer
promptly while slow clients hold their connections open.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import BIN, spawn, stop
from tests.helpers import basic_auth, free_port, mime, relay_env, wait_until

pytestmark = pytest.mark.e2e
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
SLOW_CLIENTS = 16  # twice the threads of the shipped gunicorn settings
SLOW_BODY_BYTES = 4000

#: An nginx of the test's own, every file under {prefix}; the `http` block follows.
NGINX_PRELUDE = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
"""

# What the chart's `ingress.bufferRequests` annotations turn on in ingress-nginx.
NGINX_CONF = (
    NGINX_PRELUDE
    + """
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 31m;            # proxy-body-size
        client_body_buffer_size 1m;          # client-body-buffer-size
        location / {{
            proxy_request_buffering on;      # proxy-request-buffering
            proxy_read_timeout 60s;          # proxy-read-timeout
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_pass http://127.0.0.1:{upstream};
        }}
    }}
}}
"""
)


@pytest.fixture
def buffered_relay(tmp_path: Path, sandbox: object) -> Iterator[str]:
    if NGINX is None:
        if "CI" in os.environ:
            pytest.fail("nginx is missing: .ci/run installs Debian's nginx-light")
        pytest.skip("nginx is not installed (Debian package nginx-light); CI installs it")
    web_port, proxy_port = free_port(), free_port()
    env = relay_env(sandbox.url, PORT=str(web_port), WEB_CONCURRENCY="2", RELAY_WEB_THREADS="4")  # type: ignore[attr-defined]
    web = spawn([str(BIN / "gunicorn"), "wsgi:app"], env, tmp_path / "web.log")
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=tmp_path, port=proxy_port, upstream=web_port))
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])

    def ready() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{proxy_port}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(ready, timeout=30, interval=0.2)
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        stop(nginx)
        stop(web)


def trickle(url: str, stop_at: float) -> None:
    """A client that sends a webhook's headers, then its body at one byte a second."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        auth = basic_auth()["Authorization"]
        sock.sendall(
            f"POST /webhooks/mime HTTP/1.1\r\nHost: relay\r\nAuthorization: {auth}\r\n"
            f"Content-Type: message/rfc822\r\nContent-Length: {SLOW_BODY_BYTES}\r\n\r\n".encode()
        )
        while time.monotonic() < stop_at:
            try:
                sock.sendall(b"x")
            except OSError:
                return
            time.sleep(1)


def test_slow_uploads_do_not_delay_webhooks_behind_the_buffering_ingress(buffered_relay: str) -> None:
    stop_at = time.monotonic() + 20
    slow = [threading.Thread(target=trickle, args=(buffered_relay, stop_at), daemon=True) for _ in range(SLOW_CLIENTS)]
    for thread in slow:
        thread.start()
    time.sleep(2)  # every slow client is connected and trickling
    waits = []
    for n in range(5):
        started = time.monotonic()
        answer = requests.post(
            f"{buffered_relay}/webhooks/mime",
            data=mime(message_id=f"<fast-{n}@example.com>"),
            headers={**basic_auth(), "Content-Type": "message/rfc822"},
            timeout=15,
        )
        waits.append(time.monotonic() - started)
        assert answer.status_code == 200, answer.text
    assert all(thread.is_alive() for thread in slow)  # still trickling while the webhooks were answered
    # Without buffering every gunicorn thread is stuck in a slow body and these wait for a whole trickle.
    assert max(waits) < 3, waits


def test_the_same_proxy_settings_are_what_the_chart_renders() -> None:
    """The nginx above is configured as the chart's default ingress annotations say."""
    from tests.deploy.test_chart import one, render

    annotations = one(render({"ingress": {"enabled": True}}), "Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    assert "client_max_body_size " + annotations["nginx.ingress.kubernetes.io/proxy-body-size"] in NGINX_CONF
    assert "client_body_buffer_size " + annotations["nginx.ingress.kubernetes.io/client-body-buffer-size"] in NGINX_CONF
