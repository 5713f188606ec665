"""Prospects and agents in Redis: Knock cannot look a prospect up by email, so we keep the map.

Keys:
  relay:prospect:{id}             JSON {prospectId, emails, agentUsername}
  relay:prospects-by-email:{addr} set of prospect ids (one renter may be a prospect at several properties)
  relay:agent:{username}          JSON {username, emails}
  relay:agent-by-email:{addr}     username
  relay:knock-agent:{id}          agent username Knock reported for a prospect (cache)
  relay:directory-version         a fresh random value written with every change of the above but the cache

Web processes keep what they read for routing in memory, stamped with the version it was read
at. Whatever is stored on the strength of that copy is written by a script that first compares
the version: a change since makes it write nothing, and the email is routed again on a fresh read.
A copy is also dropped after COPY_SECONDS, for changes that write no version (a relay from before
versions during a rolling upgrade, a hand edit in Redis).
"""

from __future__ import annotations

import csv
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

import redis
from marshmallow import ValidationError, validate

from relay.errors import Conflict, InvalidRequest
from relay.ids import path_id_problem
from relay.message import Email
from relay.routing import DirectoryView, addresses_to_look_up, reply_tag_prospect
from relay.store import DIRECTORY_VERSION_KEY

PREFIX = "relay:"
KNOCK_AGENT_CACHE_SECONDS = 3600
#: Entries a process keeps of what it read (addresses and prospects); past it the copy starts over.
CACHE_ENTRIES = 20_000
#: Age at which a process's copy is dropped whatever the version says.
COPY_SECONDS = 60.0


def _prospect_key(prospect_id: str) -> str:
    return f"{PREFIX}prospect:{prospect_id}"


def _email_key(address: str) -> str:
    return f"{PREFIX}prospects-by-email:{address.lower()}"


def _agent_key(username: str) -> str:
    return f"{PREFIX}agent:{username}"


def _agent_email_key(address: str) -> str:
    return f"{PREFIX}agent-by-email:{address.lower()}"


def normalise_emails(emails: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(e.strip().lower() for e in emails if e and e.strip()))


def require_usable_id(what: str, value: str) -> None:
    """The directory's own check of relay.ids' rule, behind every entry point's: an id it keeps goes
    into URL paths (Knock's, the API's, the console's). InvalidRequest (400) when broken."""
    problem = path_id_problem(value)
    if problem:
        raise InvalidRequest(f"{what} is not a usable id: it {problem}")


# Reads the directory entries of an email's addresses (KEYS: ARGV[1] prospect-set keys, then as
# many agent keys, then the version key) and the records of every prospect they or ARGV[3..] name,
# with the directory's version (given ARGV[2] first if it has none, so that a flushed directory
# never looks unchanged).
_VIEW = """
local n = tonumber(ARGV[1])
local version = redis.call("get", KEYS[2 * n + 1])
if not version then
  version = ARGV[2]
  redis.call("set", KEYS[2 * n + 1], version)
end
local ids, agents, seen, candidates = {}, {}, {}, {}
for i = 1, n do
  ids[i] = redis.call("smembers", KEYS[i])
  agents[i] = redis.call("get", KEYS[n + i]) or false
  for _, pid in ipairs(ids[i]) do
    if not seen[pid] then seen[pid] = true; candidates[#candidates + 1] = pid end
  end
end
for i = 3, #ARGV do
  if not seen[ARGV[i]] then seen[ARGV[i]] = true; candidates[#candidates + 1] = ARGV[i] end
end
local records = {}
for _, pid in ipairs(candidates) do
  records[#records + 1] = pid
  records[#records + 1] = redis.call("get", "relay:prospect:" .. pid) or false
end
return {version, ids, agents, records}
"""


def new_version() -> str:
    return uuid.uuid4().hex


