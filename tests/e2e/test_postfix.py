"""A real Postfix (Debian's package) delivering to contrib/knock-relay-pipe, configured with the very
lines docs/providers/mime.md tells integrators to copy (its master.cf, main.cf and transport map,
read from the page; only the relay's URL, the paths, and the pipe's user differ here), in front of
the real gunicorn, worker, Knock sandbox and Redis.

The pipe's own tests (test_mta_pipe.py) show which exit status it gives; these show what Postfix
does with it, with the documented settings: that mail is deferred and kept, never bounced, while the
relay is down or refuses the credentials, and goes through once the relay takes it; that a message
to two prospects is two calls and one email, and without the documented recipient limit is kept
rather than split; that a UTF-8 address arrives intact; and that a message just under the documented
`message_size_limit` is one the relay takes, while one over it never gets into Postfix's queue.

The Postfix instance is private (tests/e2e/postfix.py): its own directories, loopback only, and a
listener of the test's own as its relayhost, so that a bounce or mail routed anywhere but the pipe
would be caught there rather than leave the machine.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import BIN, ROOT, Stack, spawn, stop
from tests.e2e.postfix import Postfix, Trap, unavailable
from tests.helpers import BASIC_PASS, BASIC_USER, free_port, mime, wait_until

pytestmark = pytest.mark.e2e
DOC = ROOT / "docs" / "providers" / "mime.md"
PIPE = ROOT / "contrib" / "knock-relay-pipe"
#: The unprivileged user the pipe runs as here, in place of the documented `knockrelay`.
PIPE_USER = "nobody"


@dataclass(frozen=True)
class Documented:
    """What docs/providers/mime.md tells an integrator to put into Postfix's configuration."""

    master_cf: str
    main_cf: str
    transport: str

    @classmethod
    def read(cls) -> Documented:
        """The page's fenced blocks (also when indented under a list item) for master.cf and main.cf,
        and the transport map's line (`DOMAIN  SERVICE:`), in the text or a block of its own."""
        text = DOC.read_text()
        fenced = re.findall(r"^([ \t]*)```[^\n]*\n(.*?)^[ \t]*```", text, re.MULTILINE | re.DOTALL)
        blocks = [textwrap.dedent(block) for _, block in fenced]
        (master_cf,) = [b for b in blocks if re.search(r"^\S+\s+unix\s.*\spipe$", b, re.MULTILINE)]
        (main_cf,) = [b for b in blocks if "transport_maps" in b]
        service = re.escape(master_cf.split()[0])
        line = rf"[^`\s]+[ \t]+{service}:"
        transport = re.search(rf"`({line})`", text) or re.search(rf"^({line})$", "\n".join(blocks), re.MULTILINE)
        assert transport, "the page no longer gives the transport map's line"
        return cls(master_cf, main_cf, transport.group(1))

    def setting(self, name: str) -> str:
        found = re.search(rf"^{name}\s*=\s*(.*)$", self.main_cf, re.MULTILINE)
        assert found, f"the documented main.cf sets no {name}"
        return found.group(1).strip()

    @property
    def service(self) -> str:
        return self.master_cf.split()[0]

    @property
    def domain(self) -> str:
        return self.setting("relay_domains")

    @property
    def size_limit(self) -> int:
        return int(self.setting("message_size_limit"))


DOCUMENTED = Documented.read()


def substituted(text: str, replacements: dict[str, str]) -> str:
    """`text` with each documented value replaced by this environment's, each of which must be there."""
    for documented, here in replacements.items():
        assert documented in text, f"{documented!r} is no longer in the documented configuration:\n{text}"
        text = text.replace(documented, here)
    return text


