"""Every public endpoint against worst-shaped input, signed and unsigned (`-m hostile`).

Never a 5xx; cost linear in the size whatever the shape (the CPU for 2× the input stays under
3× that for 1×, measured in one run); peak memory within 3× the body where the body is read
before it is verified; and eight such requests at once leave a real gunicorn alive and within
the chart's memory limit. The shapes and where each endpoint reads them are in tests/hostile.py;
bench/hostile.py measures the same cases at 1 MB and 30 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from relay.app import create_app
from tests.e2e.conftest import BIN, ROOT, spawn, stop
from tests.helpers import free_port, grows_linearly, relay_env, wait_until
from tests.hostile import cases

pytestmark = pytest.mark.hostile

BIG = str(30 * 1024 * 1024)
#: The chart's default memory limit of a web pod (helm/knock-relay/values.yaml web.resources).
CHART_WEB_MEMORY_LIMIT = 1024 * 1024 * 1024


def _case_id(path: str, shape: str, signed: bool) -> str:
    return f"{path.strip('/').replace('/', '.')}-{shape}-{'signed' if signed else 'unsigned'}"


#: Every (path, shape, signed) that applies to its endpoint.
ALL = [(path, shape, signed) for path, shape, signed, build in cases(64) if build() is not None]


def build_case(path: str, shape: str, signed: bool, size: int) -> dict[str, Any]:
    for found_path, found_shape, found_signed, build in cases(size):
        if (found_path, found_shape, found_signed) == (path, shape, signed):
            request = build()
            assert request is not None
            return request
    raise AssertionError((path, shape, signed))


@pytest.fixture
def big_client(make_settings: Any) -> Any:
    return create_app(make_settings(RELAY_MAX_REQUEST_BYTES=BIG)).test_client()


@pytest.mark.parametrize(("path", "shape", "signed"), ALL, ids=[_case_id(*case) for case in ALL])
def test_no_hostile_request_gets_a_5xx(
    big_client: Any, redis_client: redis.Redis, path: str, shape: str, signed: bool
) -> None:
    response = big_client.post(path, **build_case(path, shape, signed, 96 * 1024))
    assert response.status_code < 500, response.get_data()[:300]
    if response.status_code >= 400 and not path.startswith("/console"):
        assert response.json["error"]
    if not signed and path != "/console/sign-in":
        assert response.status_code in (401, 413), response.json  # refused before anything is kept
        assert redis_client.dbsize() == 0


#: Where the work is done: everything signed on the endpoints that parse the most (raw MIME, a JSON
#: provider, a form provider), and unsigned where the signature is inside the body.
LINEAR = [
    case
    for case in ALL
    if (case[2] and case[0] in ("/webhooks/mime", "/webhooks/postmark/inbound", "/webhooks/sendgrid/inbound"))
    or (
        not case[2]
        and case[0]
        in (
            "/webhooks/mailgun/inbound",
            "/webhooks/mailgun/events",
            "/webhooks/mandrill/inbound",
            "/webhooks/ses",
            "/console/sign-in",
        )
    )  # fmt: skip
    or (case[2] and case[0] == "/v1/messages")
]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("path", "shape", "signed"), LINEAR, ids=[_case_id(*case) for case in LINEAR])
def test_cost_grows_linearly_whatever_the_shape(
    big_client: Any, redis_client: redis.Redis, path: str, shape: str, signed: bool
) -> None:
    def post(size: int) -> None:
        redis_client.flushdb()
        response = big_client.post(path, **build_case(path, shape, signed, size))
        assert response.status_code < 500

    assert grows_linearly(post, 192 * 1024)


def _measured(case: tuple[str, str, bool], size: int, redis_url: str) -> dict[str, Any]:
    """One request in a fresh process (bench/hostile.py --child): its CPU and peak RSS growth."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hostile.py"), "--child", str(size), "--redis", redis_url,
         "--only", f"{case[0]} {case[1]} {case[2]}"],
        check=True, capture_output=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    (row,) = json.loads(out.stdout)
    return row  # type: ignore[no-any-return]


#: Read before they can be verified: the signature is inside the body.
UNVERIFIED = [
    ("/webhooks/mailgun/inbound", "field-flood", False),
    ("/webhooks/mailgun/inbound", "long-lines", False),
    ("/webhooks/mandrill/inbound", "field-flood", False),
    ("/webhooks/mandrill/inbound", "huge-attribute", False),
    ("/webhooks/mailgun/events", "wide-json", False),
    ("/webhooks/mailgun/events", "field-flood", False),
    ("/webhooks/ses", "wide-json", False),
    ("/webhooks/ses", "deep-json", False),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", UNVERIFIED, ids=[_case_id(*case) for case in UNVERIFIED])
def test_unverified_bodies_cost_at_most_three_times_their_size(case: tuple[str, str, bool]) -> None:
    from tests.helpers import REDIS_URL

    row = _measured(case, 12 * 1024 * 1024, REDIS_URL)
    assert 400 <= row["status"] < 500, row
    assert row["peak_kib"] * 1024 <= 3 * row["body"], row
    assert row["kept_kib"] * 1024 <= row["body"] // 2, row  # given back once the request is over


def _rss_bytes(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            found += [int(child) for child in children.read_text().split()]
    return found


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_eight_unverified_30_mb_requests_at_once_stay_within_a_web_pods_memory(tmp_path: Path) -> None:
    port = free_port()
    env = relay_env("http://127.0.0.1:9", PORT=str(port), RELAY_MAX_REQUEST_BYTES=BIG, WEB_CONCURRENCY="2",
                    RELAY_WEB_THREADS="4", LOG_LEVEL="WARNING")  # fmt: skip
    web = spawn([str(BIN / "gunicorn"), "wsgi:app"], env, tmp_path / "web.log")
    url = f"http://127.0.0.1:{port}"
    try:
        # gunicorn answers once its first worker is up; the second may still be starting
        wait_until(lambda: _answers(url) and len(_children(web.pid)) == 2, timeout=30)
        workers = sorted(_children(web.pid))
        chosen = UNVERIFIED[0], UNVERIFIED[2], UNVERIFIED[4], UNVERIFIED[6]
        requests_ = [build_case(*case, 30 * 1000 * 1000) for case in chosen for _ in range(2)]
        statuses: list[int] = []
        peak = [0]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], sum(_rss_bytes(pid) for pid in [web.pid, *workers]))
                done.wait(0.02)

        def send(request: dict[str, Any], path: str) -> None:
            headers = {"Content-Type": request["content_type"], **request["headers"]}
            statuses.append(requests.post(url + path, data=request["data"], headers=headers, timeout=120).status_code)

        watcher = threading.Thread(target=watch)
        watcher.start()
        senders = [
            threading.Thread(target=send, args=(request, chosen[i // 2][0])) for i, request in enumerate(requests_)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        done.set()
        watcher.join()
        assert len(statuses) == 8 and all(400 <= status < 500 for status in statuses), statuses
        assert peak[0] < CHART_WEB_MEMORY_LIMIT, f"{peak[0] / 2**20:.0f} MiB"
        assert sorted(_children(web.pid)) == workers  # no worker died or was replaced
        assert requests.get(url + "/healthz", timeout=5).ok
    finally:
        stop(web)


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).ok
    except requests.RequestException:
        return False
