"""Redis must keep its data: the relay reads the server's persistence at start and on /readyz."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis

from relay.app import create_app
from relay.config import ConfigError
from relay.persistence import inspect_persistence
from tests.helpers import relay_env

DURABLE = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")


def test_aof_with_noeviction_is_durable(own_redis: Callable[..., str]) -> None:
    report = inspect_persistence(redis.Redis.from_url(own_redis(*DURABLE)))
    assert report.durable is True and report.problems == ()
    assert (report.aof, report.appendfsync, report.maxmemory_policy) == (True, "everysec", "noeviction")


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        (("--appendonly", "no", "--maxmemory-policy", "noeviction"), "appendonly is off"),
        (("--appendonly", "yes", "--appendfsync", "no", "--maxmemory-policy", "noeviction"), "appendfsync is 'no'"),
        (("--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"), "maxmemory-policy is 'allkeys-lru'"),
    ],
)
def test_each_unsafe_setting_is_named(own_redis: Callable[..., str], settings: tuple[str, ...], problem: str) -> None:
    report = inspect_persistence(redis.Redis.from_url(own_redis(*settings)))
    assert report.durable is False
    assert [p for p in report.problems if p.startswith(problem)], report.problems


def test_readyz_reports_persistence(own_redis: Callable[..., str], make_settings: Any) -> None:
    volatile = create_app(make_settings(REDIS_URL=own_redis("--appendonly", "no"))).test_client().get("/readyz")
    assert volatile.status_code == 200
    assert volatile.json["persistence"]["durable"] is False
    assert volatile.json["persistence"]["appendonly"] is False
    durable = create_app(make_settings(REDIS_URL=own_redis(*DURABLE))).test_client().get("/readyz")
    assert durable.status_code == 200 and durable.json["persistence"]["durable"] is True


def test_required_durability_refuses_to_start_on_a_volatile_redis(own_redis: Callable[..., str], make_settings: Any):
    url = own_redis("--appendonly", "no")
    with pytest.raises(ConfigError) as refused:
        create_app(make_settings(REDIS_URL=url, RELAY_REQUIRE_DURABLE_REDIS="true"))
    assert refused.value.problems == [
        "REDIS_URL: appendonly is off: a restart loses queued deliveries, de-duplication keys and the directory "
        "(RELAY_REQUIRE_DURABLE_REDIS is on)"
    ]
    worker = subprocess.run(
        [sys.executable, "-m", "relay", "worker"],
        env=relay_env("http://127.0.0.1:1", REDIS_URL=url, RELAY_REQUIRE_DURABLE_REDIS="true", RELAY_WORKER_PORT="0",
                      PATH="/usr/bin:/bin"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert worker.returncode == 1
    assert "configuration error: REDIS_URL: appendonly is off" in worker.stderr


def test_required_durability_starts_on_a_durable_redis_and_readyz_follows(
    own_redis: Callable[..., str], make_settings: Any
) -> None:
    url = own_redis(*DURABLE)
    client = create_app(make_settings(REDIS_URL=url, RELAY_REQUIRE_DURABLE_REDIS="true")).test_client()
    assert client.get("/readyz").status_code == 200
    # Someone turns AOF off at run time: readiness drops once the cached report is re-read.
    redis.Redis.from_url(url).config_set("appendonly", "no")
    client.application.extensions["relay"].persistence.max_age = 0
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json["redis"] == "not durable"


def test_without_requirement_a_volatile_redis_only_warns(own_redis: Callable[..., str], make_settings: Any, caplog):
    create_app(make_settings(REDIS_URL=own_redis("--appendonly", "no")))
    assert any("appendonly is off" in record.getMessage() for record in caplog.records)