class Relay:
    """The relay's web process (gunicorn) on a port of its own, which a test can take down and bring
    back; its body limit is the documented message_size_limit, the least the page allows."""

    def __init__(self, stack: Stack) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**stack.env, "HOST": "127.0.0.1", "PORT": str(port),
                    "RELAY_MAX_REQUEST_BYTES": str(DOCUMENTED.size_limit)}  # fmt: skip
        self.log = stack.logs / "postfix-web.log"
        self.process: subprocess.Popen[bytes] | None = None

    def up(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def start(self) -> None:
        self.process = spawn([str(BIN / "gunicorn"), "wsgi:app"], self.env, self.log)
        wait_until(self.up, timeout=30, interval=0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


@dataclass
class Mta:
    postfix: Postfix
    relay: Relay
    trap: Trap
    credentials: Path
    e2e: Stack

    def send(self, recipients: list[str], message: bytes, *, smtputf8: bool = False) -> None:
        self.postfix.send("renter@example.com", recipients, message, smtputf8=smtputf8)

    def outcomes(self, recipient: str) -> list[str]:
        """Postfix's log lines, since the test began, of each call of the pipe for `recipient`."""
        line = rf"^.* to=<{re.escape(recipient)}>, relay={DOCUMENTED.service}, .* status=\w+ .*$"
        return re.findall(line, self.postfix.log(), re.MULTILINE)

    def outcome(self, recipient: str, call: int = 1, timeout: float = 30) -> str:
        """The log line of the `call`-th call of the pipe for `recipient`, once Postfix has made it."""
        return wait_until(lambda: len(lines := self.outcomes(recipient)) >= call and lines[call - 1], timeout=timeout)  # type: ignore[no-any-return]

    def deliveries(self, prospect_id: str) -> list[dict[str, Any]]:
        found = self.e2e.api("GET", "/v1/deliveries", params={"prospectId": prospect_id}).json()["deliveries"]
        return [self.e2e.delivery(d["id"]) for d in found]

    def delivered_once(self, prospect_id: str, timeout: float = 30) -> dict[str, Any]:
        """The one delivery for the prospect, once logged in Knock; that it was logged there once."""
        (delivery,) = wait_until(lambda: self.deliveries(prospect_id), timeout=timeout)
        self.e2e.wait_for_status(delivery["id"], "delivered", timeout=timeout)
        assert len(self.deliveries(prospect_id)) == 1
        assert len(self.e2e.sandbox.events(prospect_id)) == 1
        return delivery

    def assert_nothing_bounced_or_sent_elsewhere(self) -> None:
        log = self.postfix.log()
        assert "status=bounced" not in log and "sender non-delivery notification" not in log, log
        assert self.trap.connections == [], "Postfix sent mail on (a bounce, or a recipient not for the pipe)"


@pytest.fixture(scope="module")
def relay(stack: Stack) -> Iterator[Relay]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    relay = Relay(stack)
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def instance(relay: Relay) -> Iterator[tuple[Postfix, Trap, Path]]:
    """A private Postfix set up as the page says, its pipe posting to `relay`."""
    root = Path(tempfile.mkdtemp(prefix="relay-postfix-"))
    root.chmod(0o755)  # the pipe's user reads its own script and credentials in here
    pipe = root / "knock-relay-pipe"
    shutil.copyfile(PIPE, pipe)  # "copy it to the MTA host as /usr/local/bin/knock-relay-pipe, mode 0755"
    pipe.chmod(0o755)
    credentials = root / "credentials"
    credentials.write_text(f"{BASIC_USER}:{BASIC_PASS}\n")
    shutil.chown(credentials, PIPE_USER)
    credentials.chmod(0o400)  # "owned by the pipe's user, mode 0400"
    trap = Trap()
    postfix = Postfix(root, free_port(), relayhost=f"[127.0.0.1]:{trap.port}")
    transport_map = postfix.config / "transport"
    master_cf = substituted(DOCUMENTED.master_cf, {
        "https://relay.example.com/webhooks/mime": f"{relay.url}/webhooks/mime",
        "/etc/knock-relay/credentials": str(credentials),
        "/usr/local/bin/knock-relay-pipe": str(pipe),
        "user=knockrelay ": f"user={PIPE_USER} ",
    })  # fmt: skip
    main_cf = substituted(DOCUMENTED.main_cf, {"hash:/etc/postfix/transport": f"hash:{transport_map}"})
    try:
        postfix.configure(main_cf, master_cf)
        transport_map.write_text(DOCUMENTED.transport + "\n")
        postfix.run("postmap", str(transport_map))
        postfix.start()
        yield postfix, trap, credentials
    finally:
        postfix.stop()
        trap.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def mta(e2e: Stack, relay: Relay, instance: tuple[Postfix, Trap, Path]) -> Iterator[Mta]:
    postfix, trap, credentials = instance
    if relay.process is None:
        relay.start()
    credentials.write_text(f"{BASIC_USER}:{BASIC_PASS}\n")
    postfix.purge()
    trap.connections.clear()
    postfix.mark_log()
    yield Mta(postfix, relay, trap, credentials, e2e)
    print(postfix.log())  # shown when the test fails


def address(local: str) -> str:
    return f"{local}@{DOCUMENTED.domain}"


def test_mail_is_kept_while_the_relay_is_down_and_delivered_once_when_flushed(mta: Mta) -> None:
    mta.e2e.sandbox.seed("PFXDOWN", agent="kim")
    recipient = address("leasing+prospect-PFXDOWN")
    mta.relay.stop()
    mta.send([recipient], mime(to=recipient, message_id="<postfix-down@example.com>"))
    deferred = mta.outcome(recipient)
    assert "status=deferred" in deferred and "knock-relay-pipe: the relay did not answer" in deferred
    # Postfix logs the pipe's status before its queue manager moves the message to the deferred queue.
    (queued,) = wait_until(lambda: [q for q in mta.postfix.queue() if q["queue_name"] == "deferred"], timeout=10)
    assert [r["address"] for r in queued["recipients"]] == [recipient]
    assert mta.deliveries("PFXDOWN") == []
    mta.assert_nothing_bounced_or_sent_elsewhere()

    mta.relay.start()
    mta.postfix.flush()
    assert "status=sent" in mta.outcome(recipient, call=2)
    wait_until(lambda: mta.postfix.queue() == [], timeout=10)
    mta.delivered_once("PFXDOWN")
    assert len(mta.outcomes(recipient)) == 2
    mta.assert_nothing_bounced_or_sent_elsewhere()


def test_wrong_credentials_defer_mail_rather_than_bounce_it(mta: Mta) -> None:
    mta.e2e.sandbox.seed("PFX401", agent="kim")
    recipient = address("leasing+prospect-PFX401")
    mta.credentials.write_text(f"{BASIC_USER}:not-the-password\n")
    mta.send([recipient], mime(to=recipient, message_id="<postfix-401@example.com>"))
    deferred = mta.outcome(recipient)
    assert "status=deferred" in deferred and "knock-relay-pipe: the relay answered HTTP 401" in deferred
    # Postfix logs the pipe's status before its queue manager moves the message to the deferred queue.
    (queued,) = wait_until(lambda: [q for q in mta.postfix.queue() if q["queue_name"] == "deferred"], timeout=10)
    assert mta.deliveries("PFX401") == []
    mta.assert_nothing_bounced_or_sent_elsewhere()

    # The operator fixes the file: the kept message goes through, once.
    mta.credentials.write_text(f"{BASIC_USER}:{BASIC_PASS}\n")
    mta.postfix.flush()
    assert "status=sent" in mta.outcome(recipient, call=2)
    mta.delivered_once("PFX401")
    assert len(mta.outcomes(recipient)) == 2
    mta.assert_nothing_bounced_or_sent_elsewhere()


def test_a_message_to_two_prospects_is_two_pipe_calls_and_one_email_logged_for_each(mta: Mta) -> None:
    mta.e2e.sandbox.seed("PFXONE", agent="kim")
    mta.e2e.sandbox.seed("PFXTWO", agent="pat")
    first, second = address("leasing+prospect-PFXONE"), address("leasing+prospect-PFXTWO")
    # Both addresses in To: the first call already routes the email to both prospects, so the second
    # is a duplicate by its Message-ID.
    mta.send([first, second], mime(to=f"{first}, {second}", message_id="<postfix-two@example.com>"))
    # Two calls of the pipe, one recipient each: the documented recipient limit is in force.
    assert "status=sent" in mta.outcome(first) and "status=sent" in mta.outcome(second)
    one, two = mta.delivered_once("PFXONE"), mta.delivered_once("PFXTWO")
    assert len(mta.outcomes(first)) == len(mta.outcomes(second)) == 1
    assert one["messageId"] == two["messageId"] == "postfix-two@example.com"
    (logged_one,), (logged_two,) = mta.e2e.sandbox.events("PFXONE"), mta.e2e.sandbox.events("PFXTWO")
    assert (logged_one["agent"]["username"], logged_two["agent"]["username"]) == ("kim", "pat")
    # Nothing else: no other delivery, no other call to Knock, no mail sent on by Postfix.
    assert len(mta.e2e.api("GET", "/v1/deliveries").json()["deliveries"]) == 2
    assert len(mta.e2e.sandbox.requests()) == 2
    mta.assert_nothing_bounced_or_sent_elsewhere()
    wait_until(lambda: mta.postfix.queue() == [], timeout=10)


def test_without_the_recipient_limit_mail_is_deferred_rather_than_split_or_lost(mta: Mta) -> None:
    """What the page says of a missing or misnamed recipient limit: Postfix then hands the pipe both
    recipients in one call (`${recipient}` becomes one argument each), which the pipe refuses with 75,
    so the message waits, whole, for the setting to be put right."""
    mta.e2e.sandbox.seed("PFXNOLIMIT1", agent="kim")
    mta.e2e.sandbox.seed("PFXNOLIMIT2", agent="pat")
    first, second = address("leasing+prospect-PFXNOLIMIT1"), address("leasing+prospect-PFXNOLIMIT2")
    with mta.postfix.without(f"{DOCUMENTED.service}_destination_recipient_limit"):
        mta.send([first, second], mime(to=f"{first}, {second}", message_id="<postfix-no-limit@example.com>"))
        for recipient in (first, second):
            deferred = mta.outcome(recipient)
            assert "status=deferred" in deferred
            assert "knock-relay-pipe: expected SENDER RECIPIENT, got 3 arguments" in deferred
        (queued,) = wait_until(lambda: [q for q in mta.postfix.queue() if q["queue_name"] == "deferred"], timeout=10)
        assert len(queued["recipients"]) == 2
        assert mta.e2e.api("GET", "/v1/deliveries").json()["deliveries"] == []
        mta.assert_nothing_bounced_or_sent_elsewhere()
    # The documented setting back in place: the kept message reaches both prospects, once each.
    mta.postfix.flush()
    for recipient in (first, second):
        assert "status=sent" in mta.outcome(recipient, call=2)
    mta.delivered_once("PFXNOLIMIT1")
    mta.delivered_once("PFXNOLIMIT2")
    mta.assert_nothing_bounced_or_sent_elsewhere()


def test_a_utf8_envelope_recipient_reaches_the_relay_as_utf8(mta: Mta) -> None:
    mta.e2e.sandbox.seed("PFXUTF8", agent="kim")
    recipient = address("jörg+prospect-PFXUTF8")
    # The address is in the envelope only (as for a Bcc): the relay can route by nothing else.
    mta.send([recipient], mime(message_id="<postfix-utf8@example.com>"), smtputf8=True)
    assert "status=sent" in mta.outcome(recipient)
    delivery = mta.delivered_once("PFXUTF8")
    assert recipient in delivery["recipients"]
    mta.assert_nothing_bounced_or_sent_elsewhere()


def test_a_message_just_under_the_size_limit_is_delivered_and_one_over_it_refused(mta: Mta) -> None:
    """A message just under the documented message_size_limit goes through Postfix and the relay
    (its RELAY_MAX_REQUEST_BYTES set to that limit, the least the page allows); one just over it
    Postfix refuses while the sender is still connected, so it is neither queued nor bounced."""
    mta.e2e.sandbox.seed("PFXBIG", agent="kim")
    recipient = address("leasing+prospect-PFXBIG")
    limit = DOCUMENTED.size_limit

    def sized(size: int, message_id: str) -> bytes:
        # Lines of the longest length SMTP allows: what Postfix adds to the message when it
        # delivers it (Return-Path, Received) is least offset by the CRLFs it turns into LFs.
        head = mime(to=recipient, message_id=message_id, body="")
        line = b"x" * 998 + b"\r\n"
        body = line * ((size - len(head)) // len(line))
        return head + body + b"y" * (size - len(head) - len(body))

    over = sized(limit + 1, "<postfix-over@example.com>")
    with pytest.raises(smtplib.SMTPSenderRefused) as declared:  # a sender that declares the SIZE
        mta.send([recipient], over)
    with pytest.raises(smtplib.SMTPDataError) as counted:  # and one that does not
        mta.postfix.send("renter@example.com", [recipient], over, size=False)
    for refused in (declared.value, counted.value):
        assert (refused.smtp_code, refused.smtp_error[:5]) == (552, b"5.3.4"), refused
    assert mta.postfix.queue() == []

    # Postfix counts its queue file (the envelope, and a few bytes a line) against the limit: with
    # lines this long the largest message it takes is some 32 KB under it. 64 KiB under is taken.
    under = sized(limit - 64 * 1024, "<postfix-under@example.com>")
    mta.send([recipient], under)
    assert "status=sent" in mta.outcome(recipient, timeout=60)
    delivery = mta.delivered_once("PFXBIG", timeout=60)
    assert delivery["messageId"] == "postfix-under@example.com"
    mta.assert_nothing_bounced_or_sent_elsewhere()
