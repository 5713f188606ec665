"""Directory exports never hand a spreadsheet a formula, and read back as the same directory."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from relay.__main__ import cli
from relay.directory import csv_cell, csv_value
from relay.services import Services
from tests.helpers import BEARER, CONSOLE_PASSWORD, CONSOLE_USER, relay_env

#: Prospect id, its addresses, its agent: each id shaped like a formula, or escaped like one.
DIRECTORY = {
    '=HYPERLINK("http:\\\\evil.example","x")': (["lee@example.com"], "@SUM(1+1)"),
    "+1-2": (["kim@example.com", "kim.work@example.com"], "-pat"),
    "-5": (["sam@example.com"], None),
    "@cmd": (["ana@example.com"], "=1+1"),
    "'=already-quoted": (["bo@example.com"], "'plain"),
    "''+two-quotes": (["cy@example.com"], "'@x"),
    "'": (["di@example.com"], None),
    "P1": (["renter@example.com"], "pat"),
}
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize(
    ("value", "cell"),
    [("+1-2", "'+1-2"), ("=x", "'=x"), ("@SUM(1+1)", "'@SUM(1+1)"), ("-pat", "'-pat"), ("\tx", "'\tx"),
     ("\rx", "'\rx"), ("'=x", "''=x"), ("''+x", "'''+x"), ("'abc", "'abc"), ("'", "'"), ("", ""), ("P1", "P1")],
)  # fmt: skip
def test_a_cell_is_escaped_exactly_when_a_spreadsheet_would_run_it(value: str, cell: str) -> None:
    assert csv_cell(value) == cell
    assert csv_value(cell) == value


def test_a_hand_escaped_cell_is_read_without_its_quote() -> None:
    assert [csv_value(cell) for cell in ("'+1-2", "'=x", "'abc", "x'")] == ["+1-2", "=x", "'abc", "x'"]


def fill(services: Services) -> None:
    for prospect_id, (emails, agent) in DIRECTORY.items():
        services.directory.put_prospect(prospect_id, emails, agent)


def read_directory(services: Services) -> dict[str, tuple[list[str], str | None]]:
    return {r["prospectId"]: (sorted(r["emails"]), r["agentUsername"]) for r in services.directory.all_prospects()}


def expected() -> dict[str, tuple[list[str], str | None]]:
    return {pid: (sorted(emails), agent) for pid, (emails, agent) in DIRECTORY.items()}


def assert_no_formula(exported: str) -> None:
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0] == ["prospectId", "email", "agentUsername"] and len(rows) == 10
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), row
    assert ["'+1-2", "kim@example.com", "'-pat"] in rows
    assert ['\'=HYPERLINK("http:\\\\evil.example","x")', "lee@example.com", "'@SUM(1+1)"] in rows


def test_cli_export_escapes_formulas_and_import_reads_the_same_directory(
    services: Services, sandbox: Any, tmp_path: Path
) -> None:
    fill(services)
    env = relay_env(sandbox.url)
    exported = CliRunner().invoke(cli, ["directory", "export"], env=env, catch_exceptions=False).output
    assert_no_formula(exported)
    services.redis.flushdb()
    (tmp_path / "directory.csv").write_text(exported)
    imported = CliRunner().invoke(cli, ["directory", "import", str(tmp_path / "directory.csv")], env=env)
    assert imported.exit_code == 0, imported.output
    assert read_directory(services) == expected()


def test_console_export_escapes_formulas_and_import_reads_the_same_directory(services: Services, client: Any) -> None:
    fill(services)

    def token(path: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)[1]  # type: ignore[index]

    client.post("/console/sign-in", data={"csrf_token": token("/console/sign-in"), "name": CONSOLE_USER,
                                          "password": CONSOLE_PASSWORD})  # fmt: skip
    exported = client.get("/console/directory/export.csv").text
    assert_no_formula(exported)
    for prospect_id in DIRECTORY:
        services.directory.delete_prospect(prospect_id)
    assert read_directory(services) == {}
    answer = client.post("/console/directory/import", content_type="multipart/form-data", follow_redirects=True,
                         data={"csrf_token": token("/console/directory"),
                               "file": (io.BytesIO(exported.encode()), "directory.csv")})  # fmt: skip
    assert f"Imported {len(DIRECTORY)} prospects." in answer.text
    assert read_directory(services) == expected()
    assert client.get("/v1/prospects/%2B1-2", headers=BEARER).json["agentUsername"] == "-pat"
