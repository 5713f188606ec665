"""`dev.py`, the two commands a new user types: no traps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT
from tests.helpers import REDIS_URL, free_port

pytestmark = pytest.mark.e2e


def dev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "dev.py", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_exits_zero(flag: str) -> None:
    result = dev(flag)
    assert result.returncode == 0 and "dev.py run" in result.stdout and "dev.py test" in result.stdout


def test_an_unknown_command_exits_two() -> None:
    assert dev("frobnicate").returncode == 2


def test_run_names_a_taken_port_before_starting_anything() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = dev("run", env={"PORT": str(port), "KNOCK_BASE_URL": f"http://localhost:{free_port()}",
                                 "REDIS_URL": REDIS_URL})  # fmt: skip
    assert result.returncode == 1
    assert f"already in use: PORT {port}" in result.stderr
    assert "relay at" not in result.stderr  # nothing was started, nothing seeded
