"""Prospects and agents in Redis: Knock cannot look a prospect up by email, so we keep the map.

Keys:
  relay:prospect:{id}             JSON {prospectId, emails, agentUsername}
  relay:prospects-by-email:{addr} set of prospect ids (one renter may be a prospect at several properties)
  relay:agent:{username}          JSON {username, emails}
  relay:agent-by-email:{addr}     username
  relay:knock-agent:{id}          agent username Knock reported for a prospect (cache)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from relay.errors import Conflict
from relay.message import Email
from relay.routing import DirectoryView, addresses_to_look_up, reply_tag_prospect

PREFIX = "relay:"
KNOCK_AGENT_CACHE_SECONDS = 3600


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


# Reads the directory entries of an email's addresses (KEYS: ARGV[1] prospect-set keys, then as
# many agent keys) and the records of every prospect they or ARGV[2..] name.
_VIEW = """
local n = tonumber(ARGV[1])
local ids, agents, seen, candidates = {}, {}, {}, {}
for i = 1, n do
  ids[i] = redis.call("smembers", KEYS[i])
  agents[i] = redis.call("get", KEYS[n + i]) or false
  for _, pid in ipairs(ids[i]) do
    if not seen[pid] then seen[pid] = true; candidates[#candidates + 1] = pid end
  end
end
for i = 2, #ARGV do
  if not seen[ARGV[i]] then seen[ARGV[i]] = true; candidates[#candidates + 1] = ARGV[i] end
end
local records = {}
for _, pid in ipairs(candidates) do
  records[#records + 1] = pid
  records[#records + 1] = redis.call("get", "relay:prospect:" .. pid) or false
end
return {ids, agents, records}
"""


class Directory:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._view = client.register_script(_VIEW)

    # Prospects ---------------------------------------------------------------

    def put_prospect(
        self, prospect_id: str, emails: Iterable[str], agent_username: str | None = None
    ) -> dict[str, Any]:
        addresses = normalise_emails(emails)
        record: dict[str, Any] = {
            "prospectId": prospect_id,
            "emails": addresses,
            "agentUsername": agent_username or None,
        }

        def write(pipe: redis.client.Pipeline) -> None:
            old = self._load(pipe.get(_prospect_key(prospect_id)))
            old_emails: set[str] = set(old["emails"]) if old else set()
            pipe.multi()
            for address in old_emails - set(addresses):
                pipe.srem(_email_key(address), prospect_id)
            for address in addresses:
                pipe.sadd(_email_key(address), prospect_id)
            pipe.set(_prospect_key(prospect_id), json.dumps(record))

        self.redis.transaction(write, _prospect_key(prospect_id))
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
        pipe.execute()
        return True

    def prospects_for_email(self, address: str) -> list[dict[str, Any]]:
        ids = sorted(str(m) for m in self.redis.smembers(_email_key(address)))
        records = [self.get_prospect(pid) for pid in ids]
        return [r for r in records if r]

    # Agents ------------------------------------------------------------------

    def put_agent(self, username: str, emails: Iterable[str]) -> dict[str, Any]:
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

        self.redis.transaction(write, _agent_key(username))
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
        pipe.execute()
        return True

    # Routing -----------------------------------------------------------------

    def view_for(self, email: Email, reply_tag_prefix: str) -> DirectoryView:
        """Everything routing may consult for this email, in one round trip (a read-only script)."""
        addresses = addresses_to_look_up(email)
        extra_ids = [email.metadata.prospect_id] if email.metadata.prospect_id else []
        extra_ids += [pid for a in email.recipients for pid in [reply_tag_prospect(a, reply_tag_prefix)] if pid]
        ids, agents, records = self._view(
            keys=[_email_key(a) for a in addresses] + [_agent_email_key(a) for a in addresses],
            args=[len(addresses), *extra_ids],
        )
        prospects_by_email = {
            a: tuple(sorted(str(m) for m in found)) for a, found in zip(addresses, ids, strict=True) if found
        }
        agents_by_email = {a: str(agent) for a, agent in zip(addresses, agents, strict=True) if agent}
        prospect_agents: dict[str, str | None] = {}
        for pid, raw in zip(records[::2], records[1::2], strict=True):
            record = self._load(raw)
            if record:
                prospect_agents[str(pid)] = record.get("agentUsername")
        return DirectoryView(prospects_by_email, agents_by_email, prospect_agents)

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

    def merge_prospect(self, prospect_id: str, emails: list[str], agent_username: str | None) -> dict[str, Any]:
        """Add addresses (and set the agent when one is given) to a prospect, new or known."""
        existing = self.get_prospect(prospect_id)
        known = existing["emails"] if existing else []
        return self.put_prospect(prospect_id, known + emails, agent_username or (existing or {}).get("agentUsername"))

    def known_knock_agent(self, prospect_id: str) -> str | None:
        value = self.redis.get(f"{PREFIX}knock-agent:{prospect_id}")
        return str(value) if value else None

    def remember_knock_agent(self, prospect_id: str, username: str) -> None:
        self.redis.set(f"{PREFIX}knock-agent:{prospect_id}", username, ex=KNOCK_AGENT_CACHE_SECONDS)

    @staticmethod
    def _load(raw: Any) -> dict[str, Any] | None:
        return json.loads(raw) if raw else None


@dataclass
class DirectoryImport:
    """Prospects read from CSV (`prospectId,email[,agentUsername]`), and the rows that were not usable."""

    prospects: dict[str, tuple[list[str], str | None]]
    bad_lines: list[int]


def read_directory_csv(lines: Iterable[str]) -> DirectoryImport:
    """Several rows with one prospectId add up its emails. ValueError when the header lacks a column."""
    reader = csv.DictReader(lines)
    missing = {"prospectId", "email"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"CSV lacks columns: {', '.join(sorted(missing))}")
    found = DirectoryImport({}, [])
    for row in reader:
        prospect_id, address = (row.get("prospectId") or "").strip(), (row.get("email") or "").strip()
        if not prospect_id or "@" not in address:
            found.bad_lines.append(reader.line_num)
            continue
        emails, agent = found.prospects.get(prospect_id, ([], None))
        found.prospects[prospect_id] = (emails + [address], (row.get("agentUsername") or "").strip() or agent)
    return found


def directory_csv_rows(directory: Directory) -> Iterable[list[str]]:
    """Every prospect, one row per address, with the header: what read_directory_csv reads."""
    yield ["prospectId", "email", "agentUsername"]
    for prospect in directory.all_prospects():
        for address in prospect["emails"] or [""]:
            yield [prospect["prospectId"], address, prospect.get("agentUsername") or ""]
