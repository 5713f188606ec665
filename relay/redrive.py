"""Replaying every delivery a search finds: the dead ones a Knock outage or a bad setting left
behind, found by the same filters as the delivery list, and queued again, each one audited.

Replaying twice queues nothing new: a replayed delivery is queued, no longer dead."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from relay.audit import record_action
from relay.errors import Conflict, NotFound
from relay.intake import is_spam_ignored, replay_delivery
from relay.services import Services
from relay.store import IGNORED, REPLAYABLE, Delivery, Search

#: Deliveries read per page while walking a search's matches.
PAGE = 500


@dataclass(frozen=True)
class Redrive:
    """Which deliveries to replay: a search of the delivery list (its status must be replayable),
    and text the last error must contain."""

    search: Search
    last_error: str | None = None

    def __post_init__(self) -> None:
        if self.search.status not in REPLAYABLE:
            raise ValueError(f"only {', '.join(REPLAYABLE)} deliveries can be replayed")

    def takes(self, delivery: Delivery) -> bool:
        if delivery.status != self.search.status:
            return False
        if delivery.status == IGNORED and not (is_spam_ignored(delivery) and delivery.prospectId):
            return False  # ignored for another reason (a virus, an auto-reply), or spam with no prospect yet
        return not self.last_error or self.last_error.lower() in (delivery.lastError or "").lower()


def matching(services: Services, redrive: Redrive) -> Iterator[Delivery]:
    """Every delivery the redrive takes, newest first, read a page at a time."""
    cursor = None
    while True:
        page = services.store.search(redrive.search, cursor=cursor, limit=PAGE)
        yield from (delivery for delivery in page.deliveries if redrive.takes(delivery))
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def count_matching(services: Services, redrive: Redrive) -> int:
    return sum(1 for _ in matching(services, redrive))


def replay_matching(services: Services, redrive: Redrive, operator: str) -> list[str]:
    """Queue every matching delivery again; the ids queued. Each is recorded as the operator's action."""
    return replay_ids(services, [delivery.id for delivery in matching(services, redrive)], operator)


def replay_ids(services: Services, ids: Iterable[str], operator: str) -> list[str]:
    """Queue these deliveries again (found first: a replay changes the indexes a search walks)."""
    replayed = []
    for delivery_id in ids:
        try:
            replay_delivery(services, delivery_id)
        except (NotFound, Conflict):
            continue  # replayed meanwhile, expired, or nothing left to send
        record_action(services.redis, operator, "replay", delivery_id, "bulk replay")
        replayed.append(delivery_id)
    return replayed
