"""How many emails of real-looking conversations land on a guest card: the unmatched rate on a
generated corpus, deciding by addresses and reply tags alone (as the relay did before threads) and
with threads (as it does now).

    .venv/bin/python bench/attribution.py [--conversations 300] [--seed 7]
    (or python3 dev.py bench --only attribution)

Starts its own redis-server and runs every email through the relay's own intake (routing, the
storing script, the thread memory), in order. Each conversation begins with an email between an
agent and a prospect the directory knows (either may write first); then the replies, each naming
its parent in In-Reply-To and the thread in References, as mail clients do:

  - the prospect answering from the known address;
  - the prospect answering from another address (work, phone);
  - a roommate the agent copied in answering to all;
  - someone the prospect forwarded the thread to, answering;
  - the prospect answering from a third address with a client that keeps References but drops
    In-Reply-To;
  - the agent answering any of those (to an address the directory does not know).

Besides, strangers write to the leasing mailbox without a thread: those stay unmatched either way.
"Before" routes each email with the same directory but without the thread memory (what the relay
decided before it remembered threads). The target: every reply in a thread whose first email
matched is matched.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dev import start_redis, stop  # noqa: E402
from relay.config import load_settings  # noqa: E402
from relay.intake import accept_email  # noqa: E402
from relay.mime import parse_mime  # noqa: E402
from relay.routing import route_email  # noqa: E402
from relay.sender_auth import from_authentication_results  # noqa: E402
from relay.services import Services  # noqa: E402
from relay.store import UNMATCHED  # noqa: E402

TRUSTED = "mx.acme-living.com"
KINDS = (
    "first email",
    "reply, known address",
    "reply, new address",
    "reply, roommate copied in",
    "reply, forwarded",
    "reply from a third address, References only",
    "agent's reply to a new address",
    "stranger, no thread",
)


@dataclass(frozen=True)
class Message:
    kind: str
    raw: bytes
    in_thread: bool  # part of a conversation whose first email matched


def message(sender: str, to: list[str], cc: list[str], message_id: str, parents: list[str], *,
            agent: bool, drop_in_reply_to: bool = False) -> bytes:  # fmt: skip
    lines = [f"From: {sender}", f"To: {', '.join(to)}", "Subject: Re: Tour of the two bedroom",
             f"Message-ID: <{message_id}>", "Date: Tue, 31 Mar 2020 16:22:06 -0700"]  # fmt: skip
    if cc:
        lines.append(f"Cc: {', '.join(cc)}")
    if parents and not drop_in_reply_to:
        lines.append(f"In-Reply-To: <{parents[-1]}>")
    if parents:
        lines.append("References: " + " ".join(f"<{p}>" for p in parents))
    if agent:
        lines.append(f"Authentication-Results: {TRUSTED}; dkim=pass header.d=acme-living.com")
    return ("\r\n".join([*lines, "MIME-Version: 1.0", "Content-Type: text/plain", "", "Friday at ten works."])).encode()


def corpus(conversations: int, rng: random.Random) -> tuple[list[Message], dict[str, str]]:
    """The emails in the order they are received, and the directory: prospect address → prospect id."""
    messages: list[Message] = []
    directory: dict[str, str] = {}
    for n in range(conversations):
        prospect, agent = f"P{n:05d}", f"agent{n % 40}@acme-living.com"
        known = f"renter{n}@example.com"
        directory[known] = prospect
        others = {"reply, new address": f"renter{n}.work@example.org",
                  "reply, roommate copied in": f"roommate{n}@example.net",
                  "reply, forwarded": f"parent{n}@example.net",
                  "reply from a third address, References only": f"renter{n}@phone.example.org"}  # fmt: skip
        thread: list[str] = []
        first = f"c{n}-0@{'acme-living.com' if n % 2 else 'example.com'}"
        if n % 2:
            raw = message(agent, [known], [], first, [], agent=True)
        else:
            raw = message(known, ["leasing@acme-living.com"], [], first, [], agent=False)
        messages.append(Message("first email", raw, False))
        thread.append(first)
        for turn in range(1, rng.randint(3, 7)):
            kind = rng.choice(["reply, known address", "reply, new address", "reply, roommate copied in",
                               "reply, forwarded", "reply from a third address, References only"])  # fmt: skip
            reply_id = f"c{n}-{turn}@example.net"
            address = others.get(kind, known)
            raw = message(address, [agent], [], reply_id, list(thread), agent=False,
                          drop_in_reply_to=kind == "reply from a third address, References only")  # fmt: skip
            messages.append(Message(kind, raw, True))
            thread.append(reply_id)
            if address != known and rng.random() < 0.5:  # the agent answers the new address
                answer_id = f"c{n}-{turn}a@acme-living.com"
                raw = message(agent, [address], [], answer_id, list(thread), agent=True)
                messages.append(Message("agent's reply to a new address", raw, True))
                thread.append(answer_id)
        if rng.random() < 0.2:
            raw = message(f"stranger{n}@example.org", ["leasing@acme-living.com"], [], f"s{n}@example.org", [],
                          agent=False)  # fmt: skip
            messages.append(Message("stranger, no thread", raw, False))
    return messages, directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    messages, directory = corpus(args.conversations, random.Random(args.seed))
    redis_process, url = start_redis()
    try:
        env = {"RELAY_ENV": "development", "REDIS_URL": url, "RELAY_MAILBOX_DOMAINS": "acme-living.com",
               "RELAY_TRUSTED_AUTHSERV_IDS": TRUSTED, "KNOCK_DEFAULT_AGENT_USERNAME": "agent"}  # fmt: skip
        services = Services(load_settings(env))
        for address, prospect in directory.items():
            services.directory.put_prospect(prospect, [address], None)
        before: Counter[str] = Counter()
        after: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for item in messages:
            email = parse_mime(item.raw)
            # As the raw MIME webhook does: the receiving MTA's Authentication-Results vouch for agents.
            verdict = from_authentication_results(email.headers, email.sender, services.settings.trusted_authserv_ids)
            email = replace(email, sender_auth=verdict)
            view, _ = services.directory.view_for(email, services.rules.reply_tag_prefix)
            if not route_email(email, services.rules, replace(view, threads={})).targets:
                before[item.kind] += 1
            statuses = [d["status"] for d in accept_email(services, email, "mime").deliveries]
            if all(status == UNMATCHED for status in statuses):
                after[item.kind] += 1
            total[item.kind] += 1
    finally:
        stop([redis_process])
    print(f"{len(messages)} emails in {args.conversations} conversations (seed {args.seed})\n")
    print("| email | count | unmatched before | unmatched after |")
    print("|---|---|---|---|")
    for kind in KINDS:
        if total[kind]:
            print(f"| {kind} | {total[kind]} | {before[kind] / total[kind]:.0%} | {after[kind] / total[kind]:.0%} |")
    all_before, all_after = sum(before.values()), sum(after.values())
    print(f"| all | {len(messages)} | {all_before / len(messages):.1%} | {all_after / len(messages):.1%} |")
    replies = sum(total[k] for k in KINDS if k not in ("first email", "stranger, no thread"))
    missed = sum(after[k] for k in KINDS if k not in ("first email", "stranger, no thread"))
    print(f"\nreplies in threads whose first email matched: {replies}, matched {replies - missed} ({missed} missed)")
    return 0 if missed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
