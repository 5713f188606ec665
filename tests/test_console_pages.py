"""What the console's pages say: searches that cannot match say why, a search out of budget says where
it stopped, one way of writing times and types, next steps, and directory forms that keep what was typed
(layout at both screen widths: tests/e2e/test_console_browser.py)."""

from __future__ import annotations

import io
import re
import time
from typing import Any

import pytest

from relay.app import create_app
from relay.console import hourly_chart
from tests.helpers import BEARER, mime, post_mime
from tests.records import month_of_mail
from tests.test_console import csrf_token, sign_in


@pytest.fixture
def operator(client: Any) -> Any:
    assert sign_in(client).status_code == 302
    return client


@pytest.mark.parametrize(
    ("query", "said"),
    [({"since": "garbage"}, "Received from: &#39;garbage&#39; is not a date and time"),
     ({"since": "2026-12-06T10:00", "until": "2026-12-01T10:00"}, "Received from is after Received until"),
     ({"subject": "!!! ..."}, "Subject words: give at least one word"),
     ({"status": "lost"}, "Status: &#39;lost&#39; is not a status")],
)  # fmt: skip
def test_a_search_that_cannot_match_says_why(operator: Any, query: dict[str, str], said: str) -> None:
    post_mime(operator, mime())
    page = operator.get("/console/deliveries", query_string=query).text
    assert said in page
    assert 'role="alert"><p>Not searched:' in page
    assert "<table" not in page  # not the unfiltered list


def test_a_search_out_of_budget_says_where_it_stopped_and_links_on(operator: Any, services: Any) -> None:
    now = int(time.time() * 1000)
    services.store.create_many([r] for r in month_of_mail(8_000, now, seed=3))
    services.store.search_budget = 5  # one batch of ids a call
    page = operator.get("/console/deliveries", query_string={"subject": "pet maple"}).text
    assert "No match was found among deliveries received after 20" in page
    assert "the search stopped there to keep this page quick" in page
    older = re.search(r'<a rel="next" href="([^"]+)">Search older deliveries →</a>', page)
    assert older and "cursor=" in older.group(1) and "subject=pet+maple" in older.group(1)
    # Followed to the end, it says that nothing older matches rather than showing an empty page.
    link = older.group(1).replace("&amp;", "&")
    for _ in range(100):
        page = operator.get(link).text
        older = re.search(r'<a rel="next" href="([^"]+)">', page)
        if not older:
            break
        link = older.group(1).replace("&amp;", "&")
    assert "No older delivery matches." in page


def test_an_empty_search_says_it_searched_everything(operator: Any) -> None:
    post_mime(operator, mime(subject="Parking"))
    page = operator.get("/console/deliveries", query_string={"subject": "saturday"}).text
    assert "No delivery matches: every record of the last 30 days was searched." in page
    every = operator.get("/console/deliveries").text
    assert "That is every delivery of the last 30 days." in every


def test_times_and_types_are_written_one_way(operator: Any) -> None:
    delivery_id = post_mime(operator, mime(sender="Jamie Lee <jamie@example.org>")).json["deliveries"][0]["id"]
    listed = operator.get("/console/deliveries").text
    shown = operator.get(f"/console/deliveries/{delivery_id}").text
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    assert stamp.search(listed) and "From prospect" in listed
    assert "<dt>Sent</dt><dd>2020-03-31 23:22:06 UTC</dd>" in shown  # the Date header, in UTC
    assert re.search(r"<dt>Received</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC through mime</dd>", shown)
    assert "<dt>Type</dt><dd>From prospect</dd>" in shown
    assert "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED" not in listed + shown
    assert "Jamie Lee &lt;jamie@example.org&gt;" in shown  # the sender's display name
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", listed + shown)  # no ISO stamps left


def test_an_unmatched_delivery_says_what_to_do_next(operator: Any) -> None:
    stray = post_mime(operator, mime(sender="stranger@example.org")).json["deliveries"][0]
    page = operator.get(f"/console/deliveries/{stray['id']}").text
    step = re.search(r'<p class="next-step" id="next-step"><strong>What to do:</strong> ([^<]+)</p>', page)
    assert step and "Directory" in step.group(1) and "resolve" in step.group(1).lower()