class _Copy:
    """What one process read of the directory at one version: address → (prospect ids, agent),
    prospect id → its agent (None: none set), and the prospect ids found to have no record."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.made = time.monotonic()
        self.addresses: dict[str, tuple[tuple[str, ...], str | None]] = {}
        self.prospect_agents: dict[str, str | None] = {}
        self.no_prospect: set[str] = set()

    def usable(self, max_age: float) -> bool:
        return bool(self.version) and time.monotonic() - self.made < max_age

    def full(self) -> bool:
        return len(self.addresses) + len(self.prospect_agents) + len(self.no_prospect) >= CACHE_ENTRIES


class Directory:
    def __init__(self, client: redis.Redis, *, copy_seconds: float = COPY_SECONDS) -> None:
        self.redis = client
        self.copy_seconds = copy_seconds
        self._view = client.register_script(_VIEW)
        self._copy = _Copy("")
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop this process's copy: the next routing reads Redis."""
        self._copy = _Copy("")

    # Prospects ---------------------------------------------------------------

    def put_prospect(
        self, prospect_id: str, emails: Iterable[str], agent_username: str | None = None
    ) -> dict[str, Any]:
        require_usable_id("prospectId", prospect_id)
        if agent_username:
            require_usable_id("agentUsername", agent_username)
        addresses = normalise_emails(emails)
        return self._store_prospect(
            prospect_id,
            lambda _: {"prospectId": prospect_id, "emails": addresses, "agentUsername": agent_username or None},
        )

    def _store_prospect(
        self, prospect_id: str, record_from: Callable[[dict[str, Any] | None], dict[str, Any]]
    ) -> dict[str, Any]:
        """Write the record `record_from` makes of the stored one (None for a new prospect), and its
        address index, in one transaction (retried when the record changes meanwhile)."""
        record: dict[str, Any] = {}

        def write(pipe: redis.client.Pipeline) -> None:
            old = self._load(pipe.get(_prospect_key(prospect_id)))
            record.clear()
            record.update(record_from(old))
            old_emails: set[str] = set(old["emails"]) if old else set()
            pipe.multi()
            for address in old_emails - set(record["emails"]):
                pipe.srem(_email_key(address), prospect_id)
            for address in record["emails"]:
                pipe.sadd(_email_key(address), prospect_id)
            pipe.set(_prospect_key(prospect_id), json.dumps(record))
            pipe.set(DIRECTORY_VERSION_KEY, new_version())

        self.redis.transaction(write, _prospect_key(prospect_id))
        self.forget()
        return record

    def get_prospect(self, prospect_id: str) -> dict[str, Any] | None:
        return self._load(self.redis.get(_prospect_key(prospect_id)))

    def delete_prospect(self, prospect_id: str) -> bool:
        record = self.get_prospect(prospect_id)
        if record is None:
            return False
        pipe = self.redis.pipeline()
        for address in record["emails"]:
            pipe.srem(_email_key(address), prospect_id)
        pipe.delete(_prospect_key(prospect_id))
        pipe.set(DIRECTORY_VERSION_KEY, new_version())
        pipe.execute()
        self.forget()
        return True

    def prospects_for_email(self, address: str) -> list[dict[str, Any]]:
        ids = sorted(str(m) for m in self.redis.smembers(_email_key(address)))
        records = [self.get_prospect(pid) for pid in ids]
        return [r for r in records if r]

    # Agents ------------------------------------------------------------------

    def put_agent(self, username: str, emails: Iterable[str]) -> dict[str, Any]:
        require_usable_id("username", username)
        record = {"username": username, "emails": normalise_emails(emails)}
        for address in record["emails"]:
            owner = self.redis.get(_agent_email_key(address))
            if owner and owner != username:
                raise Conflict(f"an address in emails already belongs to agent {owner!r}")

        def write(pipe: redis.client.Pipeline) -> None:
            old = self._load(pipe.get(_agent_key(username)))
            pipe.multi()
            for address in set(old["emails"] if old else []) - set(record["emails"]):
                pipe.delete(_agent_email_key(address))
            for address in record["emails"]:
                pipe.set(_agent_email_key(address), username)
            pipe.set(_agent_key(username), json.dumps(record))
            pipe.set(DIRECTORY_VERSION_KEY, new_version())

        self.redis.transaction(write, _agent_key(username))
        self.forget()
        return record

    def get_agent(self, username: str) -> dict[str, Any] | None:
        return self._load(self.redis.get(_agent_key(username)))

    def delete_agent(self, username: str) -> bool:
        record = self.get_agent(username)
        if record is None:
            return False
        pipe = self.redis.pipeline()
        for address in record["emails"]:
            pipe.delete(_agent_email_key(address))
        pipe.delete(_agent_key(username))
        pipe.set(DIRECTORY_VERSION_KEY, new_version())
        pipe.execute()
        self.forget()
        return True

    # Routing -----------------------------------------------------------------

    def view_for(
        self, email: Email, reply_tag_prefix: str, thread_ids: Sequence[str] = ()
    ) -> tuple[DirectoryView, str]:
        """Everything routing may consult for this email (and the prospects of the threads it
        replies to), and the directory version it was read at: from this process's copy when it
        holds all of it, else in one round trip (a script)."""
        addresses = addresses_to_look_up(email)
        extra_ids = [*thread_ids, *([email.metadata.prospect_id] if email.metadata.prospect_id else [])]
        extra_ids += [pid for a in email.recipients for pid in [reply_tag_prospect(a, reply_tag_prefix)] if pid]
        copy = self._copy
        view = _view_from(copy, addresses, extra_ids) if copy.usable(self.copy_seconds) else None
        if view is not None:
            return view, copy.version
        return self._read(addresses, extra_ids)

    def _read(self, addresses: list[str], extra_ids: list[str]) -> tuple[DirectoryView, str]:
        version, ids, agents, records = self._view(
            keys=[*map(_email_key, addresses), *map(_agent_email_key, addresses), DIRECTORY_VERSION_KEY],
            args=[len(addresses), new_version(), *extra_ids],
        )
        version = str(version)
        prospects_by_email = {
            a: tuple(sorted(str(m) for m in found)) for a, found in zip(addresses, ids, strict=True) if found
        }
        agents_by_email = {a: str(agent) for a, agent in zip(addresses, agents, strict=True) if agent}
        prospect_agents: dict[str, str | None] = {}
        no_prospect = set()
        for pid, raw in zip(records[::2], records[1::2], strict=True):
            record = self._load(raw)
            if record:
                prospect_agents[str(pid)] = record.get("agentUsername")
            else:
                no_prospect.add(str(pid))
        with self._lock:
            copy = self._copy
            if copy.version != version or copy.full() or not copy.usable(self.copy_seconds):
                copy = self._copy = _Copy(version)
            for address in addresses:
                copy.addresses[address] = (prospects_by_email.get(address, ()), agents_by_email.get(address))
            copy.prospect_agents.update(prospect_agents)
            copy.no_prospect |= no_prospect
        return DirectoryView(prospects_by_email, agents_by_email, prospect_agents), version

    def all_prospects(self) -> Iterable[dict[str, Any]]:
        """Every prospect record, in batches (for export)."""
        batch: list[str] = []
        for key in self.redis.scan_iter(match=f"{PREFIX}prospect:*", count=500):
            batch.append(str(key))
            if len(batch) == 500:
                yield from self._records(batch)
                batch = []
        yield from self._records(batch)

    def _records(self, keys: list[str]) -> Iterable[dict[str, Any]]:
        for raw in self.redis.mget(keys) if keys else []:
            record = self._load(raw)
            if record:
                yield record

    def merge_prospect(
        self, prospect_id: str, emails: list[str], agent_username: str | None, *, up_to: int | None = None
    ) -> dict[str, Any]:
        """Add addresses (and set the agent when one is given) to a prospect, new or known: read and
        written in one transaction, so that additions made at the same time are all kept."""
        require_usable_id("prospectId", prospect_id)
        if agent_username:
            require_usable_id("agentUsername", agent_username)
        added = normalise_emails(emails)

        def merged(old: dict[str, Any] | None) -> dict[str, Any]:
            if old and up_to is not None and len(old["emails"]) >= up_to:
                return old  # as many addresses as it may have: nothing added
            return {
                "prospectId": prospect_id,
                "emails": normalise_emails([*(old["emails"] if old else []), *added]),
                "agentUsername": agent_username or (old or {}).get("agentUsername") or None,
            }

        return self._store_prospect(prospect_id, merged)

    def known_knock_agent(self, prospect_id: str) -> str | None:
        value = self.redis.get(f"{PREFIX}knock-agent:{prospect_id}")
        return str(value) if value else None

    def remember_knock_agent(self, prospect_id: str, username: str) -> None:
        self.redis.set(f"{PREFIX}knock-agent:{prospect_id}", username, ex=KNOCK_AGENT_CACHE_SECONDS)

    @staticmethod
    def _load(raw: Any) -> dict[str, Any] | None:
        return json.loads(raw) if raw else None


