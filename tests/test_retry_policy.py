"""The retry policy as data: jittered exponential backoff between bounds, Retry-After, maximum age."""

from __future__ import annotations

import pytest

from relay.forwarding import RetryPolicy
from relay.knock.client import TRANSIENT_STATUSES, parse_retry_after

POLICY = RetryPolicy(min_backoff=15, max_backoff=3600, max_age=259200)


@pytest.mark.parametrize(
    ("attempt", "low", "high"), [(1, 15, 15), (2, 15, 30), (3, 30, 60), (8, 960, 1920), (20, 1800, 3600)]
)
def test_backoff_doubles_with_jitter_inside_the_bounds(attempt: int, low: float, high: float) -> None:
    assert POLICY.delay_for(attempt, rand=lambda: 0.0) == low
    assert POLICY.delay_for(attempt, rand=lambda: 1.0) == high


def test_retry_after_is_a_floor() -> None:
    assert POLICY.delay_for(1, retry_after=120, rand=lambda: 0.5) == 120
    assert POLICY.delay_for(20, retry_after=5, rand=lambda: 1.0) == 3600


def test_remaining_age_counts_from_the_start() -> None:
    assert POLICY.remaining(started_ms=0, now=1000 * 259100) == pytest.approx(100)
    assert POLICY.remaining(started_ms=0, now=1000 * 259300) < 0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("30") == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480) == 30
    assert parse_retry_after("soon") is None


def test_transient_statuses_are_the_documented_ones() -> None:
    assert {408, 425, 429, 500, 502, 503, 504, 599} <= TRANSIENT_STATUSES
    assert not {400, 401, 403, 404, 409, 422} & TRANSIENT_STATUSES
