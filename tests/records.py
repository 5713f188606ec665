"""Generated delivery records, as a leasing company's month of mail would leave them: for tests that
need more records than any page or search limit, and for bench/search.py."""

from __future__ import annotations

import random
from collections.abc import Iterator

from relay.store import (
    DEAD,
    DELIVERED,
    IGNORED,
    QUEUED,
    RETRYING,
    UNMATCHED,
    Delivery,
    NewRecord,
)

DAY_MS = 86_400_000
STATUS_WEIGHTS = {DELIVERED: 88, QUEUED: 2, RETRYING: 1, DEAD: 3, UNMATCHED: 5, IGNORED: 1}
PROVIDER_WEIGHTS = {"sendgrid": 34, "mailgun": 25, "postmark": 15, "ses": 8, "mandrill": 5, "sparkpost": 4,
                    "mailjet": 3, "brevo": 2, "resend": 2, "mailersend": 1, "api": 1}  # fmt: skip
SUBJECTS = [
    "Re: Tour on {day} at {hour}",
    "Application for unit {unit}",
    "Question about parking at {building}",
    "Re: Re: Lease renewal for {unit}",
    "Your appointment on {day}",
    "Pet policy question",
    "Move-in date for {unit} at {building}",
    "Fwd: Maintenance request {unit}",
    "Thanks for visiting {building} on {day}",
    "Availability of two bedroom apartments",
]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "sunday"]  # never "saturday": tests search for it
BUILDINGS = ["Maple Court", "Harbor View", "Elm Street Lofts", "Riverside", "Oak Terrace"]


def delivery_id_at(ms: int, rng: random.Random) -> str:
    """An id as relay.store.new_delivery_id makes them, for a record received at `ms`."""
    return f"{ms & 0xFFFFFFFFFFFF:012x}{rng.getrandbits(16):04x}{rng.getrandbits(64):016x}"


def month_of_mail(count: int, now: int, *, days: int = 30, seed: int = 7) -> Iterator[NewRecord]:
    """`count` records received over the `days` before `now`, oldest first; delivered ones without
    their Knock body (dropped once delivered), the others with a body of about a kilobyte."""
    rng = random.Random(seed)
    statuses, status_weights = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
    providers, provider_weights = list(PROVIDER_WEIGHTS), list(PROVIDER_WEIGHTS.values())
    start = now - days * DAY_MS
    step = days * DAY_MS / count
    for n in range(count):
        received = int(start + n * step) + 1
        status = rng.choices(statuses, status_weights)[0]
        renter = rng.randrange(20_000)
        agent = rng.randrange(200)
        inbound = rng.random() < 0.5
        renter_address, agent_address = f"renter{renter}@example.net", f"agent{agent}@leasing.example.com"
        subject = rng.choice(SUBJECTS).format(day=rng.choice(DAYS), hour=f"{rng.randrange(9, 18)}:00",
                                              unit=f"{rng.randrange(100, 999)}{rng.choice('ABCD')}",
                                              building=rng.choice(BUILDINGS))  # fmt: skip
        delivery = Delivery(
            id=delivery_id_at(received, rng),
            status=status,
            type="EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED" if inbound else "EMAIL_MESSAGE_TO_PROSPECT_SENT",
            messageId=f"m{n}.{seed}@mail.example.net",
            provider=rng.choices(providers, provider_weights)[0],
            subject=subject,
            sentTime="",
            receivedAt=received,
            direction="inbound" if inbound else "outbound",
            prospectId=None if status in (UNMATCHED, IGNORED) else f"P{renter}",
            agentUsername=f"agent{agent}",
            attempts=1 if status == DELIVERED else 0,
            sender=renter_address if inbound else agent_address,
            recipients=[agent_address if inbound else renter_address],
        )
        body = None if status == DELIVERED else {"type": delivery.type, "subject": subject, "body": "x" * 1000}
        yield NewRecord(delivery, body, claim=False)
