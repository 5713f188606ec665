"""contrib/knock-relay-pipe, the MTA's side of /webhooks/mime, run as an MTA runs it (a process with
the message on stdin and the envelope as arguments) against the real gunicorn: the exit status is
what the MTA acts on, so every failure a retry could fix must be 75 and never bounce mail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.helpers import BASIC_PASS, BASIC_USER, free_port, mime

pytestmark = pytest.mark.e2e
PIPE = Path(__file__).resolve().parents[2] / "contrib" / "knock-relay-pipe"
EX_OK, EX_UNAVAILABLE, EX_TEMPFAIL = 0, 69, 75


def run_pipe(
    message: bytes, *args: str, url: str, credentials: Path | None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    environment = {"PATH": "/usr/bin:/bin", "KNOCK_RELAY_URL": url, "KNOCK_RELAY_TIMEOUT": "30"}
    if credentials is not None:
        environment["KNOCK_RELAY_CREDENTIALS_FILE"] = str(credentials)
    environment.update(env)
    # The MTA host's own Python, standard library only: -I ignores this project's environment.
    return subprocess.run([sys.executable, "-I", str(PIPE), *args], input=message, env=environment,
                          capture_output=True, timeout=60)  # fmt: skip


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    path = tmp_path / "credentials"
    path.write_text(f"{BASIC_USER}:{BASIC_PASS}\n")
    path.chmod(0o400)
    return path


def test_a_message_is_handed_over_with_its_utf8_envelope(e2e: Stack, credentials: Path) -> None:
    recipient = "jörg+prospect-PIPE7@reply.acme-living.com"
    done = run_pipe(mime(sender="new@example.com", message_id="<pipe-utf8@example.com>"), "new@example.com",
                    recipient, url=f"{e2e.url}/webhooks/mime", credentials=credentials)  # fmt: skip
    assert done.returncode == EX_OK, done.stderr
    found = e2e.api("GET", "/v1/deliveries", params={"prospectId": "PIPE7"}).json()["deliveries"]
    assert len(found) == 1 and recipient in e2e.delivery(found[0]["id"])["recipients"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("relay down", EX_TEMPFAIL),
        ("wrong password", EX_TEMPFAIL),
        ("no credentials file", EX_TEMPFAIL),
        ("two recipients", EX_TEMPFAIL),
        ("unreadable message", EX_UNAVAILABLE),
        ("too large", EX_UNAVAILABLE),
        ("line break in an address", EX_UNAVAILABLE),
        ("malformed port", EX_TEMPFAIL),
        ("missing CA file", EX_TEMPFAIL),
        ("negative timeout", EX_TEMPFAIL),
        ("plain http to another host", EX_TEMPFAIL),
    ],
)
def test_each_failure_is_deferred_unless_no_retry_could_fix_it(
    e2e: Stack, credentials: Path, tmp_path: Path, case: str, expected: int
) -> None:
    url, message = f"{e2e.url}/webhooks/mime", mime(message_id=f"<pipe-{case}@example.com>")
    args, creds = ["a@x.org", "b@y.org"], credentials
    if case == "relay down":
        url = f"http://127.0.0.1:{free_port()}/webhooks/mime"
    elif case == "wrong password":
        creds = tmp_path / "wrong"
        creds.write_text(f"{BASIC_USER}:guess")
    elif case == "no credentials file":
        creds = tmp_path / "absent"
    elif case == "two recipients":
        args = ["a@x.org", "b@y.org", "c@y.org"]
    elif case == "unreadable message":
        message = b"\x00\x01 not an email"
    elif case == "too large":
        message = mime(body="x" * (int(e2e.env["RELAY_MAX_REQUEST_BYTES"]) + 1))
    elif case == "line break in an address":
        args = ["a@x.org", "b@y.org\r\nX-Injected: yes"]
    extra: dict[str, str] = {}
    if case == "malformed port":
        url = url.replace(url.split(":")[2].split("/")[0], "99999999")
    elif case == "missing CA file":
        url, extra = url.replace("http://", "https://"), {"KNOCK_RELAY_CA_FILE": str(tmp_path / "absent.pem")}
    elif case == "negative timeout":
        extra = {"KNOCK_RELAY_TIMEOUT": "-1"}
    elif case == "plain http to another host":
        url = "http://relay.example.com/webhooks/mime"
    done = run_pipe(message, *args, url=url, credentials=creds, **extra)
    assert done.returncode == expected, done.stderr
    assert done.stderr.startswith(b"knock-relay-pipe: ")


def test_a_message_just_under_the_size_limit_is_taken(e2e: Stack, credentials: Path) -> None:
    limit = int(e2e.env["RELAY_MAX_REQUEST_BYTES"])
    message = mime(message_id="<pipe-large@example.com>", body="x")
    message = message + b"y" * (limit - len(message) - 1)
    done = run_pipe(
        message, "a@x.org", "leasing@acme-living.com", url=f"{e2e.url}/webhooks/mime", credentials=credentials
    )
    assert done.returncode == EX_OK, done.stderr


def test_a_relay_that_answers_a_byte_at_a_time_is_cut_off_at_the_timeout(credentials: Path) -> None:
    """KNOCK_RELAY_TIMEOUT is for the whole call, not for each read: the MTA gets its answer (75) then."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def trickle() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 60:
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                return
            time.sleep(0.5)

    threading.Thread(target=trickle, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/webhooks/mime"
    start = time.monotonic()
    done = run_pipe(mime(), "a@x.org", "b@y.org", url=url, credentials=credentials, KNOCK_RELAY_TIMEOUT="2")
    assert done.returncode == EX_TEMPFAIL and time.monotonic() - start < 10, done.stderr
    listener.close()
