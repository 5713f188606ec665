"""A throwaway Postfix (Debian's package) for the tests: a private instance with its own
configuration, queue and data directories in one folder, started with `postfix -c DIR start`.

It listens on one loopback port only (`inet_interfaces = loopback-only`), delivers nothing
locally (`mydestination` empty, no aliases) and relays nothing anywhere: `relayhost` names a
listener of the test's own, so any mail Postfix tries to send on (a bounce to the sender, a
recipient the transport map missed) is seen there instead of leaving the machine. It logs to a
file of its own (postlogd's `maillog_file`), since a test machine runs no syslog. Postfix runs
as root, so the tests that use it need root; `unavailable()` says why when they cannot run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SBIN = Path("/usr/sbin")
#: The package's own master.cf, as an integrator's starts (/etc/postfix/master.cf is a conffile).
MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


def unavailable() -> str | None:
    """Why a private Postfix cannot run here, or None."""
    if not (SBIN / "postfix").exists() or not MASTER_CF.exists():
        return "Debian's postfix package is not installed (`apt-get install postfix`; .ci/run does)"
    if os.geteuid() != 0:
        return "a Postfix instance must be started as root"
    return None


class Trap:
    """A TCP listener on loopback that records every connection and answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.connections: list[tuple[str, int]] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:  # closed
                return
            self.connections.append(peer)
            conn.close()

    def close(self) -> None:
        self.sock.close()


@dataclass
class Postfix:
    root: Path
    port: int
    relayhost: str
    log_offset: int = field(default=0, init=False)

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def maillog(self) -> Path:
        return self.root / "maillog"

    def configure(self, main_cf: str, master_cf: str) -> None:
        """Write main.cf (the private instance's settings, then `main_cf`) and master.cf (the
        package's, smtpd on this instance's loopback port, then `master_cf`)."""
        self.config.mkdir(parents=True)
        self.queue_dir.mkdir()
        data = self.root / "data"
        data.mkdir()
        shutil.chown(data, "postfix")  # master.lock, caches: written by Postfix's own user
        private = f"""\
# A private instance: its own directories, loopback only, no local mail, nothing sent elsewhere
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {data}
myhostname = mx.relay-tests.invalid
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = {self.relayhost}
maillog_file = {self.maillog}
maillog_file_prefixes = {self.root}
"""
        (self.config / "main.cf").write_text(private + main_cf)
        master = MASTER_CF.read_text().replace("\nsmtp      inet", f"\n127.0.0.1:{self.port} inet", 1)
        assert f"127.0.0.1:{self.port} inet" in master, "the package's master.cf has no smtpd service line"
        (self.config / "master.cf").write_text(master.rstrip("\n") + "\n" + master_cf)
        # A chroot needs copies of /etc files inside the queue (the init script makes them): none here.
        self.run("postconf", "-F", "*/*/chroot = n")

    def run(self, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """One of Postfix's commands, on this instance."""
        done = subprocess.run([str(SBIN / command), "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"{command} {' '.join(args)}: {done.stdout}{done.stderr}{self.log()}")
        return done

    def start(self) -> None:
        self.run("postfix", "start")

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextmanager
    def without(self, parameter: str) -> Iterator[None]:
        """The instance with `parameter` taken out of main.cf (as if it had been left out), until
        the block ends."""
        main_cf = self.config / "main.cf"
        saved = main_cf.read_text()
        self.run("postconf", "-X", parameter)
        self.restart()
        try:
            yield
        finally:
            main_cf.write_text(saved)
            self.restart()

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """`postfix stop`, then whatever of the instance is still there (master is a session leader,
        and its daemons and pipe commands are in its session), killed."""
        pid = self.master_pid()
        self.run("postfix", "stop", check=False)
        if pid is None:
            return
        deadline = time.monotonic() + 10
        while self._session(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for leftover in self._session(pid):
            try:
                os.kill(leftover, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def _session(sid: int) -> list[int]:
        """Live (not zombie) processes of session `sid`."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[3]) == sid:
                found.append(int(entry.name))
        return found

    def queue(self) -> list[dict[str, Any]]:
        """The queued messages, as `postqueue -j` describes them."""
        return [json.loads(line) for line in self.run("postqueue", "-j").stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """`postqueue -f`: try every queued message now, dead destinations included."""
        self.run("postqueue", "-f")

    def purge(self) -> None:
        self.run("postsuper", "-d", "ALL", check=False)

    def log(self) -> str:
        """What the instance logged since `mark_log()`."""
        try:
            with self.maillog.open("rb") as file:
                file.seek(self.log_offset)
                return file.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mark_log(self) -> None:
        self.log_offset = self.maillog.stat().st_size if self.maillog.exists() else 0

    def send(
        self, sender: str, recipients: Sequence[str], message: bytes, *, smtputf8: bool = False, size: bool = True
    ) -> None:
        """Submit over SMTP on loopback, as a sending MTA does: declaring the message's SIZE, as
        smtplib does, unless `size` is false (Postfix then counts the bytes as they come)."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as smtp:
            if size:
                smtp.sendmail(sender, list(recipients), message, mail_options=["SMTPUTF8"] if smtputf8 else [])
                return
            smtp.ehlo()
            code, answer = smtp.mail(sender, ["SMTPUTF8"] if smtputf8 else [])
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, answer, sender)
            for recipient in recipients:
                code, answer = smtp.rcpt(recipient)
                if code != 250:
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, answer)})
            code, answer = smtp.data(message)
            if code != 250:
                raise smtplib.SMTPDataError(code, answer)
