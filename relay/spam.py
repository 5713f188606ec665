"""Spam and virus verdicts: what the receiving provider (or your MTA's filter) said of an email's
content, and whether that keeps it off the guest card. Pure: no I/O.

A virus verdict always does (the email is `ignored`, reason `virus`, its body not kept). Spam does
under RELAY_SPAM_POLICY=ignore (the default): `ignored`, reason `spam: <what said so>`, its body kept
so that an operator can still log it. A provider that gives a flag is taken at its word; one that
gives only a score is compared with RELAY_SPAM_SCORE_THRESHOLD (SpamAssassin's scale, 5.0)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

IGNORE = "ignore"
LOG = "log"
SPAM_POLICIES = (IGNORE, LOG)
VIRUS = "virus"
SPAM_PREFIX = "spam: "
DEFAULT_THRESHOLD = 5.0


@dataclass(frozen=True)
class ContentVerdict:
    """What a filter said: a virus found, a spam flag (None: no flag given), a spam score (None: no
    score given), and where it comes from, for the delivery's reason (`ses spamVerdict FAIL`)."""

    virus: bool = False
    spam: bool | None = None
    score: float | None = None
    source: str = ""

    def is_spam(self, threshold: float) -> bool:
        if self.spam is not None:
            return self.spam
        return self.score is not None and self.score >= threshold


NO_VERDICT = ContentVerdict()


def ignored_reason(verdict: ContentVerdict, policy: str, threshold: float) -> str | None:
    """Why an email with this verdict is not logged, or None."""
    if verdict.virus:
        return VIRUS
    if policy == IGNORE and verdict.is_spam(threshold):
        return SPAM_PREFIX + (verdict.source or "flagged")
    return None


def score_of(value: object) -> float | None:
    """A spam score as providers write it (a number, or its text), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 32 and re.fullmatch(r"\s*-?\d{1,6}(?:\.\d{1,6})?\s*", value):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def from_score(value: object, source: str) -> ContentVerdict:
    """A score-only verdict (SendGrid, Mandrill, Brevo, Mailjet); no verdict when it is no number."""
    score = score_of(value)
    return NO_VERDICT if score is None else ContentVerdict(score=score, source=f"{source} {score:g}")


def from_flag(flag: str | None, score: object, name: str) -> ContentVerdict:
    """A filter's `Yes`/`No` flag (with its score, where it gives one), e.g. Mailgun's
    `X-Mailgun-Sflag` and `X-Mailgun-Sscore`; no verdict without a flag it can read."""
    said = (flag or "").strip().lower()
    if said not in ("yes", "no"):
        return NO_VERDICT if score_of(score) is None else from_score(score, name)
    return ContentVerdict(spam=said == "yes", score=score_of(score), source=f"{name} {said.capitalize()}")


_SPAM_STATUS = re.compile(r"^\s*(yes|no)\b(?:[^\n]*?\bscore=(-?\d{1,6}(?:\.\d{1,6})?))?", re.IGNORECASE)


def from_spam_headers(flag: str | None, status: str | None) -> ContentVerdict:
    """SpamAssassin's `X-Spam-Flag: YES` and `X-Spam-Status: Yes, score=7.1 required=5.0 …`, as
    your filter wrote them; no verdict when neither is there."""
    found = _SPAM_STATUS.match(" ".join(status[:1000].split())) if status else None
    score = found.group(2) if found else None
    if flag is not None and flag.strip().lower() in ("yes", "no"):
        return from_flag(flag, score, "X-Spam-Flag")
    if found:
        return from_flag(found.group(1), score, "X-Spam-Status")
    return NO_VERDICT
