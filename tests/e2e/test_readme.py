"""The README's promise to a new user: `python3 dev.py run`, then its curl logs an email."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import ROOT
from tests.helpers import REDIS_URL, free_port, wait_until

pytestmark = pytest.mark.e2e


def readme_block(containing: str) -> str:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return next(block for block in blocks if containing in block)


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_run_command_and_readme_curl_log_an_email(tmp_path: Path) -> None:
    web, sandbox = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "PORT": str(web),
        "KNOCK_BASE_URL": f"http://localhost:{sandbox}",
    }
    for name in ("RELAY_API_TOKEN", "RELAY_WEBHOOK_BASIC_AUTH", "RELAY_ENV", "KNOCK_API_KEY"):
        env.pop(name, None)
    log = (tmp_path / "run.log").open("wb")
    stack = subprocess.Popen([sys.executable, "dev.py", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: b"Ctrl-C stops everything" in (tmp_path / "run.log").read_bytes(), timeout=60, interval=0.2)

        def ported(block: str) -> str:
            return block.replace("localhost:8000", f"localhost:{web}").replace("localhost:8081", f"localhost:{sandbox}")

        logged = subprocess.run(["bash", "-c", ported(readme_block("/v1/messages"))], capture_output=True, text=True)
        assert '"status":"queued"' in logged.stdout.replace(" ", ""), logged

        def events() -> list[dict[str, str]]:
            shown = subprocess.run(["bash", "-c", ported(readme_block("/events"))], capture_output=True, text=True)
            return json.loads(shown.stdout)["events"]  # type: ignore[no-any-return]

        (event,) = wait_until(events, timeout=20, interval=0.2)
        assert event["type"] == "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED"
        assert event["subject"] == "Is the 2BR still available?"
        assert event["agent"] == {"username": "leasing.agent"}

        raw = subprocess.run(["bash", "-c", ported(readme_block("/webhooks/mime"))], capture_output=True, text=True)
        assert '"status":"queued"' in raw.stdout.replace(" ", ""), raw

        # The console's address and account, as printed, sign in.
        printed = (tmp_path / "run.log").read_text()
        console = re.search(r"operator console at (\S+): sign in as '([^']+)', password '([^']+)'", printed)
        assert console and console.group(1) == f"http://localhost:{web}/console/", printed
        browser = requests.Session()
        form = browser.get(f"{console.group(1)}sign-in", timeout=10).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token
        signed = browser.post(f"{console.group(1)}sign-in", allow_redirects=False, timeout=10,
                              data={"csrf_token": token.group(1), "name": console.group(2),
                                    "password": console.group(3)})  # fmt: skip
        assert signed.status_code == 302 and signed.headers["Location"].endswith("/console/")
    finally:
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=90) == 0
        log.close()
