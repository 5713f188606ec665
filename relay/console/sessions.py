"""Signing in to the console and the sessions that follow.

Who may sign in (RELAY_API_TOKEN, always as `api-token`, or a named account from
RELAY_CONSOLE_USERS); how many failed sign-ins one client address gets, whatever names it
types (`relay:console:sign-in:<address>`); and sessions kept in Redis
(`relay:console:session:<id>`: the operator and a fingerprint of the credential used), so that
signing out, or changing that credential, ends a session for every copy of its cookie. The
signed cookie carries only the session's random id, Flask-WTF's CSRF token and any flashed
message; checking it costs one GET per console page.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

import redis
from flask import Flask, Request, current_app, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.security import check_password_hash

from relay.config import Settings
from relay.store import PREFIX

#: Who a sign-in with RELAY_API_TOKEN is recorded as: the token is nobody's in particular, so a
#: name typed with it is not believed.
TOKEN_OPERATOR = "api-token"
#: Failed sign-ins allowed per client address in SIGN_IN_WINDOW_SECONDS, whatever names are typed.
SIGN_IN_ATTEMPTS = 10
#: The window starts at the first failure; the address may try again once it ends.
SIGN_IN_WINDOW_SECONDS = 15 * 60
#: A session lasts this long from sign-in.
SESSION_HOURS = 12
SIGN_IN_KEY = f"{PREFIX}console:sign-in:"
SESSION_KEY = f"{PREFIX}console:session:"


class ConsoleSessions(SecureCookieSessionInterface):
    """The signed session cookie, read only under /console (the cookie's path): webhook and API
    calls carry none, and checking for one on each of them costs as much as a Redis round trip."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith("/console"):
            return None  # Flask stands a null session in, which refuses writes
        return super().open_session(app, request)


def derived_key(settings: Settings) -> str:
    """Without RELAY_CONSOLE_SECRET_KEY, a key every process derives alike from the credentials,
    so that changing any of them also invalidates every cookie."""
    material = (settings.api_token or "") + "|" + ",".join(f"{n}:{h}" for n, h in settings.console_users)
    return hmac.new(b"knock-relay console session", material.encode(), hashlib.sha256).hexdigest()


# Credentials ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    operator: str
    #: The secret that matched: the API token, or the account's password hash.
    credential: str


def check_credentials(settings: Settings, name: str, password: str) -> SignedIn | None:
    """Who these credentials sign in, or None. The token is compared whatever the name, so that a
    name typed with it changes nothing."""
    found = None
    if settings.api_token and hmac.compare_digest(password.encode(), settings.api_token.encode()):
        found = SignedIn(TOKEN_OPERATOR, settings.api_token)
    for user, password_hash in settings.console_users:
        if hmac.compare_digest(user.encode(), name.encode()) and check_password_hash(password_hash, password):
            found = SignedIn(user, password_hash)
    return found


def _current_credentials(settings: Settings, operator: str) -> list[str]:
    """The secrets that sign this operator in today (none once the account is removed)."""
    credentials = [password_hash for user, password_hash in settings.console_users if user == operator]
    if operator == TOKEN_OPERATOR and settings.api_token:
        credentials.append(settings.api_token)
    return credentials


def _fingerprint(credential: str) -> str:
    """Keyed with the cookie key, so that what Redis holds gives no way to guess the credential."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, credential.encode(), hashlib.sha256).hexdigest()


# Failed sign-ins -----------------------------------------------------------------------------


def _count(pipe: redis.client.Pipeline, key: str, change: int) -> None:
    # A new counter gets the window as its expiry; an existing one keeps its own, so that
    # further attempts never push the end of the window back.
    pipe.set(key, 0, ex=SIGN_IN_WINDOW_SECONDS, nx=True)
    pipe.incrby(key, change)


def take_attempt(client: redis.Redis, address: str) -> int:
    """Count a sign-in attempt from this address before its password is checked (so that attempts
    sent in parallel cannot all slip under the limit). 0 when it may go ahead, else the seconds
    left until the window ends."""
    pipe = client.pipeline()
    _count(pipe, SIGN_IN_KEY + address, 1)
    pipe.ttl(SIGN_IN_KEY + address)
    _, attempts, seconds_left = pipe.execute()
    return 0 if attempts <= SIGN_IN_ATTEMPTS else max(seconds_left, 1)


def give_back_attempt(client: redis.Redis, address: str) -> None:
    """A sign-in that succeeded is not a failure. Only its own attempt is given back: a success
    never clears the count, or anyone who knows one password could guess at the others."""
    pipe = client.pipeline()
    _count(pipe, SIGN_IN_KEY + address, -1)
    pipe.execute()


# Sessions ------------------------------------------------------------------------------------


def start_session(client: redis.Redis, signed_in: SignedIn) -> None:
    """A new session with a new id (an id known before sign-in is worth nothing after it)."""
    record = {"operator": signed_in.operator, "credential": _fingerprint(signed_in.credential)}
    session_id = secrets.token_urlsafe(32)
    pipe = client.pipeline()
    if "id" in session:
        pipe.delete(SESSION_KEY + session["id"])
    pipe.set(SESSION_KEY + session_id, json.dumps(record), ex=SESSION_HOURS * 3600)
    pipe.execute()
    session.clear()
    session.permanent = True
    session["id"] = session_id


def end_session(client: redis.Redis) -> None:
    """Sign out: the record goes, so every copy of the cookie stops working."""
    if "id" in session:
        client.delete(SESSION_KEY + session["id"])
    session.clear()


def session_operator(client: redis.Redis, settings: Settings) -> str | None:
    """The operator this request's session belongs to; None without a session, or when it has
    ended: it expired, was signed out, or the credential it was opened with changed or went.
    The id of an ended session is dropped from the cookie."""
    if "id" not in session:
        return None
    raw = client.get(SESSION_KEY + session["id"])
    record = json.loads(raw) if raw else {}
    operator = record.get("operator")
    if operator and any(
        hmac.compare_digest(record["credential"], _fingerprint(credential))
        for credential in _current_credentials(settings, operator)
    ):
        return str(operator)
    session.pop("id")
    return None