def _view_from(copy: _Copy, addresses: list[str], extra_ids: list[str]) -> DirectoryView | None:
    """The view from a process's copy, or None when the copy lacks part of it."""
    prospects_by_email: dict[str, tuple[str, ...]] = {}
    agents_by_email: dict[str, str] = {}
    candidates: list[str] = []
    for address in addresses:
        entry = copy.addresses.get(address)
        if entry is None:
            return None
        prospects, agent = entry
        if prospects:
            prospects_by_email[address] = prospects
            candidates += prospects
        if agent:
            agents_by_email[address] = agent
    prospect_agents: dict[str, str | None] = {}
    for pid in [*candidates, *extra_ids]:
        if pid in copy.prospect_agents:
            prospect_agents[pid] = copy.prospect_agents[pid]
        elif pid not in copy.no_prospect:
            return None
    return DirectoryView(prospects_by_email, agents_by_email, prospect_agents)


#: First characters that make a spreadsheet read a cell as a formula (tab and CR: as the
#: OWASP guidance on CSV injection lists them, since some programs skip them before a formula).
FORMULA_STARTS = frozenset("=+-@\t\r")
#: Why a row without a prospect id or an address is left out of an import.
MISSING_ID_OR_EMAIL = "prospectId and a valid email are required"
#: The columns of a directory CSV, as exported and imported.
CSV_COLUMNS = ("prospectId", "email", "agentUsername")


