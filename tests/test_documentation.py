"""The README and .env.example describe every setting the code reads, on their own."""

from __future__ import annotations

import re
from pathlib import Path

from relay.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
SETTING = re.compile(
    r"\b(?:RELAY|KNOCK|MAILGUN|MANDRILL|BREVO|RESEND|POSTMARK)_[A-Z_]+\b|\b(?:REDIS_URL|PORT|WEB_CONCURRENCY|LOG_LEVEL)\b"
)


def settings_read_by_the_code() -> set[str]:
    sources = [*ROOT.joinpath("relay").rglob("*.py"), ROOT / "wsgi.py", ROOT / "gunicorn.conf.py"]
    names: set[str] = set()
    for source in sources:
        names.update(re.findall(r'["\'](' + SETTING.pattern + r')["\']', source.read_text()))
    return names - {"RELAY_TEST_REDIS_URL", "KNOCK_CIRCUIT_KEY"}  # the second is a Redis key's name


def test_readme_settings_table_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    documented = set(SETTING.findall(table))
    missing = settings_read_by_the_code() - documented
    assert not missing, missing
    assert "SPEC" not in readme


def test_env_example_lists_every_variable_and_is_a_valid_configuration() -> None:
    lines = [line for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines)
    assert settings_read_by_the_code() <= set(env), settings_read_by_the_code() - set(env)
    settings = load_settings({**env, "KNOCK_API_KEY": "key"})
    assert settings.require_durable_redis is True and settings.environment == "production"
