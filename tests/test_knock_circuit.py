"""The Knock circuit on a real Redis: when it opens and closes, who may call Knock meanwhile, how
open time is measured, and where operators see it (metrics, console). The outage end to end is
tests/faults/test_knock_outage.py."""

from __future__ import annotations

import time
from typing import Any

import pytest

from relay.circuit import SPELLS_KEY, STATE_KEY, KnockCircuit, open_overlap
from relay.knock.client import KnockTransientError
from relay.services import Services
from relay.worker import build_forwarder
from tests.test_console import sign_in


@pytest.fixture
def circuit(services: Services) -> KnockCircuit:
    services.redis.delete(STATE_KEY, SPELLS_KEY)
    return KnockCircuit(services.redis, threshold=2, probe_seconds=0.3, keep_seconds=3600)


def test_open_time_is_the_overlap_of_the_open_spells_with_the_deliverys_life() -> None:
    spells = [(100, 200), (300, 450)]
    assert open_overlap(spells, 0, 1000) == 250
    assert open_overlap(spells, 150, 1000) == 200  # received during the first spell
    assert open_overlap(spells, 500, 1000) == 0  # received after both
    assert open_overlap(spells, 0, 350) == 150  # asked during the second


def allowed(services: Services, circuit: KnockCircuit) -> str:
    """What the circuit allows a worker taking a delivery (the lock-and-read step; a fresh id each time)."""
    return services.store.lock_and_read(f"d-{time.monotonic_ns()}", "token", 1000, circuit.probe_ms).knock


def test_failures_in_a_row_open_it_and_then_only_one_probe_at_a_time_may_call(
    services: Services, circuit: KnockCircuit
) -> None:
    assert allowed(services, circuit) == "send"
    assert circuit.failed() is False
    assert allowed(services, circuit) == "recovering"  # sending, and a success resets the count
    assert circuit.failed() is True  # the second in a row opens it
    assert circuit.read().open
    probe_at = circuit.read().probe_at
    assert allowed(services, circuit) == str(probe_at)  # wait for the probe
    assert probe_at is not None and circuit.wait_until(probe_at) > probe_at
    time.sleep(0.35)
    assert allowed(services, circuit) == "probe"
    assert allowed(services, circuit).isdigit()  # the next probe is a whole interval away
    assert circuit.failed() is False  # a failed probe: still open
    opened_at = circuit.read().opened_at
    assert opened_at is not None
    time.sleep(0.1)
    assert circuit.succeeded() is True
    assert allowed(services, circuit) == "send"
    assert 0.1 <= circuit.open_seconds_since(opened_at - 5000) < 5


def test_a_success_between_failures_keeps_it_closed(circuit: KnockCircuit) -> None:
    circuit.failed()
    circuit.succeeded()
    assert circuit.failed() is False
    assert not circuit.read().open


def test_knock_pacing_us_is_not_an_outage(services: Services, make_settings: Any) -> None:
    services.redis.delete(STATE_KEY)
    forwarder = build_forwarder(Services(make_settings(RELAY_KNOCK_CIRCUIT_FAILURES="1"), patient=True))
    forwarder._knock_failed(KnockTransientError("Knock answered 429", status=429))
    assert forwarder.circuit is not None and not forwarder.circuit.read().open
    forwarder._knock_failed(KnockTransientError("Knock answered 503", status=503))
    assert forwarder.circuit.read().open
    services.redis.delete(STATE_KEY)


def test_operators_see_the_open_circuit_in_metrics_and_on_the_console(
    client: Any, circuit: KnockCircuit, services: Services
) -> None:
    assert "relay_knock_circuit_open 0.0" in client.get("/metrics").text
    sign_in(client)
    assert "Sending" in client.get("/console/").text
    circuit.failed()
    circuit.failed()
    try:
        assert "relay_knock_circuit_open 1.0" in client.get("/metrics").text
        page = client.get("/console/").text
        assert "Paused: Knock is down" in page and "one delivery probes Knock every 30 s" in page
    finally:
        services.redis.delete(STATE_KEY, SPELLS_KEY)
