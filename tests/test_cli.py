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


def test_replay_all_dead_shows_progress_and_counts(run: Any, client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P1")
    client.put("/v1/prospects/P1", json={"emails": ["renter@example.com"], "agentUsername": "pat"}, headers=BEARER)
    sandbox.fault(status=400, count=3)
    ids = [post_mime(client, mime(message_id=f"<bulk-{n}@x>")).json["deliveries"][0]["id"] for n in range(3)]
    for delivery_id in ids:
        wait_for_status(client, delivery_id, "dead")
    result = run("deliveries", "replay", "--all-dead")
    assert result.exit_code == 0 and "replaying dead deliveries" in result.output
    assert "replayed 3 deliveries" in result.output
    for delivery_id in ids:
        wait_for_status(client, delivery_id, "delivered")


def test_quarantine_shows_unreadable_posts(run: Any, client: Any) -> None:
    client.post("/webhooks/postmark/inbound", data="{broken", content_type="application/json", headers=basic_auth())
    (entry,) = [json.loads(line) for line in run("quarantine").output.splitlines()]
    assert entry["provider"] == "postmark" and "body" not in entry and entry["size"] == 7
    (with_body,) = [json.loads(line) for line in run("quarantine", "--with-body").output.splitlines()]
    assert with_body["body"] == "e2Jyb2tlbg=="


def test_version_matches_the_package(run: Any) -> None:
    import tomllib

    from relay import __version__

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    assert run("--version").output.strip() == f"relay, version {__version__}"


def test_status_filter_is_validated(sandbox: Sandbox) -> None:
    result = CliRunner().invoke(cli, ["deliveries", "list", "--status", "bogus"], env=relay_env(sandbox.url))
    assert result.exit_code == 2 and "Invalid value for '--status'" in result.output


def test_read_only_commands_need_only_redis(sandbox: Sandbox) -> None:
    env = {**relay_env(sandbox.url), "KNOCK_BASE_URL": "", "KNOCK_API_KEY": "", "RELAY_ENV": "production"}
    for args in (["deliveries", "list"], ["quarantine"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output


def test_an_unreachable_redis_is_one_line(sandbox: Sandbox, tmp_path: Any) -> None:
    import subprocess
    import sys

    env = {**relay_env(sandbox.url), "REDIS_URL": "redis://:secret@127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "relay", "deliveries", "list"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: Redis at 127.0.0.1:1/0")
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    # A REDIS_URL from a mounted file is the one named.
    url_file = tmp_path / "url"
    url_file.write_text("redis://:secret@127.0.0.1:2/3")
    from_file = {**env, "REDIS_URL": "", "REDIS_URL_FILE": str(url_file)}
    result = subprocess.run([sys.executable, "-m", "relay", "deliveries", "list"], env=from_file, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.stderr.startswith("Error: Redis at 127.0.0.1:2/3:") and "secret" not in result.stderr
    # With sentinels, the line names them (REDIS_URL's address is not the one asked).
    env |= {"REDIS_SENTINELS": "127.0.0.1:1", "REDIS_SENTINEL_MASTER": "relay", "REDIS_SENTINEL_PASSWORD": "s3cret"}
    result = subprocess.run([sys.executable, "-m", "relay", "deliveries", "list"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: Redis at the primary the sentinels 127.0.0.1:1 name 'relay': no sentinel")
    assert "s3cret" not in result.stderr and "secret" not in result.stderr


def test_show_and_resolve_a_delivery(run: Any, client: Any, sandbox: Sandbox, worker: Any) -> None:
    sandbox.seed("P9", agent="pat")
    delivery_id = post_mime(client, mime(sender="stranger@example.org")).json["deliveries"][0]["id"]
    shown = json.loads(run("deliveries", "show", delivery_id).output)
    assert (shown["status"], shown["id"]) == ("unmatched", delivery_id)
    result = run("deliveries", "resolve", delivery_id, "--prospect-id", "P9")
    assert result.exit_code == 0, result.output
    assert wait_for_status(client, delivery_id, "delivered")["prospectId"] == "P9"
    missing = CliRunner().invoke(cli, ["deliveries", "show", "nope"], env=relay_env(sandbox.url))
    assert missing.exit_code == 1 and "no delivery 'nope'" in missing.output


def test_config_check_warns_about_what_production_lacks() -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "KNOCK_BASE_URL": "https://knock.example", "KNOCK_API_KEY": "k"}
    result = subprocess.run([sys.executable, "-m", "relay", "config", "check"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert [w.split(":")[1].strip() for w in warnings] == [
        "RELAY_API_TOKEN", "webhook credentials", "RELAY_MAILBOX_DOMAINS"
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["WEB_CONCURRENCY", "RELAY_WEB_THREADS", "RELAY_WORKER_THREADS", "PORT"])
def test_process_settings_are_checked_like_the_others(name: str) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "RELAY_ENV": "development", name: "x"}
    result = subprocess.run([sys.executable, "-m", "relay", "config", "check"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == f"configuration error: {name}: must be a whole number, got 'x'"


def test_a_large_import_reports_each_bad_row_by_line_and_keeps_the_good_ones(
    sandbox: Sandbox, client: Any, tmp_path: Path
) -> None:
    rows = ["prospectId,email,agentUsername"]
    bad_lines = {1500, 4000, 9999}
    for n in range(2, 10_002):  # file lines 2 .. 10,001
        rows.append(f"P{n},not-an-address," if n in bad_lines else f"P{n},renter{n}@example.com,pat")
    csv_file = tmp_path / "big.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(cli, ["directory", "import", str(csv_file)], env=relay_env(sandbox.url))
    assert result.exit_code == 1
    reported = [line for line in result.output.splitlines() if line.startswith("line ")]
    assert [int(line.split()[1].rstrip(":")) for line in reported] == sorted(bad_lines)
    assert "imported 9997 prospects; 3 bad rows skipped" in result.output
    assert client.get("/v1/prospects/P2", headers=BEARER).json["emails"] == ["renter2@example.com"]


def test_export_writes_what_import_reads(run: Any, client: Any, tmp_path: Path) -> None:
    client.put("/v1/prospects/P1", json={"emails": ["a@example.com", "b@example.com"], "agentUsername": "pat"},
               headers=BEARER)  # fmt: skip
    client.put("/v1/prospects/P2", json={"emails": ["c@example.org"]}, headers=BEARER)
    exported = run("directory", "export").output
    assert sorted(exported.splitlines()[1:]) == ["P1,a@example.com,pat", "P1,b@example.com,pat", "P2,c@example.org,"]
    client.delete("/v1/prospects/P1", headers=BEARER)
    (tmp_path / "back.csv").write_text(exported)
    assert run("directory", "import", str(tmp_path / "back.csv")).exit_code == 0
    assert client.get("/v1/prospects/P1", headers=BEARER).json["emails"] == ["a@example.com", "b@example.com"]


def test_check_reports_configuration_redis_and_knock(sandbox: Sandbox, own_redis: Any) -> None:
    durable = own_redis("--appendonly", "yes", "--maxmemory-policy", "noeviction")
    good = CliRunner().invoke(cli, ["check"], env=relay_env(sandbox.url, REDIS_URL=durable))
    assert good.exit_code == 0, good.output
    assert [line.split()[0] for line in good.output.splitlines()] == ["ok", "ok", "ok", "ok"]
    assert "key accepted" in good.output and "durable" in good.output
    port = durable.rsplit(":", 1)[1].split("/")[0]
    assert f"ok   redis primary 127.0.0.1:{port} (direct), 0 replica(s) online" in good.output
    wrong_key = CliRunner().invoke(cli, ["check"], env=relay_env(sandbox.url, REDIS_URL=durable, KNOCK_API_KEY="no"))
    assert wrong_key.exit_code == 1 and wrong_key.output.splitlines()[3].startswith("FAIL knock")
    # A replica minimum no replica meets is a failure: every webhook would answer 503.
    alone = CliRunner().invoke(
        cli, ["check"], env=relay_env(sandbox.url, REDIS_URL=durable, RELAY_REDIS_MIN_REPLICAS="1")
    )
    assert (
        alone.exit_code == 1
        and "FAIL redis primary" in alone.output
        and "RELAY_REDIS_MIN_REPLICAS is 1" in alone.output
    )
    down = CliRunner().invoke(cli, ["check"], env=relay_env(sandbox.url, REDIS_URL="redis://127.0.0.1:1/0"))
    assert down.exit_code == 1 and "FAIL redis unreachable" in down.output


def test_console_hash_password_prints_an_entry_the_settings_and_the_console_accept(sandbox: Sandbox) -> None:
    from werkzeug.security import check_password_hash

    from relay.config import ConfigError, load_settings

    result = CliRunner().invoke(cli, ["console", "hash-password", "maria"], input="a long passphrase\n" * 2)
    assert result.exit_code == 0, result.output
    entry = result.output.strip().splitlines()[-1]
    name, _, password_hash = entry.partition(":")
    assert name == "maria" and check_password_hash(password_hash, "a long passphrase")
    settings = load_settings(relay_env(sandbox.url, RELAY_CONSOLE_USERS=entry))
    assert settings.console_users == (("maria", password_hash),)
    with pytest.raises(ConfigError, match="RELAY_CONSOLE_USERS: each entry must be name:hash"):
        load_settings(relay_env(sandbox.url, RELAY_CONSOLE_USERS="maria:plain-password"))
    short = CliRunner().invoke(cli, ["console", "hash-password", "maria"], input="short\nshort\n")
    assert short.exit_code == 2 and "at least 12 characters" in short.output
