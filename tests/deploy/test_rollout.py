"""A rollout drops no webhook. nginx, with a keep-alive upstream as ingress-nginx keeps one, sends a
steady stream of webhooks to two gunicorn instances of the relay. One instance is then taken out
of the upstream (nginx reloaded without it), as the removal of a pod's endpoints does, and only
after the chart's preStop sleep is it sent SIGTERM. Every webhook must be answered 2xx."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.deploy.test_slow_clients import NGINX, NGINX_PRELUDE
from tests.e2e.conftest import BIN, spawn, stop
from tests.helpers import basic_auth, free_port, mime, relay_env, wait_until

pytestmark = pytest.mark.e2e
CHART_VALUES = Path(__file__).resolve().parents[2] / "helm" / "knock-relay" / "values.yaml"
#: Scaled down from the chart's web.preStopSleepSeconds: long enough here for nginx's reload.
PRE_STOP_SECONDS = 2

# ingress-nginx's upstream: HTTP/1.1 with idle connections kept (upstream-keepalive-connections
# 320, upstream-keepalive-timeout 60 s) and the Connection header cleared. A request that fails
# upstream is not tried on the other server: ingress-nginx retries a refused connection, but not
# a POST already sent on a connection the stopping pod closed, and this makes every request
# sent to a stopping pod count.
NGINX_CONF = (
    NGINX_PRELUDE
    + """
    upstream relay {{
        {servers}
        keepalive 320;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 31m;
        location / {{
            proxy_request_buffering on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_next_upstream off;
            proxy_pass http://relay;
        }}
    }}
}}
"""
)


def write_conf(path: Path, prefix: Path, port: int, upstreams: list[int]) -> None:
    servers = "\n        ".join(f"server 127.0.0.1:{upstream};" for upstream in upstreams)
    path.write_text(NGINX_CONF.format(prefix=prefix, port=port, servers=servers))


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_the_chart_waits_before_sigterm_and_gunicorn_outlives_the_proxys_idle_connections() -> None:
    values = yaml.safe_load(CHART_VALUES.read_text())["web"]
    assert values["preStopSleepSeconds"] >= 5
    assert values["terminationGracePeriodSeconds"] > values["preStopSleepSeconds"] + 30
    # Read in a process of its own: the file sets up the environment of the process that loads it.
    read = "import runpy; c = runpy.run_path('gunicorn.conf.py'); print(c['keepalive'], c['graceful_timeout'])"
    shown = subprocess.run([sys.executable, "-c", read], cwd=CHART_VALUES.parents[2], capture_output=True,
                           text=True, check=True)  # fmt: skip
    keepalive, graceful_timeout = (int(value) for value in shown.stdout.split())
    assert keepalive > 60  # ingress-nginx's upstream-keepalive-timeout
    assert graceful_timeout <= 30


def test_a_pod_taken_out_and_then_stopped_drops_no_webhook(tmp_path: Path, sandbox: Any) -> None:
    if NGINX is None:
        if "CI" in os.environ:
            pytest.fail("nginx is missing: .ci/run installs Debian's nginx-light")
        pytest.skip("nginx is not installed (Debian package nginx-light); CI installs it")
    ports = [free_port(), free_port()]
    webs = [
        spawn(
            [str(BIN / "gunicorn"), "wsgi:app"],
            relay_env(sandbox.url, PORT=str(port), WEB_CONCURRENCY="2"),
            tmp_path / f"web-{port}.log",
        )  # fmt: skip
        for port in ports
    ]
    proxy_port = free_port()
    conf = tmp_path / "nginx.conf"
    write_conf(conf, tmp_path, proxy_port, ports)
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
    url = f"http://127.0.0.1:{proxy_port}"
    answered: Counter[int] = Counter()
    failures: list[str] = []
    over = threading.Event()

    def provider(lane: int) -> None:
        # A connection to nginx per webhook: nginx's own reload (which stands in for the endpoints
        # update ingress-nginx applies without one) closes its idle client connections, a race
        # between this test and nginx. The keep-alive under test is nginx's to gunicorn.
        session = requests.Session()
        session.headers["Connection"] = "close"
        sent = 0
        while not over.is_set():
            try:
                response = session.post(
                    f"{url}/webhooks/mime",
                    data=mime(message_id=f"<rollout-{lane}-{sent}@example.com>"),
                    headers={**basic_auth(), "Content-Type": "message/rfc822"},
                    timeout=15,
                )
                answered[response.status_code] += 1
                if not 200 <= response.status_code < 300:
                    failures.append(f"{response.status_code} {response.text[:120]}")
            except requests.RequestException as error:
                failures.append(type(error).__name__)
            sent += 1

    lanes = [threading.Thread(target=provider, args=(n,)) for n in range(6)]
    try:
        wait_until(lambda: all(answers(f"http://127.0.0.1:{port}/readyz") for port in ports), timeout=30)
        wait_until(lambda: answers(f"{url}/readyz"), timeout=30)
        for lane in lanes:
            lane.start()
        wait_until(lambda: sum(answered.values()) >= 100, timeout=60)
        # The pod's endpoints are removed: the proxy is reloaded without it...
        write_conf(conf, tmp_path, proxy_port, ports[:1])
        nginx.send_signal(signal.SIGHUP)
        # ...while Kubernetes runs the preStop sleep; then gunicorn gets SIGTERM and drains.
        time.sleep(PRE_STOP_SECONDS)
        before_sigterm = sum(answered.values())
        webs[1].send_signal(signal.SIGTERM)
        assert webs[1].wait(timeout=40) == 0
        wait_until(lambda: sum(answered.values()) >= before_sigterm + 100, timeout=60)
    finally:
        over.set()
        for lane in lanes:
            lane.join(timeout=30)
        stop(nginx)
        for web in webs:
            if web.poll() is None:
                stop(web)
    print(f"\nrollout through nginx: {dict(answered)}")
    assert not failures, failures[:5]
    assert sum(answered.values()) >= 200