def test_a_pending_delivery_page_refreshes_itself_until_there_is_an_outcome(operator: Any, sandbox: Any) -> None:
    sandbox.seed("P1")
    operator.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "kim"}, headers=BEARER)
    queued = post_mime(operator, mime()).json["deliveries"][0]
    assert queued["status"] == "queued"
    assert '<meta http-equiv="refresh" content="5">' in operator.get(f"/console/deliveries/{queued['id']}").text
    stray = post_mime(operator, mime(sender="x@example.org", message_id="<2@x>")).json["deliveries"][0]
    assert "http-equiv" not in operator.get(f"/console/deliveries/{stray['id']}").text


def test_the_overview_says_when_nothing_waits_and_draws_an_axis(operator: Any) -> None:
    page = operator.get("/console/").text
    assert "nothing waits" in page
    assert "No deliveries received in the last 24 hours." in page
    assert "Highest hour" not in page
    post_mime(operator, mime())
    page = operator.get("/console/").text
    assert re.search(r"Busiest hour: \d\d:00 UTC, 1 deliveries received\.", page)
    assert page.count('<g class="tick">') == 3
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</span> — dana: sign in console", page)  # when it was done


def test_the_chart_axis_ends_at_a_round_number_above_the_busiest_hour() -> None:
    chart = hourly_chart([(0, 3), (3_600_000, 37), (7_200_000, 0)])
    assert [tick["value"] for tick in chart["ticks"]] == [0, 25, 50]
    assert chart["peak"]["count"] == 37 and chart["peak"]["label"] == "01:00"
    tallest = max(chart["bars"], key=lambda bar: bar["h"])
    assert tallest["y"] > chart["ticks"][2]["y"]  # below the axis' top


def test_every_page_has_a_favicon(operator: Any) -> None:
    page = operator.get("/console/directory").text
    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert icon
    served = operator.get(icon.group(1))
    assert served.status_code == 200 and served.data.startswith(b"<svg")


