"""`dev.py`, the two commands a new user types: no traps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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


def test_a_venv_made_by_a_too_old_python_is_made_again(tmp_path: Path) -> None:
    """A .venv left by Python 3.9 would run the relay on an interpreter it does not support."""
    for name in ("dev.py", "requirements.txt", "requirements-dev.txt"):
        (tmp_path / name).write_text((ROOT / name).read_text() if name == "dev.py" else "# nothing to install\n")
    old = tmp_path / ".venv"
    old.mkdir()
    (old / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.9.18\n")
    (old / "left-by-3.9").write_text("")
    result = subprocess.run([sys.executable, "dev.py", "bench"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert ".venv was made by Python 3.9: making it again" in result.stderr, result.stderr
    assert not (old / "left-by-3.9").exists()
    made_with = (old / "pyvenv.cfg").read_text()
    assert f"version = {sys.version_info.major}.{sys.version_info.minor}." in made_with


@pytest.mark.parametrize("keeps", [True, False])
def test_the_redis_dev_starts_is_named_for_what_it_keeps(tmp_path: Path, keeps: bool) -> None:
    data = tmp_path / "redis" if keeps else None
    where = f"Path({str(data)!r})" if data else "None"
    code = f"import dev\nfrom pathlib import Path\nprocess, url = dev.start_redis({where})\nprocess.kill()"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if keeps:
        assert f"started a Redis keeping its data in {data} (append-only file)" in result.stderr, result.stderr
        assert "throwaway" not in result.stderr
    else:
        assert "started a throwaway Redis" in result.stderr, result.stderr