def _reads_as_formula(text: str) -> bool:
    """Whether `text`, after any `'` in front, starts as a formula would."""
    return text.lstrip("'")[:1] in FORMULA_STARTS


def csv_cell(text: str) -> str:
    """A value as an exported cell: one a spreadsheet would take for a formula gets a `'` in front,
    which spreadsheets read as "text follows" and `csv_value` takes off again (`+1-2` → `'+1-2`).

    A value that itself begins with `'`s before such a character gets one more (`'=x` → `''=x`), so
    that reading it back takes off only the one added: every value comes back as it was. A value
    that begins with `'` before anything else (`'abc`) is written as it is and read as it is.
    """
    return "'" + text if _reads_as_formula(text) else text


def csv_value(cell: str) -> str:
    """A cell as imported: the `'` of `csv_cell` (or of a person who escaped a cell by hand, as
    spreadsheets do) taken off when a formula character follows it, or more `'`s and then one."""
    return cell[1:] if cell.startswith("'") and _reads_as_formula(cell[1:]) else cell


@dataclass
class DirectoryImport:
    """Prospects read from CSV (`prospectId,email[,agentUsername]`), and the rows that were not
    usable: (line number, what is wrong with it)."""

    prospects: dict[str, tuple[list[str], str | None]]
    bad_rows: list[tuple[int, str]]
    #: Header columns the import does not read.
    unknown_columns: list[str] = field(default_factory=list)

    @property
    def bad_lines(self) -> list[int]:
        return [line for line, _ in self.bad_rows]


def _cell(row: dict[str, str | None], name: str) -> str:
    """A row's value in column `name`, blanks around it and CSV escaping taken off."""
    return csv_value((row.get(name) or "").strip())


#: The API's check of an address (marshmallow's fields.Email), for addresses read from CSV.
_EMAIL = validate.Email()


def row_address(cell: str) -> str:
    """An email cell's address: a pasted `Jamie Lee <jamie@x.org>` is read as `jamie@x.org`."""
    if "<" in cell and cell.rstrip().endswith(">"):
        _, address = parseaddr(cell[:1000])
        return address or cell
    return cell


def row_problem(prospect_id: str, address: str, agent: str) -> str | None:
    """What keeps a row from being imported, or None. Ids follow relay.ids' rule; the address is one
    the API would take (see `row_address` for `Name <address>`)."""
    if not prospect_id or "@" not in address:
        return MISSING_ID_OR_EMAIL
    try:
        _EMAIL(address)
    except ValidationError:
        return f"email {address[:200]!r} is not a valid email address"
    problem = path_id_problem(prospect_id)
    if problem:
        return f"prospectId is not a usable id: it {problem}"
    problem = path_id_problem(agent) if agent else None
    if problem:
        return f"agentUsername is not a usable id: it {problem}"
    return None


def read_directory_csv(lines: Iterable[str]) -> DirectoryImport:
    """Several rows with one prospectId add up its emails. ValueError when the header lacks a column.
    Cells are read as `csv_cell` writes them; rows with an unusable id are reported, not imported."""
    reader = csv.DictReader(lines)
    missing = {"prospectId", "email"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"CSV lacks columns: {', '.join(sorted(missing))}")
    found = DirectoryImport({}, [], [name for name in reader.fieldnames or [] if name not in CSV_COLUMNS])
    for row in reader:
        prospect_id, address, agent = (_cell(row, name) for name in ("prospectId", "email", "agentUsername"))
        address = row_address(address)
        problem = row_problem(prospect_id, address, agent)
        if problem:
            found.bad_rows.append((reader.line_num, problem))
            continue
        emails, known_agent = found.prospects.get(prospect_id, ([], None))
        found.prospects[prospect_id] = (emails + [address], agent or known_agent)
    return found


def directory_csv_rows(directory: Directory) -> Iterable[list[str]]:
    """Every prospect, one row per address, with the header: what read_directory_csv reads. Every
    cell goes through `csv_cell`, so that no spreadsheet opening the file runs a formula from it."""
    yield list(CSV_COLUMNS)
    for prospect in directory.all_prospects():
        for address in prospect["emails"] or [""]:
            yield [csv_cell(value) for value in (prospect["prospectId"], address, prospect.get("agentUsername") or "")]