def test_editing_a_prospect_cannot_change_its_id(operator: Any) -> None:
    operator.put("/v1/prospects/P1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    form = operator.get("/console/directory", query_string={"q": "P1", "edit": "P1"}).text
    assert re.search(r'name="prospectId" value="P1" required readonly', form)
    token = csrf_token(operator, "/console/directory")
    change = {"csrf_token": token, "originalId": "P1", "prospectId": "P2", "emails": "lee@example.com"}
    moved = operator.post("/console/directory/prospects", data=change)
    assert moved.status_code == 400
    assert "The id of prospect P1 cannot be changed here" in moved.text
    assert operator.get("/v1/prospects/P2", headers=BEARER).status_code == 404  # no copy owning the address
    assert operator.get("/v1/prospects/P1", headers=BEARER).json["emails"] == ["lee@example.com"]


def test_removing_asks_first_and_then_removes(operator: Any) -> None:
    operator.put("/v1/prospects/P1", json={"emails": ["lee@example.com"]}, headers=BEARER)
    found = operator.get("/console/directory", query_string={"q": "P1"}).text
    assert "/console/directory/prospects/P1/remove" in found and "/prospects/P1/delete" not in found
    confirm = operator.get("/console/directory/prospects/P1/remove").text
    assert "Remove prospect P1?" in confirm and 'action="/console/directory/prospects/P1/delete"' in confirm
    assert operator.get("/v1/prospects/P1", headers=BEARER).status_code == 200
    token = csrf_token(operator, "/console/directory/prospects/P1/remove")
    done = operator.post("/console/directory/prospects/P1/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "Prospect P1 removed." in done.text and 'role="status"' in done.text
    assert operator.get("/v1/prospects/P1", headers=BEARER).status_code == 404


def test_a_csv_import_reads_pasted_names_and_refuses_what_the_api_would(operator: Any) -> None:
    token = csrf_token(operator, "/console/directory")
    csv_text = b"prospectId,email\nP1,Blake Doe <Blake@Example.com>\nP2,lee@\nP3,kim@example.com\n"
    imported = operator.post("/console/directory/import", content_type="multipart/form-data",
                             data={"csrf_token": token, "file": (io.BytesIO(csv_text), "d.csv")})  # fmt: skip
    assert "Imported 2 prospects." in imported.text
    assert "Line 3: email &#39;lee@&#39; is not a valid email address." in imported.text
    assert operator.get("/v1/prospects/P1", headers=BEARER).json["emails"] == ["blake@example.com"]
    assert operator.get("/v1/prospects/P2", headers=BEARER).status_code == 404
    # The address then routes: an email from it is matched to P1.
    summary = post_mime(operator, mime(sender="blake@example.com")).json["deliveries"][0]
    assert summary["prospectId"] == "P1"


def test_until_a_minute_includes_that_whole_minute(operator: Any) -> None:
    delivery_id = post_mime(operator, mime(subject="Within the minute")).json["deliveries"][0]["id"]
    received = operator.get(f"/v1/deliveries/{delivery_id}", headers=BEARER).json["receivedAt"]
    minute = received[:16]  # 2026-12-06T20:56
    page = operator.get("/console/deliveries", query_string={"since": minute, "until": minute}).text
    assert "Within the minute" in page


def test_an_address_search_without_an_address_says_so(operator: Any) -> None:
    page = operator.get("/console/deliveries", query_string={"address": "not an address"}).text
    assert "Sender or recipient address: &#39;not an address&#39; is not an address." in page


def test_the_api_finds_a_provider_whatever_its_case(operator: Any) -> None:
    post_mime(operator, mime())
    found = operator.get("/v1/deliveries", query_string={"provider": "MIME"}, headers=BEARER).json
    assert len(found["deliveries"]) == 1


def test_a_prospect_whose_id_has_a_slash_can_be_removed(operator: Any) -> None:
    operator.put("/v1/prospects/unit%2F4B", json={"emails": ["u4b@example.com"]}, headers=BEARER)
    token = csrf_token(operator, "/console/directory")
    operator.post("/console/directory/prospects", data={"csrf_token": token, "prospectId": "unit/4B",
                                                        "emails": "u4b@example.com"})  # fmt: skip
    found = operator.get("/console/directory", query_string={"q": "unit/4B"}).text
    assert "/console/directory/prospects/unit/4B/remove" in found
    confirm = operator.get("/console/directory/prospects/unit/4B/remove")
    assert confirm.status_code == 200 and "Remove prospect unit/4B?" in confirm.text
    done = operator.post("/console/directory/prospects/unit/4B/delete", data={"csrf_token": token},
                         follow_redirects=True)  # fmt: skip
    assert "Prospect unit/4B removed." in done.text


def test_more_subject_words_than_are_indexed_are_refused_in_the_console(operator: Any) -> None:
    words = " ".join(f"w{n}" for n in range(41))
    page = operator.get("/console/deliveries", query_string={"subject": words}).text
    assert "Subject words: give at most 40 words." in page


def test_the_console_imports_a_csv_larger_than_its_forms(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_MAX_REQUEST_BYTES=str(1024 * 1024))).test_client()
    assert sign_in(client).status_code == 302
    rows = "".join(f"BIG{n},big{n}@example.com,\n" for n in range(7_000))  # about 170 KB, like a real export
    csv_text = ("prospectId,email,agentUsername\n" + rows).encode()
    assert 64 * 1024 < len(csv_text)
    token = csrf_token(client, "/console/directory")
    imported = client.post("/console/directory/import", content_type="multipart/form-data",
                           data={"csrf_token": token, "file": (io.BytesIO(csv_text), "d.csv")})  # fmt: skip
    assert imported.status_code == 200 and "Imported 7000 prospects." in imported.text
    # Other console forms stay small: a sign-in form of that size is refused before it is read.
    large = client.post("/console/sign-in", data={"name": "x" * (80 * 1024), "password": "y"})
    assert large.status_code == 413


def test_a_time_given_with_a_zone_stays_in_the_form(operator: Any) -> None:
    page = operator.get("/console/deliveries", query_string={"since": "2026-12-06T10:00:00+02:00"}).text
    assert 'name="since" type="datetime-local" step="1" value="2026-12-06T08:00:00"' in page
