"""A Knock that answers every logged email at once (or after BENCH_STUB_DELAY_MS), for worker throughput."""

from __future__ import annotations

import itertools
import json
import os
import time

DELAY = float(os.environ.get("BENCH_STUB_DELAY_MS", "0")) / 1000
_ids = itertools.count(1)


def app(environ, start_response):  # type: ignore[no-untyped-def]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    if DELAY:
        time.sleep(DELAY)
    body = json.dumps({"communicationId": f"BENCH-{next(_ids)}"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
