"""The container image: the Dockerfile's rules, and its build and run steps replayed without Docker.

No Docker daemon is needed: the build stage's `pip install` of the package and the runtime
stage's layout (only wsgi.py and gunicorn.conf.py in the working directory, the package
installed, a non-root user with no home) are reproduced here and run as web, worker and
sandbox against the test Redis.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import REDIS_URL, SANDBOX_KEY, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE_UID = 10001


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    pairs = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = [str(BIN / "hadolint"), "--no-color", "Dockerfile"]
    result = subprocess.run(hadolint, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    steps = instructions(DOCKERFILE)
    stages = [args for keyword, args in steps if keyword == "FROM"]
    assert len(stages) >= 2
    base = next(args for keyword, args in steps if keyword == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9][\w.]*-slim[\w-]*", base), base
    # Dependencies are installed before the application code is copied, so code changes reuse that layer.
    runs = [i for i, (k, a) in enumerate(steps) if k == "RUN" and "requirements.txt" in a]
    app_copies = [i for i, (k, a) in enumerate(steps) if k == "COPY" and "relay" in a.split()]
    assert runs and app_copies and max(runs) < min(app_copies)

    last = final_stage()
    user = [args for keyword, args in last if keyword == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) == IMAGE_UID
    env = " ".join(args for keyword, args in last if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PORT=8000" in env
    assert [args for keyword, args in last if keyword == "CMD"] == ['["gunicorn", "wsgi:app"]']
    assert not [args for keyword, args in last if keyword == "ENTRYPOINT"]  # `docker run IMAGE cmd` runs cmd
    healthcheck = [args for keyword, args in last if keyword == "HEALTHCHECK"]
    assert healthcheck and healthcheck[0].endswith('CMD ["relay", "healthcheck"]')
    for keyword, args in last:
        assert not (keyword == "RUN" and re.search(r"apt-get install|gcc|build-essential|pip install", args)), args


def test_dockerignore_sends_only_what_the_image_copies() -> None:
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()]
    rules = [rule for rule in rules if not rule.startswith("#")]
    assert rules[0] == "*"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = set()
    for keyword, args in instructions(DOCKERFILE):
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(args.split()[:-1])
    assert copied == included, (copied, included)


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """The build stage's `pip install --no-deps /src` and the runtime stage's /app, in a folder."""
    root = Path(tempfile.mkdtemp(prefix="relay-image-"))
    root.chmod(0o755)
    src, app, site = root / "src", root / "app", root / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "relay", src / "relay", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    app.mkdir()
    for name in ("wsgi.py", "gunicorn.conf.py"):
        shutil.copy(ROOT / name, app / name)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (site / "bin" / "relay").chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@functools.cache
def as_image_user() -> list[str]:
    """Run as the image's unprivileged user when the tests run as root.

    Only where that user can use this interpreter: one installed under root's home (pyenv)
    is unreadable to it, and its libpython would then resolve to another Python.
    """
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return []
    prefix = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups", "--"]
    version = [sys.executable, "-c", "import sys; print(sys.version)"]
    probe = subprocess.run([*prefix, *version], capture_output=True, text=True)
    return prefix if probe.stdout.strip() == sys.version else []


def image_env(root: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": f"{root / 'site' / 'bin'}:{BIN}:/usr/bin:/bin",
        "PYTHONPATH": str(root / "site"),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/nonexistent",
        "REDIS_URL": REDIS_URL,
        "RELAY_ENV": "production",
        "KNOCK_API_KEY": SANDBOX_KEY,
        "RELAY_SANDBOX_HOST": "0.0.0.0",
        **extra,
    }


def test_installed_package_gives_the_relay_command(image_root: Path) -> None:
    result = subprocess.run(
        [*as_image_user(), str(image_root / "site" / "bin" / "relay"), "--help"],
        env=image_env(image_root), capture_output=True, text=True, cwd=image_root / "app",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for command in ("worker", "sandbox", "healthcheck", "deliveries", "directory", "config"):
        assert command in result.stdout


@pytest.mark.e2e
def test_image_runs_as_web_worker_and_sandbox(image_root: Path, tmp_path: Path) -> None:
    web_port, worker_port, sandbox_port = free_port(), free_port(), free_port()
    env = image_env(
        image_root,
        PORT=str(web_port),
        RELAY_WORKER_PORT=str(worker_port),
        RELAY_SANDBOX_PORT=str(sandbox_port),
        KNOCK_BASE_URL=f"http://127.0.0.1:{sandbox_port}",
        RELAY_API_TOKEN="image-test-token",  # the console exists once someone can sign in
    )
    roles = {
        "web": ["gunicorn", "wsgi:app"],
        "worker": ["python", "-m", "relay", "worker"],
        "sandbox": ["python", "-m", "relay", "sandbox"],
    }
    processes = {}
    for role, command in roles.items():
        program = shutil.which(command[0], path=env["PATH"]) or command[0]
        if command[0] == "python":
            program = sys.executable
        log = (tmp_path / f"{role}.log").open("wb")
        processes[role] = subprocess.Popen(
            [*as_image_user(), program, *command[1:]], cwd=image_root / "app", env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def answers(url: str) -> bool:
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        for port in (web_port, worker_port, sandbox_port):
            wait_until(lambda port=port: answers(f"http://127.0.0.1:{port}/healthz"), timeout=30, interval=0.2)
        ready = requests.get(f"http://127.0.0.1:{web_port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["redis"] == "ok"
        # The console's templates and stylesheet are in the installed package, not only in the checkout.
        sign_in = requests.get(f"http://127.0.0.1:{web_port}/console/sign-in", timeout=5)
        assert sign_in.status_code == 200 and "Sign in" in sign_in.text
        assert requests.get(f"http://127.0.0.1:{web_port}/console/static/console.css", timeout=5).status_code == 200
        for role in roles:
            assert processes[role].poll() is None, (tmp_path / f"{role}.log").read_text()
        # The image's HEALTHCHECK, as Docker runs it inside each role's container.
        for port_env in ({"PORT": str(web_port)}, {"RELAY_WORKER_PORT": str(worker_port)}):
            check_env = {**image_env(image_root), "PORT": "1", "RELAY_WORKER_PORT": "1", "RELAY_SANDBOX_PORT": "1",
                         **port_env}  # fmt: skip
            check = subprocess.run([*as_image_user(), "relay", "healthcheck"], env=check_env, capture_output=True)
            assert check.returncode == 0, check
        nothing = {**image_env(image_root), "PORT": "1", "RELAY_WORKER_PORT": "1", "RELAY_SANDBOX_PORT": "1"}
        assert subprocess.run([*as_image_user(), "relay", "healthcheck"], env=nothing, capture_output=True).returncode
        web_log = (tmp_path / "web.log").read_text().splitlines()
        assert web_log and all(line.startswith("{") for line in web_log), web_log[:5]
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
