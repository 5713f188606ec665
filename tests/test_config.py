"""Settings from the environment (SPEC §3)."""

from __future__ import annotations

import subprocess
import sys

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
