"""The operator console in a real headless Chromium, against gunicorn, the worker, the sandbox and Redis.

Debian's `chromium`, driven by Playwright's Python package. `.ci/run` installs it when
missing and sets RELAY_REQUIRE_BROWSER=1, so there these tests run or fail; on a machine
without Chromium they skip and say why. Screenshots of every page go to
test-output/console/ (or RELAY_TEST_OUTPUT).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import ROOT, Stack
from tests.helpers import CONSOLE_PASSWORD, CONSOLE_USER, basic_auth, mime

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("RELAY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("RELAY_TEST_OUTPUT", ROOT / "test-output")) / "console"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("RELAY_REQUIRE_BROWSER"):
            pytest.fail("RELAY_REQUIRE_BROWSER is set but no Chromium was found (apt-get install chromium)")
        pytest.skip(
            "no Chromium on this machine (Debian: apt-get install chromium); the console's browser tests need it"
        )
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, e2e: Stack) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    opened.dialogs = dialogs
    yield opened
    context.close()


def sign_in(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.url}/console/")
    assert "/console/sign-in" in page.url  # no session: the sign-in page
    page.get_by_label("Name").fill(CONSOLE_USER)
    page.get_by_label("Password or API token").fill(CONSOLE_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.url}/console/")


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def post_email(stack: Stack, raw: bytes) -> dict[str, Any]:
    headers = {**basic_auth(), "Content-Type": "message/rfc822"}
    response = requests.post(f"{stack.url}/webhooks/mime", data=raw, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"][0]  # type: ignore[no-any-return]


def test_find_a_dead_delivery_by_message_id_and_replay_it(page: Any, e2e: Stack) -> None:
    e2e.sandbox.seed("CON1", agent="kim")
    e2e.api("PUT", "/v1/prospects/CON1", json={"emails": ["renter@example.com"]})
    e2e.sandbox.fault(status=400, count=1)  # Knock refuses it once
    dead = post_email(e2e, mime(subject="Lease question", message_id="<dead-1@example.com>"))
    e2e.wait_for_status(dead["id"], "dead")

    sign_in(page, e2e)
    shot(page, "overview")
    assert page.get_by_role("heading", name="Overview").is_visible()
    page.get_by_role("link", name="Deliveries").click()
    page.get_by_label("Message-ID").fill("dead-1@example.com")
    page.get_by_role("button", name="Search").click()
    shot(page, "deliveries")
    page.get_by_role("link", name="Lease question").click()
    assert page.locator("#delivery-status").inner_text() == "dead"
    assert "attempt 1: HTTP 400" in page.content()  # the timeline shows Knock's answer
    shot(page, "delivery-dead")
    page.get_by_role("button", name="Replay").click()
    assert page.get_by_text("Queued again.").is_visible()
    e2e.wait_for_status(dead["id"], "delivered")
    (event,) = e2e.sandbox.events("CON1")
    assert event["subject"] == "Lease question"
    page.reload()
    assert page.locator("#delivery-status").inner_text() == "delivered"
    preview = page.frame_locator("iframe.preview").locator("body").inner_text()
    assert "Hi, is the two bedroom still available?" in preview  # kept a while after delivery
    shot(page, "delivery-delivered")
    assert re.search(r"attempt 1: HTTP 400", page.content()) and re.search(r"attempt 2: HTTP 20\d", page.content())


def test_resolve_an_unmatched_email_and_the_next_one_matches(page: Any, e2e: Stack) -> None:
    e2e.sandbox.seed("CON2", agent="kim")
    hostile = "<script>alert('x')</script> hello"
    stray = post_email(e2e, mime(sender="New Renter <new.renter@example.org>", subject="Saw your listing",
                                 message_id="<stray-1@example.org>", body=hostile))  # fmt: skip
    assert stray["status"] == "unmatched"

    sign_in(page, e2e)
    page.goto(f"{e2e.url}/console/deliveries/{stray['id']}")
    frame = page.frame_locator("iframe.preview")
    assert "<script>alert('x')</script>" in frame.locator("body").inner_text()  # shown as text, inert
    assert page.dialogs == []
    shot(page, "delivery-unmatched")
    page.get_by_label("Prospect id").fill("CON2")
    page.get_by_label(re.compile("Remember")).check()
    page.get_by_role("button", name="Resolve and log it").click()
    assert page.get_by_text("Logged for prospect CON2.").is_visible()
    e2e.wait_for_status(stray["id"], "delivered")

    following = post_email(e2e, mime(sender="new.renter@example.org", subject="Can I visit Friday?",
                                     message_id="<stray-2@example.org>"))  # fmt: skip
    assert (following["status"], following["prospectId"]) == ("queued", "CON2")
    assert page.dialogs == []


def test_edit_a_prospect(page: Any, e2e: Stack) -> None:
    e2e.api("PUT", "/v1/prospects/CON3", json={"emails": ["old@example.com"], "agentUsername": "kim"})
    sign_in(page, e2e)
    page.get_by_role("link", name="Directory").click()
    page.get_by_label("Prospect id, agent username or email address").fill("CON3")
    page.get_by_role("button", name="Find").click()
    page.locator("#edit-CON3").click()
    page.get_by_label("Email addresses, one per line").first.fill("old@example.com\nnew@example.com")
    page.get_by_label("Agent username (optional)").fill("lee")
    shot(page, "directory")
    page.get_by_role("button", name="Save prospect").click()
    assert page.get_by_text("Prospect CON3 saved.").is_visible()
    stored = e2e.api("GET", "/v1/prospects/CON3").json()
    assert stored == {"prospectId": "CON3", "emails": ["old@example.com", "new@example.com"], "agentUsername": "lee"}


def test_the_console_works_on_a_phone_sized_screen(browser: Any, e2e: Stack) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone = context.new_page()
    sign_in(phone, e2e)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the overview is {width}px wide on a 390px screen"
    shot(phone, "overview-phone")
    context.close()


def test_sign_in_is_by_keyboard_and_every_field_has_a_label(page: Any, e2e: Stack) -> None:
    page.goto(f"{e2e.url}/console/sign-in")
    shot(page, "sign-in")
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")
    page.keyboard.type(CONSOLE_USER)
    page.keyboard.press("Tab")
    page.keyboard.type(CONSOLE_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{e2e.url}/console/")
    for path in ("/console/", "/console/deliveries", "/console/directory"):
        page.goto(e2e.url + path)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                  .map(el => el.name)"""
        )
        assert unlabelled == [], (path, unlabelled)
