"""A total deadline for outbound HTTP calls (Knock, provider APIs): connection and every read.

`requests` bounds each read, not the call: a server that sends one byte a second never trips a
ten-second read timeout, and holds the thread (and the delivery it works on) for as long as it
likes. Here a call runs inside `deadline(seconds)`: its connect and read timeouts are cut to the
time left, and a watchdog thread shuts the call's sockets down when the deadline passes, which ends
any read or write in progress at once (the status line, the headers, a TLS handshake or the body).
The error that follows is raised as DeadlineExceeded, a `requests.Timeout`.

Sockets are known to the watchdog through the connection classes of `DeadlineAdapter` (mounted by
`bounded_session`, or by a caller on its own session): a new connection registers a duplicate of
its socket as soon as it exists (a TLS wrap takes the original over before its handshake), a reused
one its socket when a request starts. Deadlines nest: an inner one never outlasts the outer.
Name resolution is the one step no deadline can interrupt (the resolver's own timeouts bound it).
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class DeadlineExceeded(requests.Timeout):
    """The call did not finish within its deadline."""


#: Errors a call whose sockets were shut down at its deadline may end with.
_CUT_SHORT = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def _shut_down(sock: Any) -> None:
    """Shut a socket down both ways, waking any thread blocked on it; nothing if it is closed already.
    `socket.socket.shutdown` itself, not an SSL socket's override, which drops its TLS state."""
    target = sock if isinstance(sock, socket.socket) else getattr(sock, "socket", None)
    if not isinstance(target, socket.socket):
        return
    try:
        socket.socket.shutdown(target, socket.SHUT_RDWR)
    except OSError:
        pass


class Deadline:
    """One call's deadline (a `time.monotonic()` value) and the sockets it uses; `outer` is the
    deadline it was opened within, if any."""

    def __init__(self, at: float, outer: Deadline | None = None) -> None:
        self.at = at
        self.outer = outer
        self.expired = False
        self._ended = False
        self._lock = threading.Lock()
        self._sockets: list[Any] = []
        self._owned: list[socket.socket] = []

    def remaining(self) -> float:
        return self.at - time.monotonic()

    @property
    def passed(self) -> bool:
        """Whether this deadline, or one it is within, expired (and shut its sockets down)."""
        return self.expired or (self.outer is not None and self.outer.passed)

    def timeouts(self, connect: float, read: float) -> tuple[float, float]:
        """`requests`' (connect, read) timeouts, neither beyond the time left; DeadlineExceeded when
        none is left, before anything is sent."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceeded("no time left before the deadline")
        return min(connect, left), min(read, left)

    def watch(self, sock: Any, *, owned: bool = False) -> None:
        """Shut `sock` down at the deadline (at once if it passed); `owned` sockets (duplicates made
        for this call) are closed when the call ends."""
        with self._lock:
            if self._ended:
                if owned:
                    sock.close()
                return
            self._sockets.append(sock)
            if owned:
                self._owned.append(sock)
            if self.expired:
                _shut_down(sock)

    def expire(self) -> None:
        """The watchdog's step at the deadline: shut down every socket the call still uses."""
        with self._lock:
            if self._ended:
                return
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)

    def end(self) -> None:
        with self._lock:
            self._ended = True
            for sock in self._owned:
                sock.close()
            self._sockets.clear()
            self._owned.clear()


class _Watchdog:
    """One thread per process that expires deadlines when they pass (started on first use)."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._due, (deadline.at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbound-deadlines", daemon=True)
                self._thread.start()
            elif self._due[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, deadline = heapq.heappop(self._due)
            deadline.expire()


_watchdog = _Watchdog()
_calls = threading.local()


def _reset_after_fork() -> None:
    """A forked child has no watchdog thread, and its lock may have been held at the fork."""
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_reset_after_fork)


def _active() -> list[Deadline]:
    """This thread's deadlines, outermost first."""
    stack: list[Deadline] | None = getattr(_calls, "stack", None)
    if stack is None:
        stack = _calls.stack = []
    return stack


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Run outbound calls made in this block (by this thread, through a DeadlineAdapter) within
    `seconds` in all, or within the enclosing deadline if that comes first. An error the calls end
    with after the deadline passed is raised as DeadlineExceeded."""
    stack = _active()
    outer = stack[-1] if stack else None
    at = time.monotonic() + seconds
    current = Deadline(min(at, outer.at) if outer else at, outer)
    stack.append(current)
    _watchdog.arm(current)
    try:
        yield current
    except _CUT_SHORT as error:
        if current.passed and not isinstance(error, DeadlineExceeded):
            raise DeadlineExceeded("the deadline passed before the call ended") from error
        raise
    finally:
        stack.remove(current)
        current.end()


def _watch_in_active_calls(sock: Any, *, duplicate: bool) -> None:
    for active in _active():
        if duplicate:
            try:
                active.watch(sock.dup(), owned=True)
            except OSError:
                continue
        else:
            active.watch(sock)


class _Watched:
    """Connection behaviour that hands the socket to the deadlines of the calls using it."""

    sock: Any

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        _watch_in_active_calls(sock, duplicate=True)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # a kept-alive connection used again
            _watch_in_active_calls(self.sock, duplicate=False)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with connections whose sockets the active deadlines can shut down."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def bounded_session() -> requests.Session:
    """A session (environment settings read as `requests.request` reads them) whose calls honour
    `deadline`."""
    session = requests.Session()
    session.mount("http://", DeadlineAdapter())
    session.mount("https://", DeadlineAdapter())
    return session
