"""The operator console's rules, through the Flask test client: CSRF, the audit trail, and the
actions that go through the API's own functions (signing in and sessions: test_console_sessions.py)."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from relay.app import create_app
from relay.audit import recent_actions
from tests.conftest import Sandbox
from tests.helpers import BEARER, CONSOLE_PASSWORD, CONSOLE_USER, mime, post_mime, wait_for_status

PAGES = ["/console/", "/console/deliveries", "/console/directory", "/console/directory/export.csv",
         "/console/deliveries/0123456789abcdef0123456789abcdef"]  # fmt: skip


def csrf_token(client: Any, path: str = "/console/sign-in") -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert match, path
    return match.group(1)


def sign_in(client: Any, name: str = CONSOLE_USER, password: str = CONSOLE_PASSWORD, **extra: str) -> Any:
    return client.post("/console/sign-in", data={"csrf_token": csrf_token(client), "name": name,
                                                  "password": password, **extra})  # fmt: skip


def dead_delivery(client: Any, sandbox: Sandbox) -> str:
    """A delivery Knock refused (400), so dead; the test needs the `worker` fixture running."""
    sandbox.seed("P1")
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    sandbox.fault(status=400, count=1)
    delivery_id: str = post_mime(client, mime()).json["deliveries"][0]["id"]
    wait_for_status(client, delivery_id, "dead")
    return delivery_id


@pytest.fixture
def operator(client: Any) -> Any:
    assert sign_in(client).status_code == 302
    return client


@pytest.mark.parametrize("path", PAGES)
def test_without_a_session_every_page_sends_you_to_sign_in(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/sign-in?next=")


def test_a_form_without_the_csrf_token_changes_nothing(operator: Any) -> None:
    response = operator.post("/console/directory/prospects", data={"prospectId": "P1", "emails": "a@example.com"})
    assert response.status_code == 400
    assert operator.get("/v1/prospects/P1", headers=BEARER).status_code == 404
    token = csrf_token(operator, "/console/directory")
    done = operator.post("/console/directory/prospects",
                         data={"csrf_token": token, "prospectId": "P1", "emails": "a@example.com"})  # fmt: skip
    assert done.status_code == 302
    assert operator.get("/v1/prospects/P1", headers=BEARER).json["emails"] == ["a@example.com"]


def test_pages_allow_no_script_and_no_framing(operator: Any) -> None:
    policy = operator.get("/console/").headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src" not in policy


def test_resolve_through_the_console_is_the_api_resolve_and_is_recorded(
    operator: Any, redis_client: Any, sandbox: Sandbox
) -> None:
    sandbox.seed("P5")
    stray = post_mime(operator, mime(sender="stranger@example.org")).json["deliveries"][0]
    token = csrf_token(operator, f"/console/deliveries/{stray['id']}")
    resolved = operator.post(f"/console/deliveries/{stray['id']}/resolve", follow_redirects=True,
                             data={"csrf_token": token, "prospectId": "P5", "remember": "1"})  # fmt: skip
    assert "Queued for prospect P5: this page shows Knock&#39;s answer once it comes." in resolved.text
    shown = operator.get(f"/v1/deliveries/{stray['id']}", headers=BEARER).json
    assert (shown["status"], shown["prospectId"]) == ("queued", "P5")
    assert operator.get("/v1/prospects/P5", headers=BEARER).json["emails"] == ["stranger@example.org"]
    (action, *_) = recent_actions(redis_client)
    assert (action["operator"], action["action"], action["target"]) == (CONSOLE_USER, "resolve", stray["id"])
    again = operator.post(f"/console/deliveries/{stray['id']}/resolve", data={"csrf_token": token, "prospectId": "P5"},
                          follow_redirects=True)  # fmt: skip
    assert "only unmatched deliveries" in again.text


def test_resolve_to_a_prospect_nobody_knows_queues_nothing(operator: Any, sandbox: Sandbox) -> None:
    stray = post_mime(operator, mime(sender="stranger@example.org")).json["deliveries"][0]
    token = csrf_token(operator, f"/console/deliveries/{stray['id']}")
    refused = operator.post(f"/console/deliveries/{stray['id']}/resolve", follow_redirects=True,
                            data={"csrf_token": token, "prospectId": "NOPE9"})  # fmt: skip
    assert (
        "Knock has no prospect &#39;NOPE9&#39; and the directory does not know it: nothing was queued" in refused.text
    )
    assert 'role="alert"' in refused.text
    assert operator.get(f"/v1/deliveries/{stray['id']}", headers=BEARER).json["status"] == "unmatched"
    # One the directory knows is taken without asking Knock, even while Knock is down.
    operator.put("/v1/prospects/P7", json={"emails": ["p7@example.com"]}, headers=BEARER)
    sandbox.fault(status=503, count=5, path="any")
    known = operator.post(f"/console/deliveries/{stray['id']}/resolve", follow_redirects=True,
                          data={"csrf_token": token, "prospectId": "P7"})  # fmt: skip
    assert "Queued for prospect P7" in known.text


def test_a_replay_from_the_console_is_recorded_and_shown_on_the_overview(
    operator: Any, sandbox: Sandbox, worker: Any
) -> None:
    delivery_id = dead_delivery(operator, sandbox)
    token = csrf_token(operator, f"/console/deliveries/{delivery_id}")
    replayed = operator.post(f"/console/deliveries/{delivery_id}/replay", data={"csrf_token": token},
                             follow_redirects=True)  # fmt: skip
    assert "Queued again." in replayed.text
    assert f"{CONSOLE_USER}: replay {delivery_id}" in operator.get("/console/").text


def test_csv_import_reports_bad_lines_and_export_reads_back(operator: Any) -> None:
    token = csrf_token(operator, "/console/directory")
    csv_text = (b"prospectId,email,agentUsername,notes\nP1,a@example.com,kim,vip\n,missing@example.com,,\n"
                b"P2,not-an-address,,\n")  # fmt: skip
    response = operator.post("/console/directory/import", content_type="multipart/form-data", follow_redirects=True,
                             data={"csrf_token": token, "file": (io.BytesIO(csv_text), "d.csv")})  # fmt: skip
    report = response.text[response.text.index('id="import-title"') :]
    assert response.status_code == 200 and 'class="flash ok" role="status"' in response.text
    assert "Imported 1 prospect." in report and "Skipped 2 lines:" in report
    assert "<li>Line 3: prospectId and a valid email are required.</li>" in report
    assert "<li>Line 4: prospectId and a valid email are required.</li>" in report
    assert "Columns not read: notes" in report
    exported = operator.get("/console/directory/export.csv").text
    assert exported == "prospectId,email,agentUsername\nP1,a@example.com,kim\n"


def test_no_console_without_a_way_to_sign_in(make_settings: Any) -> None:
    client = create_app(make_settings(RELAY_API_TOKEN="", RELAY_CONSOLE_USERS="")).test_client()
    assert client.get("/console/").status_code == 404


def test_webhooks_and_the_api_need_no_csrf_token(client: Any) -> None:
    assert post_mime(client, mime()).status_code == 200
    assert client.put("/v1/prospects/P1", json={"emails": ["a@example.com"]}, headers=BEARER).status_code == 200


def test_directory_forms_validate_like_the_api(operator: Any) -> None:
    token = csrf_token(operator, "/console/directory")
    form = {"csrf_token": token, "prospectId": "P1", "emails": "lee@\nok@example.com"}
    refused = operator.post("/console/directory/prospects", follow_redirects=True, data=form)
    assert refused.status_code == 400
    assert "<li>The prospect was not saved.</li>" in refused.text
    assert "<li>&#39;lee@&#39;: Not a valid email address.</li>" in refused.text
    # What was typed stays in the form, and nothing else is said about it.
    assert 'name="prospectId" value="P1"' in refused.text and ">lee@\nok@example.com</textarea>" in refused.text
    assert "Nothing in the directory" not in refused.text
    assert operator.get("/v1/prospects/P1", headers=BEARER).status_code == 404
    empty_agent = operator.post("/console/directory/prospects", follow_redirects=True,
                                data={"csrf_token": token, "prospectId": "P1", "emails": "lee@example.com",
                                      "agentUsername": "  "})  # fmt: skip
    assert "Prospect P1 saved." in empty_agent.text
    assert operator.get("/v1/prospects/P1", headers=BEARER).json["agentUsername"] is None
    agent = operator.post("/console/directory/agents", follow_redirects=True,
                          data={"csrf_token": token, "username": "kim", "emails": "kim@acme-living.com"})  # fmt: skip
    assert "Agent kim saved." in agent.text
    assert operator.get("/v1/agents/kim", headers=BEARER).json["emails"] == ["kim@acme-living.com"]
