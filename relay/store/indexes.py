"""The indexes that find deliveries, and searches and counts over them.

Every index is a sorted set of delivery ids scored by receipt time (ms): all deliveries, and those
of one status, prospect, Message-ID, provider, address (sender or recipient) or subject word. The
create script writes a record's entries in the same step as the record (`index_keys` names them);
the transition script moves it between status indexes. Each write trims the entries older than
the record lifetime from the keys it touches and renews their expiry, so an index lives no longer
than the newest record in it and a key nobody writes to any more expires with its records.

A search names one index per filter and a time range; the search script walks the smallest of
them newest first and keeps the ids that every other index holds too, up to a page or a budget of
index reads. A page therefore either holds every match down to its end, or says where the walk
stopped (`Page.stopped_at`) with a cursor to go on from there.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

from relay.knock.schema import NO_SUBJECT
from relay.store.records import (
    DELIVERY_FIELDS,
    PREFIX,
    STATUSES,
    Delivery,
    knock_stats_key,
    message_key,
    now_ms,
)
from relay.store.scripts import ScriptedStore, run_script_once

ALL_KEY = f"{PREFIX}idx:all"
#: An index no write ever makes: a search for something no delivery can match.
NOTHING_KEY = f"{PREFIX}idx:nothing"
#: Subject words indexed per record, and the characters of a word that count (longer ones are cut).
MAX_SUBJECT_WORDS = 40
MAX_WORD_CHARS = 40
#: Index entries a search reads per call (ids from the index it walks, and lookups of them in the
#: others) before it answers with where it stopped.
SEARCH_BUDGET = 10_000
#: Words a subject search may name: no subject is found by more (the console refuses more, and the
#: API finds nothing for them).
MAX_SEARCH_WORDS = MAX_SUBJECT_WORDS

#: A word: a run of characters other than white space, control characters and punctuation (ASCII,
#: Latin-1's `¡«»¿` and the like, the typographic quotes, dashes and ellipsis of U+2000–U+206F, and
#: CJK punctuation), so `don’t` and `don't` are both the words `don` and `t`.
WORD_CHARACTER = r"[^\s\x00-\x2f\x3a-\x40\x5b-\x60\x7b-\xbf\u2000-\u206f\u3000-\u303f]"
_WORD = re.compile(WORD_CHARACTER + "+")


def status_key(status: str) -> str:
    return f"{PREFIX}idx:status:{status}"


def prospect_key(prospect_id: str) -> str:
    return f"{PREFIX}idx:prospect:{prospect_id}"


def message_index_key(message_id: str) -> str:
    return f"{PREFIX}idx:message:{message_key(message_id)}"


def provider_key(provider: str) -> str:
    return f"{PREFIX}idx:provider:{provider}"


def address_key(address: str) -> str:
    """An address's index, named by a digest of the address lowercased (no address in key names)."""
    digest = hashlib.sha256(address.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{PREFIX}idx:address:{digest}"


def word_key(word: str) -> str:
    return f"{PREFIX}idx:word:{word}"


def folded(text: str) -> str:
    """`text` as words are compared: accents and case set aside (`Café`, `Cafe\u0301` and `cafe`
    alike, `İstanbul` and `istanbul`), compatibility forms unified (`ﬁ` and `fi`)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def subject_words(text: str, limit: int = MAX_SUBJECT_WORDS) -> list[str]:
    """The words a subject is found by: runs of WORD_CHARACTER, folded, each cut to MAX_WORD_CHARS,
    without repeats, the first `limit` of them."""
    words: dict[str, None] = {}
    for match in _WORD.finditer(folded(text[: MAX_SUBJECT_WORDS * (MAX_WORD_CHARS + 1) * 4])):
        words[match.group()[:MAX_WORD_CHARS]] = None
        if len(words) >= limit:
            break
    return list(words)


def search_words_problem(text: str) -> str | None:
    """Why a subject search cannot be run, or None."""
    words = subject_words(text, MAX_SEARCH_WORDS + 1)
    if not words:
        return "give at least one word (letters or digits)"
    if len(words) > MAX_SEARCH_WORDS:
        return f"give at most {MAX_SEARCH_WORDS} words"
    return None


def address_searched(text: str | None) -> str | None:
    """The address a search means: `Jamie Lee <jamie.lee@example.org>` as its address, lowercased."""
    if not text or not text.strip():
        return None
    _, address = parseaddr(text.strip())
    return (address or text).strip().lower()


def index_keys(delivery: Delivery, addresses: Sequence[str] | None = None) -> list[str]:
    """Every index a new record is entered in: by its `addresses` when given, else by all of its own."""
    keys = [status_key(delivery.status), ALL_KEY, message_index_key(delivery.messageId)]
    if delivery.prospectId:
        keys.append(prospect_key(delivery.prospectId))
    if delivery.provider:
        keys.append(provider_key(delivery.provider))
    wanted = delivery.addresses() if addresses is None else [a.lower() for a in addresses]
    keys += dict.fromkeys(address_key(address) for address in wanted)
    if delivery.subject and delivery.subject != NO_SUBJECT:
        keys += (word_key(word) for word in subject_words(delivery.subject))
    return keys


@dataclass(frozen=True)
class Search:
    """What to look for; every filter given must hold."""

    status: str | None = None
    message_id: str | None = None
    prospect_id: str | None = None
    provider: str | None = None
    address: str | None = None
    words: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def keys(self) -> list[str]:
        keys = []
        if self.message_id:
            keys.append(message_index_key(self.message_id))
        if self.prospect_id:
            keys.append(prospect_key(self.prospect_id))
        if self.status:
            keys.append(status_key(self.status))
        if self.provider:
            keys.append(provider_key(self.provider))
        if self.address:
            keys.append(address_key(self.address))
        words = subject_words(self.words or "", MAX_SEARCH_WORDS + 1)
        if self.words and not 0 < len(words) <= MAX_SEARCH_WORDS:
            return [NOTHING_KEY]  # no word to look for (only accents, say), or more than any subject has
        keys += (word_key(word) for word in words)
        return keys or [ALL_KEY]


@dataclass(frozen=True)
class Page:
    """Matches newest first. `next_cursor` continues after the last of them when more may exist;
    `stopped_at`, when set, is the receipt time (ms) down to which the search looked before its
    budget ran out: older matches may exist, and `next_cursor` goes on from there."""

    deliveries: list[Delivery]
    next_cursor: str | None = None
    stopped_at: int | None = None


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """A cursor (`{receivedAt}_{id}`) as (ms, id); None for none or one that is not a cursor."""
    if not cursor:
        return None
    score_text, _, last_id = cursor.partition("_")
    if not (score_text.isascii() and score_text.isdigit() and last_id.isascii() and last_id.isalnum()):
        return None
    return int(score_text), last_id


class Indexes(ScriptedStore):
    """Searches and counts over the indexes."""

    #: Ids one search call examines at most before it answers with where it stopped.
    search_budget = SEARCH_BUDGET

    def knock_answers_since(self, since_ms: int) -> tuple[int, int]:
        """Knock's 2xx answers and errors (other statuses, timeouts) in the hours since `since_ms`."""
        keys = [knock_stats_key(ms) for ms in range(since_ms - since_ms % 3_600_000, now_ms() + 1, 3_600_000)]
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.hmget(key, "ok", "error")
        ok = error = 0
        for good, bad in pipe.execute():
            ok += int(good or 0)
            error += int(bad or 0)
        return ok, error

    def count_by_status(self, since_ms: int) -> dict[str, int]:
        pipe = self.redis.pipeline()
        for status in STATUSES:
            pipe.zcount(status_key(status), since_ms, "+inf")
        return dict(zip(STATUSES, map(int, pipe.execute()), strict=True))

    def received_per_hour(self, hours: int) -> list[tuple[int, int]]:
        """(hour start in ms, deliveries received) for the last `hours` hours, oldest first."""
        current = now_ms() - now_ms() % 3_600_000
        starts = [current - i * 3_600_000 for i in range(hours - 1, -1, -1)]
        pipe = self.redis.pipeline()
        for start in starts:
            pipe.zcount(ALL_KEY, start, f"({start + 3_600_000}")
        return list(zip(starts, map(int, pipe.execute()), strict=True))

    def ids_with_status(self, status: str) -> list[str]:
        return [str(m) for m in self.redis.zrange(status_key(status), 0, -1)]

    def search(self, search: Search, *, cursor: str | None = None, limit: int = 50, budget: int | None = None) -> Page:
        """One page of the deliveries matching `search`, older than `cursor` (see Page)."""
        top = "+inf" if search.until_ms is None else str(search.until_ms)
        after = parse_cursor(cursor)
        if after is not None and search.until_ms is not None and after[0] > search.until_ms:
            after = None  # a cursor beyond the range: the range's own end comes first
        if after is not None:
            top = str(after[0])
        bottom = "-inf" if search.since_ms is None else str(search.since_ms)
        reply = run_script_once(
            self.redis,
            self._search,
            search.keys(),
            [top, bottom, after[1] if after else "", limit + 1, budget or self.search_budget, f"{PREFIX}delivery:"],
        )
        outcome, stop_score, stop_id = reply[0], reply[1], reply[2]
        found = [(str(reply[i]), int(reply[i + 1])) for i in range(3, len(reply), 2)]
        deliveries = self._read_listed([delivery_id for delivery_id, _ in found[:limit]])
        if len(found) > limit:
            last_id, last_score = found[limit - 1]
            return Page(deliveries, next_cursor=f"{last_score}_{last_id}")
        if outcome == "stopped":
            return Page(deliveries, next_cursor=f"{stop_score}_{stop_id}", stopped_at=int(stop_score))
        return Page(deliveries)

    def reindex(self, *, batch: int = 1000) -> int:
        """Enter every record in the indexes its create script would have written (for records
        stored before an index existed); entries already there are written again, unchanged.
        Reads all deliveries `batch` at a time, oldest first; how many records were entered."""
        entered = 0
        start = 0
        while True:
            members = self.redis.zrange(ALL_KEY, start, start + batch - 1)
            if not members:
                return entered
            start += len(members)
            pipe = self.redis.pipeline(transaction=False)
            for delivery in self._read_listed([str(m) for m in members]):
                for key in index_keys(delivery):
                    pipe.zadd(key, {delivery.id: delivery.receivedAt})
                    pipe.expire(key, self.record_ttl)
                entered += 1
            pipe.execute()

    def _read_listed(self, ids: Sequence[str]) -> list[Delivery]:
        """The records of `ids` without their Knock bodies; one that expired meanwhile is left out."""
        pipe = self.redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hmget(self.record_key(delivery_id), DELIVERY_FIELDS)
        listed = []
        for values in pipe.execute():
            raw = {name: value for name, value in zip(DELIVERY_FIELDS, values, strict=True) if value is not None}
            if raw:
                listed.append(Delivery.from_hash(raw))
        return listed
