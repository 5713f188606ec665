"""Delivery records, de-duplication claims, status transitions and the indexes that list them, in Redis.

A delivery is one email logged for one prospect (`records`). The store's Lua scripts (`scripts`)
write a record, its claim and its index entries in one step (`changes`); claims make the same
email for the same prospect land once within the de-duplication window and locks keep one worker
per delivery (`claims`); `reads` reads one delivery, `indexes` lists and counts them.
"""

from relay.store.changes import Changes
from relay.store.claims import Claims
from relay.store.indexes import Indexes, Page, Search, address_searched, subject_words
from relay.store.reads import Reads
from relay.store.records import (
    DEAD,
    DELIVERED,
    DELIVERY_FIELDS,
    DIRECTORY_VERSION_KEY,
    DUE_KEY,
    DUPLICATE,
    FETCHED,
    IGNORED,
    KNOCK_CIRCUIT_KEY,
    PENDING,
    POSSIBLE_DUPLICATES_KEY,
    PREFIX,
    QUEUED,
    REPLAYABLE,
    RETRYING,
    STATUSES,
    UNMATCHED,
    Delivery,
    NewRecord,
    QueueWrite,
    Stored,
    iso_from_ms,
    knock_stats_key,
    message_key,
    ms_from,
    new_delivery_id,
    now_ms,
)
from relay.store.scripts import run_script_once


class DeliveryStore(Changes, Claims, Reads, Indexes):
    """Every operation on deliveries, each module's part of it on one Redis client."""


__all__ = [
    "DEAD", "DELIVERED", "DELIVERY_FIELDS", "DIRECTORY_VERSION_KEY", "DUE_KEY", "DUPLICATE", "FETCHED",
    "IGNORED", "KNOCK_CIRCUIT_KEY", "PENDING", "POSSIBLE_DUPLICATES_KEY", "PREFIX", "QUEUED", "REPLAYABLE",
    "RETRYING", "STATUSES", "UNMATCHED",
    "Delivery", "DeliveryStore", "NewRecord", "Page", "QueueWrite", "Search", "Stored", "address_searched",
    "iso_from_ms", "knock_stats_key", "message_key", "ms_from", "new_delivery_id", "now_ms", "run_script_once",
    "subject_words",
]  # fmt: skip
