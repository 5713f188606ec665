"""Settings from the environment (SPEC §3)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from relay.config import ConfigError, load_settings


def test_defaults_follow_the_spec() -> None:
    s = load_settings({"KNOCK_BASE_URL": "https://stage-syndication.knockrentals.com", "KNOCK_API_KEY": "k"})
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.dedup_ttl_seconds, s.record_ttl_seconds) == (2592000, 2592000)
    assert (s.retry_min_backoff_seconds, s.retry_max_backoff_seconds, s.retry_max_age_seconds) == (15, 3600, 259200)
    assert (s.knock_timeout_seconds, s.knock_rate_limit, s.max_request_bytes) == (10, 0, 31457280)
    assert s.signature_max_age_seconds == 86400
    assert s.ignore_auto_replies is True and s.insecure_webhooks is False
    assert s.reply_tag_prefix == "prospect-"
    assert s.mailgun_storage_origins == ("https://*.mailgun.net",)
    assert s.api_token is None


def test_every_problem_is_reported_on_its_own_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "RELAY_DEDUP_TTL_SECONDS": "soon",
                "RELAY_IGNORE_AUTO_REPLIES": "maybe",
                "RELAY_WEBHOOK_BASIC_AUTH": "no-colon",
                "RELAY_MAILBOX_DOMAINS": "acme-living.com,not a domain",
                "REDIS_URL": "http://wrong",
            }
        )
    problems = caught.value.problems
    for name in ("KNOCK_BASE_URL", "KNOCK_API_KEY", "RELAY_DEDUP_TTL_SECONDS", "RELAY_IGNORE_AUTO_REPLIES",
                 "RELAY_WEBHOOK_BASIC_AUTH", "RELAY_MAILBOX_DOMAINS", "REDIS_URL"):  # fmt: skip
        assert sum(p.startswith(name + ":") for p in problems) == 1, (name, problems)
    assert "no-colon" not in str(caught.value)  # secrets are not echoed


def test_development_mode_defaults_to_the_local_sandbox() -> None:
    s = load_settings({"RELAY_ENV": "development"})
    assert s.knock_base_url == "http://localhost:8081"


def test_basic_auth_takes_a_rotation_list() -> None:
    s = load_settings({"RELAY_ENV": "development", "RELAY_WEBHOOK_BASIC_AUTH": "a:1, b:p:with:colons"})
    assert s.webhook_basic_auth == (("a", "1"), ("b", "p:with:colons"))


def test_config_check_command_prints_one_line_per_problem() -> None:
    env = {"PATH": "/usr/bin:/bin", "RELAY_KNOCK_TIMEOUT_SECONDS": "x"}
    result = subprocess.run([sys.executable, "-m", "relay", "config", "check"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("configuration error: ") for line in lines)


def test_fetch_origins_are_checked_and_certificates_come_only_over_https() -> None:
    dev = {"RELAY_ENV": "development"}
    with pytest.raises(ConfigError) as caught:
        load_settings({**dev, "RELAY_SNS_CERTIFICATE_ORIGINS": "http://127.0.0.1:8443",
                       "RELAY_MAILGUN_STORAGE_ORIGINS": "ftp://storage.example"})  # fmt: skip
    assert caught.value.problems == [
        "RELAY_MAILGUN_STORAGE_ORIGINS: 'ftp://storage.example' must be scheme://host[:port], host may start with *.",
        "RELAY_SNS_CERTIFICATE_ORIGINS: 'http://127.0.0.1:8443' must be https://host[:port], host may start with *.",
    ]
    s = load_settings({**dev, "RELAY_SNS_CERTIFICATE_ORIGINS": "https://sns.internal:8443",
                       "RELAY_MAILGUN_STORAGE_ORIGINS": "http://127.0.0.1:9000"})  # fmt: skip
    assert (s.sns_certificate_origins, s.mailgun_storage_origins) == (
        ("https://sns.internal:8443",), ("http://127.0.0.1:9000",))  # fmt: skip


PRODUCTION_BASE = {"KNOCK_BASE_URL": "https://stage-syndication.knockrentals.com", "KNOCK_API_KEY": "k"}


@pytest.mark.parametrize(
    "name", ["RELAY_MANDRILL_API_URL", "RELAY_BREVO_API_URL", "RELAY_RESEND_API_URL", "RELAY_POSTMARK_API_URL"]
)
def test_provider_api_urls_must_be_https_in_production_except_on_the_loopback(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**PRODUCTION_BASE, name: "http://api.example.com"})
    assert [p for p in caught.value.problems if p.startswith(name)] == [
        f"{name}: must be an https URL in production (http only on the loopback), got 'http://api.example.com'"
    ]
    for loopback in ("http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000"):
        load_settings({**PRODUCTION_BASE, name: loopback})
    load_settings({**PRODUCTION_BASE, name: "https://api.example.com"})
    load_settings({"RELAY_ENV": "development", name: "http://api.example.com"})


def test_a_console_account_may_not_take_the_api_tokens_name() -> None:
    with pytest.raises(ConfigError, match="the name api-token is kept for RELAY_API_TOKEN"):
        load_settings({**PRODUCTION_BASE, "RELAY_CONSOLE_USERS": "api-token:scrypt:32768:8:1$salt$hash"})


def test_trusted_proxies_is_a_small_count() -> None:
    assert load_settings(PRODUCTION_BASE).trusted_proxies == 0
    assert load_settings({**PRODUCTION_BASE, "RELAY_TRUSTED_PROXIES": "1"}).trusted_proxies == 1
    with pytest.raises(ConfigError, match="RELAY_TRUSTED_PROXIES"):
        load_settings({**PRODUCTION_BASE, "RELAY_TRUSTED_PROXIES": "-1"})


KNOCK = {"KNOCK_BASE_URL": "https://stage-syndication.knockrentals.com", "KNOCK_API_KEY": "k"}


def test_sentinels_are_read_as_addresses_with_the_primarys_name() -> None:
    s = load_settings({**KNOCK, "REDIS_SENTINELS": "s1.internal:26379, s2.internal,[::1]:26380",
                       "REDIS_SENTINEL_MASTER": "relay", "REDIS_SENTINEL_PASSWORD": "pw",
                       "REDIS_SENTINEL_TLS": "true"})  # fmt: skip
    assert s.redis_sentinels == (("s1.internal", 26379), ("s2.internal", 26379), ("::1", 26380))
    assert (s.redis_sentinel_master, s.redis_sentinel_password, s.redis_sentinel_tls) == ("relay", "pw", True)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS"),
        ({"REDIS_SENTINEL_MASTER": "relay"}, "REDIS_SENTINELS: required with REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINELS": "s1:port", "REDIS_SENTINEL_MASTER": "r"}, "REDIS_SENTINELS: each entry must be host:port"),
        (
            {"REDIS_SENTINELS": "s1:70000", "REDIS_SENTINEL_MASTER": "r"},
            "REDIS_SENTINELS: each entry must be host:port",
        ),
    ],
)
def test_a_sentinel_setting_without_its_partner_or_with_a_bad_address_is_refused(
    env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**KNOCK, **env})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_a_secret_may_come_from_the_file_its_FILE_variable_names(tmp_path: Any) -> None:
    (tmp_path / "key").write_text("from-a-file\n")
    s = load_settings({**KNOCK, "KNOCK_API_KEY": "", "KNOCK_API_KEY_FILE": str(tmp_path / "key"),
                       "REDIS_URL_FILE": str(tmp_path / "key")} | {"REDIS_URL": "redis://r:6379/0"})  # fmt: skip
    assert s.knock_api_key == "from-a-file"
    assert s.redis_url == "redis://r:6379/0"  # the variable itself wins over its _FILE
    with pytest.raises(ConfigError) as caught:
        load_settings({**KNOCK, "RELAY_API_TOKEN_FILE": str(tmp_path / "missing")})
    assert caught.value.problems == [
        f"RELAY_API_TOKEN_FILE: cannot read {str(tmp_path / 'missing')!r} (FileNotFoundError)"
    ]


def test_secrets_may_come_from_a_mounted_folder_one_file_per_setting(tmp_path: Any) -> None:
    (tmp_path / "KNOCK_API_KEY").write_text("mounted-key")
    (tmp_path / "RELAY_API_TOKEN").write_text("mounted-token\n")
    s = load_settings({**KNOCK, "KNOCK_API_KEY": "", "RELAY_SECRETS_DIR": str(tmp_path)})
    assert (s.knock_api_key, s.api_token) == ("mounted-key", "mounted-token")
    assert s.mailgun_api_key is None  # no file, no value: as if unset


def test_every_kind_of_setting_may_come_from_the_folder_and_a_missing_folder_is_named(tmp_path: Any) -> None:
    (tmp_path / "RELAY_REQUIRE_DURABLE_REDIS").write_text("true")
    (tmp_path / "RELAY_KNOCK_PROBE_SECONDS").write_text("12")
    (tmp_path / "REDIS_SENTINEL_TLS").write_text("yes")
    s = load_settings({**KNOCK, "RELAY_SECRETS_DIR": str(tmp_path)})
    assert s.require_durable_redis is True and s.knock_probe_seconds == 12 and s.redis_sentinel_tls is True
    (tmp_path / "RELAY_API_TOKEN").write_bytes(b"\xff\xfe not text")
    with pytest.raises(ConfigError) as caught:
        load_settings({**KNOCK, "RELAY_SECRETS_DIR": str(tmp_path)})
    token = str(tmp_path / "RELAY_API_TOKEN")
    assert caught.value.problems == [
        f"RELAY_API_TOKEN (from RELAY_SECRETS_DIR): cannot read {token!r} (UnicodeDecodeError)"
    ]
    with pytest.raises(ConfigError) as caught:
        load_settings({**KNOCK, "RELAY_SECRETS_DIR": str(tmp_path / "nowhere")})
    assert caught.value.problems == [f"RELAY_SECRETS_DIR: {str(tmp_path / 'nowhere')!r} is not a folder"]


def test_setting_files_that_are_not_plain_small_text_and_urls_with_passwords_are_refused_plainly(tmp_path: Any) -> None:
    import os

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_text("t" * 70_000)
    with pytest.raises(ConfigError) as caught:
        files = {"RELAY_API_TOKEN_FILE": str(tmp_path / "fifo"), "KNOCK_API_KEY_FILE": str(tmp_path / "big")}
        load_settings({**KNOCK, **files, "KNOCK_API_KEY": "", "REDIS_URL": "http://:hunter2@redis:6379/0"})
    problems = "\n".join(caught.value.problems)
    assert f"RELAY_API_TOKEN_FILE: {str(tmp_path / 'fifo')!r} is not a file" in problems
    assert "KNOCK_API_KEY_FILE: " in problems and "is longer than 65536 characters" in problems
    assert "REDIS_URL: must be a redis/rediss/unix URL, got 'http://redis:6379/0'" in problems
    assert "hunter2" not in problems


def test_warnings_name_an_unguarded_sentinel_setup_and_spare_the_worker_the_webhooks_concerns() -> None:
    from relay.config import production_warnings

    s = load_settings({**KNOCK, "REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "relay"})
    web, worker = production_warnings(s), production_warnings(s, role="worker")
    assert any(w.startswith("RELAY_REDIS_MIN_REPLICAS: 0 with Sentinel") for w in web)
    assert worker == [w for w in web if w.startswith("RELAY_REDIS_MIN_REPLICAS")]
    guarded = load_settings(
        {**KNOCK, "REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "r", "RELAY_REDIS_MIN_REPLICAS": "1"}
    )
    assert production_warnings(guarded, role="worker") == []


def test_with_sentinels_redis_urls_database_password_and_tls_still_apply_its_address_does_not() -> None:
    from relay.redis_connection import connect

    s = load_settings({**KNOCK, "REDIS_URL": "rediss://:data-pw@ignored.example:6380/5?ssl_ca_certs=/ca.pem",
                       "REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "relay"})  # fmt: skip
    client = connect(s, socket_timeout=1)  # nothing is contacted until a command is sent
    options = client.connection_pool.connection_kwargs
    assert (options["db"], options["password"], options["ssl_ca_certs"]) == (5, "data-pw", "/ca.pem")
    assert "host" not in options and client.connection_pool.connection_class.__name__ == "SentinelManagedSSLConnection"
