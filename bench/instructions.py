"""Run inside valgrind's callgrind by `bench/run.py --only instructions`: post `count` webhooks
to one app in this process, straight through its WSGI callable (no HTTP server), after a warm-up.

    python bench/instructions.py {relay|bare|anymail} {mime|mailgun-parsed|mailgun-mime} COUNT TOTAL

Bodies for TOTAL requests are built whatever COUNT is, so two runs that differ only in COUNT
differ only by the requests themselves: their instruction counts' difference divided by the
difference in COUNT is what one request costs the app, free of start-up and of body building.
Instructions are counted, not seconds: the figure repeats to within a fraction of a percent on a
machine whose timings move by a factor of two.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from werkzeug.test import Client  # noqa: E402

from bench.run import ANYMAIL_PATH, AUTH, SCENARIOS  # noqa: E402

WARM_UP = 20


def wsgi_app(which: str) -> Any:
    if which == "bare":
        from bench.bare_app import app

        return app
    if which == "anymail":
        from bench.anymail_site import application

        return application
    from relay.app import create_app
    from relay.config import load_settings

    app = create_app(load_settings(dict(os.environ)))
    answer = app.test_client().put(
        "/v1/prospects/P1",
        json={"emails": ["renter@example.com"], "agentUsername": "pat"},
        headers={"Authorization": "Bearer bench-token"},
    )
    assert answer.status_code == 200, answer.data
    return app


def main() -> int:
    which, scenario, count, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    path, content_type, maker = SCENARIOS[scenario]
    if which == "anymail":
        path = ANYMAIL_PATH
    bodies = [maker(n, f"{which}-{scenario}-{count}-{n}-{os.getpid()}") for n in range(WARM_UP + total)]
    client = Client(wsgi_app(which))
    headers = {"Authorization": AUTH, "Host": "127.0.0.1"}
    for body in bodies[:WARM_UP]:
        answer = client.post(path, data=body, content_type=content_type, headers=headers)
        assert answer.status_code == 200, answer.get_data()[:300]
    for body in bodies[WARM_UP : WARM_UP + count]:
        client.post(path, data=body, content_type=content_type, headers=headers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
