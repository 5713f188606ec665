"""The Knock sandbox behaves like Knock for what the relay relies on (SPEC §8)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from relay.knock.client import KnockClient, KnockRejected, KnockTransientError
from relay.knock.sandbox import create_sandbox
from tests.conftest import Sandbox
from tests.helpers import SANDBOX_KEY, free_port

VALID = {
    "type": "EMAIL_MESSAGE_TO_PROSPECT_SENT",
    "sentTime": "2020-03-31T23:22:06.214Z",
    "agent": {"username": "dana"},
    "subject": "Tour",
    "body": "<p>See you</p>",
}


def post_email(sandbox: Sandbox, body: Any, prospect: str = "P1", key: str = SANDBOX_KEY) -> requests.Response:
    return sandbox.call("POST", f"/prospect/{prospect}/email", json=body, headers={"x-api-key": key})


@pytest.mark.parametrize("missing", list(VALID))
def test_rejects_a_body_missing_any_field(sandbox: Sandbox, missing: str) -> None:
    sandbox.seed("P1")
    body = {k: v for k, v in VALID.items() if k != missing}
    response = post_email(sandbox, body)
    assert response.status_code == 400
    assert missing in response.json()["errorMessage"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("type", "EMAIL"), ("sentTime", "2020-03-31T23:22:06Z"), ("sentTime", "2020-13-31T23:22:06.000Z"),
     ("agent", {"username": ""}), ("agent", "dana"), ("subject", ""), ("body", "  "), ("subject", 7)],
)  # fmt: skip
def test_rejects_malformed_fields(sandbox: Sandbox, field: str, value: Any) -> None:
    sandbox.seed("P1")
    assert post_email(sandbox, {**VALID, field: value}).status_code == 400


def test_wrong_key_is_401_and_unknown_prospect_404(sandbox: Sandbox) -> None:
    sandbox.seed("P1")
    assert post_email(sandbox, VALID, key="nope").status_code == 401
    assert post_email(sandbox, VALID, prospect="NOPE").status_code == 404


def test_logging_applies_first_contact_and_response_effects(sandbox: Sandbox) -> None:
    sandbox.seed("P1")
    assert sandbox.prospect("P1")["status"] == "new"
    inbound = {**VALID, "type": "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED", "sentTime": "2020-03-31T10:00:00.000Z"}
    assert post_email(sandbox, inbound).status_code == 200
    assert sandbox.prospect("P1")["status"] == "new"
    response = post_email(sandbox, VALID)
    assert response.status_code == 200 and response.json()["communicationId"]
    prospect = sandbox.prospect("P1")
    assert prospect["status"] == "open"
    assert prospect["firstResponseAt"] == VALID["sentTime"]


def test_events_are_cursor_paginated(sandbox: Sandbox) -> None:
    sandbox.seed("P1")
    for i in range(5):
        post_email(sandbox, {**VALID, "subject": f"s{i}"})
    first = sandbox.call("GET", "/prospect/P1/events?limit=2").json()
    second = sandbox.call("GET", f"/prospect/P1/events?limit=2&cursor={first['nextCursor']}").json()
    third = sandbox.call("GET", f"/prospect/P1/events?limit=2&cursor={second['nextCursor']}").json()
    subjects = [e["subject"] for page in (first, second, third) for e in page["events"]]
    assert subjects == ["s0", "s1", "s2", "s3", "s4"] and third["nextCursor"] is None


def test_faults_answer_with_the_status_and_retry_after(sandbox: Sandbox) -> None:
    sandbox.seed("P1")
    sandbox.fault(status=429, retryAfter="7", count=1)
    client = KnockClient(sandbox.url, SANDBOX_KEY)
    with pytest.raises(KnockTransientError) as caught:
        client.log_email("P1", VALID)
    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)
    assert client.log_email("P1", VALID)


def test_client_separates_final_rejections_from_transient_failures(sandbox: Sandbox) -> None:
    client = KnockClient(sandbox.url, SANDBOX_KEY, timeout=0.5)
    with pytest.raises(KnockRejected) as caught:
        client.log_email("UNKNOWN", VALID)
    assert caught.value.message == "prospect not found"
    sandbox.seed("P1")
    sandbox.fault(status=200, delay=1.5)
    with pytest.raises(KnockTransientError):
        client.log_email("P1", VALID)
    with pytest.raises(KnockTransientError):
        KnockClient(f"http://127.0.0.1:{free_port()}", SANDBOX_KEY).log_email("P1", VALID)


@pytest.mark.parametrize("id_field", ["id", "prospectId"])
def test_prospect_creation_id_is_read_under_either_name(id_field: str) -> None:
    server = make_server("127.0.0.1", free_port(), create_sandbox(SANDBOX_KEY, id_field), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = KnockClient(f"http://127.0.0.1:{server.server_port}", SANDBOX_KEY)
        new_id = client.create_prospect({"profile": {"email": "r@example.com"}, "agentUsername": "dana"})
        assert client.agent_of_prospect(new_id) == "dana"
    finally:
        server.shutdown()
