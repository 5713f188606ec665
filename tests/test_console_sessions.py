"""Signing in to the console and the sessions that follow, through the Flask test client: who a
sign-in is recorded as, the limit on failed sign-ins per client address, sessions that sign-out
and credential changes end, and what a page or form does once its session has ended."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.security import generate_password_hash

from relay.app import create_app
from relay.audit import recent_actions
from relay.console import SESSION_ENDED, STALE_FORM, sessions
from tests.conftest import Sandbox
from tests.helpers import API_TOKEN, BEARER, CONSOLE_PASSWORD, CONSOLE_USER, delivery, wait_until
from tests.test_console import csrf_token, dead_delivery, sign_in

COOKIE = "relay_console"
SESSION_KEYS = "relay:console:session:*"


def client_at(app: Any, address: str, forwarded_for: str | None = None) -> Any:
    """A test client whose requests come from `address` (and carry X-Forwarded-For when given)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    if forwarded_for:
        client.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client


def fail_to_sign_in(client: Any, times: int) -> None:
    for attempt in range(times):
        assert sign_in(client, name=f"guess{attempt}", password=f"guess{attempt}").status_code == 401


def copy_cookie(source: Any, target: Any) -> Any:
    cookie = source.get_cookie(COOKIE, path="/console")
    target.set_cookie(COOKIE, cookie.value, path="/console")
    return target


def sign_out(client: Any) -> None:
    assert client.post("/console/sign-out", data={"csrf_token": csrf_token(client, "/console/")}).status_code == 302


def test_a_named_account_or_the_api_token_signs_in(client: Any, redis_client: Any) -> None:
    response = sign_in(client)
    assert (response.status_code, response.headers["Location"]) == (302, "/console/")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie
    assert client.get("/console/").status_code == 200
    other = create_app(client.application.extensions["relay"].settings).test_client()
    assert sign_in(other, name="", password=API_TOKEN).status_code == 302
    assert [a["operator"] for a in recent_actions(redis_client)] == ["api-token", CONSOLE_USER]


def test_the_api_token_signs_in_as_api_token_whatever_name_is_typed(client: Any, redis_client: Any) -> None:
    assert sign_in(client, name="erin", password=API_TOKEN).status_code == 302
    assert recent_actions(redis_client)[0]["operator"] == "api-token"
    page = client.get("/console/").text
    assert '<span class="who">api-token</span>' in page and "erin" not in page


def test_sign_in_never_sends_you_to_another_site(client: Any) -> None:
    for target in ("https://evil.example/console", "//evil.example/console", "/console\\@evil.example"):
        assert sign_in(client, next=target).headers["Location"] == "/console/"
    assert sign_in(client, next="/console/directory?q=P1").headers["Location"] == "/console/directory?q=P1"


def test_failed_sign_ins_are_limited_per_address_whatever_the_names(app: Any) -> None:
    client = client_at(app, "192.0.2.10")
    fail_to_sign_in(client, 10)  # a fresh name each time
    for name, password in ((CONSOLE_USER, CONSOLE_PASSWORD), ("erin", API_TOKEN), ("", API_TOKEN)):
        locked = sign_in(client, name=name, password=password)  # even the right password
        assert locked.status_code == 429
        assert 0 < int(locked.headers["Retry-After"]) <= sessions.SIGN_IN_WINDOW_SECONDS
    # Without trusted proxies, X-Forwarded-For is the client's own say-so and changes nothing.
    assert sign_in(client_at(app, "192.0.2.10", forwarded_for="198.51.100.1")).status_code == 429
    assert sign_in(client_at(app, "192.0.2.11")).status_code == 302  # another address is not locked out


def test_sign_ins_that_succeed_neither_count_nor_clear_the_failures(app: Any) -> None:
    client = client_at(app, "192.0.2.30")
    for _ in range(sessions.SIGN_IN_ATTEMPTS + 1):
        assert sign_in(client, name="", password=API_TOKEN).status_code == 302
    fail_to_sign_in(client, sessions.SIGN_IN_ATTEMPTS - 1)
    assert sign_in(client, name="", password=API_TOKEN).status_code == 302
    fail_to_sign_in(client, 1)  # knowing one password buys no more guesses at the others
    assert sign_in(client).status_code == 429


def test_a_sign_in_lockout_ends_after_its_window(app: Any, redis_client: Any) -> None:
    client = client_at(app, "192.0.2.20")
    fail_to_sign_in(client, 10)
    assert sign_in(client).status_code == 429
    # The window is the counter's expiry in Redis: bring its end forward to one second from now.
    redis_client.expire(sessions.SIGN_IN_KEY + "192.0.2.20", 1)
    locked = sign_in(client)
    assert (locked.status_code, locked.headers["Retry-After"]) == (429, "1")
    # Tries while locked out do not push the end of the window back.
    wait_until(lambda: sign_in(client).status_code == 302, timeout=5, interval=0.2)


def test_behind_trusted_proxies_the_limit_counts_the_forwarded_client_address(make_settings: Any) -> None:
    app = create_app(make_settings(RELAY_TRUSTED_PROXIES="1"))
    ingress = "10.0.0.1"  # every request arrives from the ingress, which appends the client's address
    fail_to_sign_in(client_at(app, ingress, forwarded_for="198.51.100.7"), 10)
    assert sign_in(client_at(app, ingress, forwarded_for="198.51.100.7")).status_code == 429
    forged = client_at(app, ingress, forwarded_for="203.0.113.1, 198.51.100.7")  # the client's own entry first
    assert sign_in(forged).status_code == 429
    assert sign_in(client_at(app, ingress, forwarded_for="198.51.100.8")).status_code == 302


