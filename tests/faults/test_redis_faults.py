"""The worker and the web side through Redis stops, hangs and restarts, and a cut connection.

Run alone with `python3 dev.py test -m fault`.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.faults.conftest import FaultStack, RedisServer, TcpProxy
from tests.helpers import mime, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


def seeded(stack: FaultStack, prospect_id: str = "P1", address: str = "renter@example.com") -> None:
    stack.sandbox.seed(prospect_id, agent="pat")
    assert stack.api("PUT", f"/v1/prospects/{prospect_id}", json={"emails": [address]}).ok


def post_one(stack: FaultStack, message_id: str) -> str:
    response = stack.post(mime(message_id=f"<{message_id}>"))
    assert response.status_code == 200, response.text
    return str(response.json()["deliveries"][0]["id"])


def logged(stack: FaultStack, prospect_id: str = "P1") -> list[dict[str, Any]]:
    return stack.sandbox.events(prospect_id)


@pytest.mark.parametrize("fault", ["stop", "hang"])
def test_a_waiting_retry_goes_out_after_redis_comes_back(
    fault_stack: FaultStack, fault_redis: RedisServer, fault: str
) -> None:
    """Defect: the retry, held in the worker's memory, was forgotten when Redis went away."""
    seeded(fault_stack)
    fault_stack.sandbox.fault(status=503, count=1, retryAfter="4")
    worker = fault_stack.start_worker()
    delivery_id = post_one(fault_stack, "outage@example.com")
    wait_until(lambda: fault_stack.delivery(delivery_id)["status"] == "retrying", timeout=20)

    if fault == "stop":
        fault_redis.stop()
        time.sleep(6)
        fault_redis.start()
    else:
        fault_redis.hang()
        time.sleep(6)
        fault_redis.resume()

    shown = wait_until(lambda: (d := fault_stack.delivery(delivery_id))["status"] == "delivered" and d, timeout=45)
    assert shown["attempts"] == 2 and shown["possibleDuplicate"] is False
    assert len(logged(fault_stack)) == 1
    assert worker.poll() is None  # recovered by itself, no restart
    # and it keeps working: a new email goes straight through
    later = post_one(fault_stack, "after-outage@example.com")
    wait_until(lambda: fault_stack.delivery(later)["status"] == "delivered", timeout=20)
    assert not any(b"Exception in thread" in path.read_bytes() for path in fault_stack.logs.glob("worker-*.log"))


def test_a_failed_status_write_after_knock_answered_is_retried_not_resent(
    fault_stack: FaultStack, fault_redis: RedisServer
) -> None:
    """The worker reaches Redis through a proxy that is cut while Knock takes its time to answer 200."""
    seeded(fault_stack)
    proxy = TcpProxy(fault_redis.port)
    try:
        fault_stack.sandbox.fault(status=0, count=1, delay=3)  # a slow, successful answer
        fault_stack.start_worker(redis_url=proxy.url)
        delivery_id = post_one(fault_stack, "cut@example.com")
        wait_until(lambda: fault_stack.sandbox.started(), timeout=20)  # Knock is answering now
        proxy.cut()
        time.sleep(5)  # Knock answered meanwhile; the worker cannot record it
        assert fault_stack.delivery(delivery_id)["status"] == "queued"
        proxy.mend()
        shown = wait_until(lambda: (d := fault_stack.delivery(delivery_id))["status"] == "delivered" and d, timeout=30)
    finally:
        proxy.close()
    assert len(logged(fault_stack)) == 1, "the email was sent twice"
    assert shown["attempts"] == 1 and shown["possibleDuplicate"] is False


def killed_between_send_and_record(fault_stack: FaultStack, message_id: str) -> dict[str, Any]:
    """Knock takes two seconds to answer the first send; its sender is SIGKILLed meanwhile and a
    new worker takes the delivery over. The delivery once it is delivered."""
    seeded(fault_stack)
    fault_stack.sandbox.fault(status=0, count=1, delay=2)
    first = fault_stack.start_worker()
    delivery_id = post_one(fault_stack, message_id)
    wait_until(lambda: fault_stack.sandbox.started(), timeout=20)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    fault_stack.start_worker()
    return wait_until(lambda: (d := fault_stack.delivery(delivery_id))["status"] == "delivered" and d, timeout=60)


def test_a_worker_killed_between_send_and_record_finds_the_email_in_knock_and_sends_nothing_again(
    fault_stack: FaultStack,
) -> None:
    """Knock finished the first request although its sender died: the next attempt finds it among
    the prospect's events and records it delivered."""
    shown = killed_between_send_and_record(fault_stack, "killed@example.com")
    assert len(logged(fault_stack)) == 1, "sent again although Knock had it"
    assert shown["possibleDuplicate"] is False and shown["attempts"] == 1
    assert shown["communicationId"] == logged(fault_stack)[0]["communicationId"]


def test_when_knock_will_not_list_its_events_the_email_is_sent_again_and_flagged(fault_stack: FaultStack) -> None:
    """The one window where a double is possible: it is visible on the record. (A 5xx is waited
    out instead: Knock may list them later.)"""
    fault_stack.sandbox.fault(status=404, count=1, path="events")
    shown = killed_between_send_and_record(fault_stack, "unreadable@example.com")
    assert shown["possibleDuplicate"] is True and shown["attempts"] == 2
    assert len(logged(fault_stack)) == 2
    flagged = fault_stack.api("GET", "/v1/deliveries", params={"status": "delivered"}).json()["deliveries"]
    assert [d["id"] for d in flagged if d["possibleDuplicate"]] == [shown["id"]]
