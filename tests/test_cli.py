"""`python -m relay …` operator commands against the real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from relay.__main__ import cli
from tests.conftest import Sandbox
from tests.helpers import BEARER, basic_auth, mime, post_mime, relay_env, wait_for_status


@pytest.fixture
def run(sandbox: Sandbox) -> Any:
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli, list(args), env=relay_env(sandbox.url), catch_exceptions=False)

    return invoke


def test_help_lists_the_commands(run: Any) -> None:
    result = run("--help")
    for command in ("worker", "sandbox", "config", "deliveries", "directory", "quarantine"):
        assert command in result.output


def test_directory_import_merges_rows_per_prospect(run: Any, client: Any, tmp_path: Path) -> None:
    csv_file = tmp_path / "prospects.csv"
    csv_file.write_text(
        "prospectId,email,agentUsername\nP1,Renter@Example.com,pat\nP1,work@example.com,\nP2,b@example.org,\n"
    )
    result = run("directory", "import", str(csv_file))
    assert result.exit_code == 0 and "imported 2 prospects" in result.output
    assert client.get("/v1/prospects/P1", headers=BEARER).json == {
        "prospectId": "P1",
        "emails": ["renter@example.com", "work@example.com"],
        "agentUsername": "pat",
    }


def test_directory_import_rejects_bad_rows(run: Any, tmp_path: Path) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("prospectId,email\nP1,not-an-address\n")
    result = run("directory", "import", str(csv_file))
    assert result.exit_code == 1 and "line 2" in result.output


def test_deliveries_list_and_replay(run: Any, client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    sandbox.fault(status=404, errorMessage="prospect not found")
    delivery_id = post_mime(client, mime()).json["deliveries"][0]["id"]
    wait_for_status(client, delivery_id, "dead")
    listed = [json.loads(line) for line in run("deliveries", "list", "--status", "dead").output.splitlines()]
    assert [d["id"] for d in listed] == [delivery_id] and listed[0]["lastError"] == "prospect not found"
    assert run("deliveries", "replay", delivery_id).exit_code == 0
    wait_for_status(client, delivery_id, "delivered")
    again = run("deliveries", "replay", delivery_id)
    assert again.exit_code == 1 and "only dead deliveries" in again.output


def test_quarantine_shows_unreadable_posts(run: Any, client: Any) -> None:
    client.post("/webhooks/postmark/inbound", data="{broken", content_type="application/json", headers=basic_auth())
    (entry,) = [json.loads(line) for line in run("quarantine").output.splitlines()]
    assert entry["provider"] == "postmark" and "body" not in entry and entry["size"] == 7
    (with_body,) = [json.loads(line) for line in run("quarantine", "--with-body").output.splitlines()]
    assert with_body["body"] == "e2Jyb2tlbg=="