def test_the_cookie_carries_only_a_session_id_and_redis_no_secret(client: Any, redis_client: Any) -> None:
    sign_in(client, password=API_TOKEN)
    client.get("/console/")  # a page puts the CSRF token in the session
    app = client.application
    cookie = app.session_interface.get_signing_serializer(app).loads(client.get_cookie(COOKIE, path="/console").value)
    assert set(cookie) == {"_permanent", "id", "csrf_token"}
    (key,) = redis_client.keys(SESSION_KEYS)
    assert key.decode() == f"relay:console:session:{cookie['id']}"
    assert json.loads(redis_client.get(key))["operator"] == "api-token"
    assert API_TOKEN.encode() not in redis_client.get(key)
    assert 0 < redis_client.ttl(key) <= sessions.SESSION_HOURS * 3600


def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(client: Any) -> None:
    sign_in(client)
    copy = copy_cookie(client, client.application.test_client())
    assert copy.get("/console/").status_code == 200
    sign_out(client)
    for browser in (copy, client):
        sent_back = browser.get("/console/deliveries")
        assert sent_back.headers["Location"].startswith("/console/sign-in?next=")
    assert SESSION_ENDED in copy.get(sent_back.headers["Location"]).text


def test_changed_credentials_end_sessions_even_with_a_fixed_secret_key(make_settings: Any) -> None:
    key = {"RELAY_CONSOLE_SECRET_KEY": "a-fixed-key-for-every-process"}
    before = make_settings(**key)
    app = create_app(before)
    dana, token = app.test_client(), app.test_client()
    sign_in(dana)
    sign_in(token, name="", password=API_TOKEN)

    def signed_in_under(settings: Any, browser: Any) -> bool:
        """Whether the browser's cookie still opens a page in a process started with `settings`."""
        return copy_cookie(browser, create_app(settings).test_client()).get("/console/").status_code == 200

    assert signed_in_under(before, dana) and signed_in_under(before, token)
    new_token = make_settings(**key, RELAY_API_TOKEN="a-new-token")
    assert not signed_in_under(new_token, token) and signed_in_under(new_token, dana)
    new_hash = generate_password_hash("another long passphrase", method="pbkdf2:sha256:1000")
    new_password = make_settings(**key, RELAY_CONSOLE_USERS=f"{CONSOLE_USER}:{new_hash}")
    assert not signed_in_under(new_password, dana) and signed_in_under(new_password, token)
    account_removed = make_settings(**key, RELAY_CONSOLE_USERS="")
    assert not signed_in_under(account_removed, dana)


def test_a_form_sent_after_its_session_ended_goes_to_sign_in_and_back_to_its_page(
    client: Any, sandbox: Sandbox, worker: Any, redis_client: Any
) -> None:
    delivery_id = dead_delivery(client, sandbox)
    page = f"/console/deliveries/{delivery_id}"
    sign_in(client)
    form = {"csrf_token": csrf_token(client, page)}
    for key in redis_client.keys(SESSION_KEYS):
        redis_client.pexpire(key, 1)  # the session's time is up while the page is open
    wait_until(lambda: not redis_client.keys(SESSION_KEYS))
    cookie_gone = client.application.test_client()  # the browser has dropped the expired cookie too
    for browser in (client, cookie_gone):
        sent_back = browser.post(f"{page}/replay", data=form, headers={"Referer": f"http://localhost{page}"})
        assert sent_back.headers["Location"].startswith("/console/sign-in?next=")
        shown = browser.get(sent_back.headers["Location"]).text
        assert SESSION_ENDED in shown and f'name="next" value="{page}"' in shown
    assert delivery(client, delivery_id)["status"] == "dead"  # nothing was replayed
    assert sign_in(client, next=page).headers["Location"] == page


def test_a_sign_in_form_whose_session_is_gone_asks_again(client: Any) -> None:
    form = {"csrf_token": csrf_token(client), "name": CONSOLE_USER, "password": CONSOLE_PASSWORD,
            "next": "/console/directory"}  # fmt: skip
    cookie_gone = client.application.test_client()
    sent_back = cookie_gone.post("/console/sign-in", data=form)
    assert sent_back.headers["Location"].startswith("/console/sign-in?next=")
    shown = cookie_gone.get(sent_back.headers["Location"]).text
    assert SESSION_ENDED in shown and 'name="next" value="/console/directory"' in shown


def test_a_form_from_before_the_latest_sign_in_changes_nothing_and_says_so(client: Any) -> None:
    sign_in(client)
    form = {"csrf_token": csrf_token(client, "/console/directory"), "prospectId": "P1", "emails": "a@example.com"}
    sign_in(client)  # in another tab: a new session, with a new CSRF token
    refused = client.post(
        "/console/directory/prospects", data=form, headers={"Referer": "http://localhost/console/directory"}
    )
    assert refused.headers["Location"] == "/console/directory"
    assert STALE_FORM in client.get("/console/directory").text
    assert client.get("/v1/prospects/P1", headers=BEARER).status_code == 404
