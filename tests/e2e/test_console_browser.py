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
    assert page.get_by_text("Queued for prospect CON2").is_visible()
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


SIZES = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}


def signed_in(browser: Any, stack: Stack, size: str) -> Any:
    phone = size == "phone"
    context = browser.new_context(viewport=SIZES[size], is_mobile=phone, has_touch=phone)
    opened = context.new_page()
    sign_in(opened, stack)
    return opened


def fits_the_screen(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is {width}px wide"


def html_email(message_id: str, images: int) -> bytes:
    long = "/assets/newsletters/2026/december/leasing-special-offer-two-bedroom-apartment"
    tags = "".join(
        f'<img src="https://images.cdn.acme-living-properties.example.com{long}-{n}.png">' for n in range(images)
    )
    lines = ["From: Jamie Lee <jamie.lee.longer-mailbox-name@residents.example-property-management.org>",
             "To: leasing-office-north-campus@acme-living.com, second.recipient.with.a.long.name@acme-living.com",
             "Subject: Photos of the unit", f"Message-ID: {message_id}", "MIME-Version: 1.0",
             "Content-Type: text/html; charset=utf-8", "", f"<p>Here they are</p>{tags}"]  # fmt: skip
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize("size", SIZES)
def test_long_labels_and_values_wrap_sensibly_in_the_details(browser: Any, e2e: Stack, size: str) -> None:
    message_id = "<very-long-message-identifier-0123456789abcdef0123456789abcdef@mail.residents.example.org>"
    found = post_email(e2e, html_email(message_id, images=6))
    page = signed_in(browser, e2e, size)
    page.goto(f"{e2e.url}/console/deliveries/{found['id']}")
    shot(page, f"delivery-remote-images-{size}")
    fits_the_screen(page)
    assert page.get_by_text("Jamie Lee <jamie.lee.longer-mailbox-name@").is_visible()  # the display name shown
    details = page.locator("dl.details").first
    listing = details.bounding_box()
    for label in ("Message-ID", "From", "To", "Remote images"):
        value = details.locator(f"dt:text-is('{label}') + dd").bounding_box()
        # The value gets most of the width, so it wraps into a few lines, not a character per line.
        assert value["width"] >= 0.55 * listing["width"], (label, value, listing)
        assert value["height"] <= (260 if label == "Remote images" else 130), (label, value)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 3200, f"the delivery page is {height}px tall"
    page.context.close()


@pytest.mark.parametrize("size", SIZES)
def test_the_overview_shows_every_column_of_unmatched_and_dead(browser: Any, e2e: Stack, size: str) -> None:
    e2e.sandbox.seed("CON5", agent="kim")
    e2e.api("PUT", "/v1/prospects/CON5", json={"emails": ["renter@example.com"]})
    e2e.sandbox.fault(status=400, count=1)
    dead = post_email(e2e, mime(subject="A question about the lease renewal", message_id=f"<dead-{size}@x.org>"))
    post_email(e2e, mime(sender="someone.new@example.org", subject="Viewing request for the loft",
                         message_id=f"<stray-{size}@x.org>"))  # fmt: skip
    e2e.wait_for_status(dead["id"], "dead")
    page = signed_in(browser, e2e, size)
    shot(page, f"overview-{size}")
    fits_the_screen(page)
    for section in ("Unmatched", "Dead"):
        table = page.locator(f"section:has(h3:has-text('{section}')) table")
        # Every row, with its status, prospect and provider, lies within the screen, nothing scrolled away.
        overflow = table.evaluate(
            """(table) => [...table.querySelectorAll('tbody tr')].filter(row =>
                   row.getBoundingClientRect().right > window.innerWidth || row.scrollWidth > row.clientWidth + 1
                   || table.parentElement.scrollWidth > table.parentElement.clientWidth + 1).length"""
        )
        assert overflow == 0, section
        row = table.locator("tbody tr").first.inner_text()
        assert section.lower() in row and "mime" in row, (section, row)  # its status and provider
        if size == "desktop":
            for column in ("Received", "Subject", "Type", "Status", "Prospect", "Provider"):
                header = table.locator(f"th:text-is('{column}')").bounding_box()
                assert header is not None and header["x"] + header["width"] <= SIZES[size]["width"], (section, column)
    assert page.get_by_text("nothing waits").is_visible() or page.locator("#queue-depth").inner_text() != "0"
    page.context.close()


@pytest.mark.parametrize("size", SIZES)
def test_a_pasted_name_and_address_searches_the_address(browser: Any, e2e: Stack, size: str) -> None:
    found = post_email(e2e, mime(sender="Jamie Lee <jamie.lee@example.org>", subject=f"Parking spaces {size}",
                                 message_id=f"<paste-{size}@example.org>"))  # fmt: skip
    page = signed_in(browser, e2e, size)
    page.goto(f"{e2e.url}/console/deliveries")
    page.get_by_label("Sender or recipient address").fill("Jamie Lee <Jamie.Lee@example.org>")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"address="))
    shot(page, f"deliveries-pasted-address-{size}")
    fits_the_screen(page)
    assert page.get_by_role("link", name=f"Parking spaces {size}").is_visible()
    assert found["id"] in page.get_by_role("link", name=f"Parking spaces {size}").get_attribute("href")
    page.context.close()


def test_removing_a_prospect_asks_first(page: Any, e2e: Stack) -> None:
    e2e.api("PUT", "/v1/prospects/CON6", json={"emails": ["six@example.com"]})
    sign_in(page, e2e)
    page.goto(f"{e2e.url}/console/directory?q=CON6")
    page.get_by_role("link", name="Remove prospect CON6…").click()
    shot(page, "remove-prospect")
    assert e2e.api("GET", "/v1/prospects/CON6").status_code == 200  # not yet
    page.get_by_role("link", name="Cancel").click()
    assert e2e.api("GET", "/v1/prospects/CON6").status_code == 200
    page.get_by_role("link", name="Remove prospect CON6…").click()
    page.get_by_role("button", name="Remove prospect CON6").click()
    assert page.get_by_text("Prospect CON6 removed.").is_visible()
    assert e2e.api("GET", "/v1/prospects/CON6").status_code == 404
