"""HTTP client for Knock's syndication API.

Every call has a total deadline, RELAY_KNOCK_TIMEOUT_SECONDS, for its connection and all of its
reads (relay.outbound); every id in a path is one percent-encoded segment (relay.ids).
"""

from __future__ import annotations

import email.utils
import time
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import requests

from relay.ids import InvalidPathId, is_path_id, path_segment
from relay.outbound import DeadlineAdapter, deadline

#: Statuses worth another try later (SPEC §6); every other 4xx is final.
TRANSIENT_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
#: Pages of a prospect's events read, at most, to find an email an earlier attempt may have logged.
EVENT_PAGES = 20


class KnockError(Exception):
    """Knock did not log the call."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class KnockTransientError(KnockError):
    """Timeouts, connection errors, 408/425/429/5xx: try again later."""


class KnockRejected(KnockError):
    """Any other 4xx: Knock will not accept this request as it is."""


def logged_as(email: dict[str, Any]) -> tuple[Any, ...]:
    """What tells one logged email from another on a card: type, subject, sentTime (as a moment) and
    body (its words: whitespace aside). A stranger may match the first three at will, not the body."""
    body = email.get("body")
    words = " ".join(body.split()) if isinstance(body, str) else body
    return (email.get("type"), email.get("subject"), same_moment(email.get("sentTime")), words)


def same_moment(value: Any) -> Any:
    """A sentTime as a comparable moment (ISO 8601 written with Z or an offset, with or without
    fractions, reads the same); what cannot be read is compared as it is."""
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.timestamp() if moment.tzinfo else value


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (now if now is not None else time.time()))


def _error_message(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("errorMessage"):
        return str(payload["errorMessage"])
    return f"HTTP {response.status_code}"


def prospect_path(prospect_id: str, *rest: str) -> str:
    """`/prospect/{id}` (and `rest`), the id as one segment: the last check before the API key goes
    out, for ids stored before the rule or from anywhere that forgot it. KnockRejected if refused."""
    try:
        segment = path_segment(prospect_id, "prospect id")
    except InvalidPathId as exc:
        raise KnockRejected(f"{exc}: not sent to Knock") from exc
    return "/".join(("/prospect", segment, *rest))


class KnockClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        """`timeout` is each call's whole deadline in seconds: connection, request and answer."""
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers.update({"x-api-key": api_key, "Accept": "application/json"})
        # One kept-alive connection per forwarding thread: requests keeps 10 by default, so more
        # threads than that would open and close a connection per delivery.
        # The adapter lets a call's deadline shut its connection down (relay.outbound).
        self.session.mount(self.base_url, DeadlineAdapter(pool_connections=1, pool_maxsize=64))
        # What requests takes from the environment (HTTP(S)_PROXY/ALL_PROXY less NO_PROXY for Knock's
        # host, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE) is read once, here: read on every call, it
        # walks the whole environment, a sixth of a worker's CPU per delivery. (.netrc is not read.)
        environment = self.session.merge_environment_settings(self.base_url, {}, None, None, None)
        self.session.trust_env = False
        self.session.proxies.update(environment["proxies"])
        self.session.verify = environment["verify"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            with deadline(self.timeout) as call:
                timeouts = call.timeouts(self.timeout, self.timeout)
                response = self.session.request(method, self.base_url + path, json=body, timeout=timeouts)
        except requests.Timeout as exc:
            raise KnockTransientError(f"timeout after {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise KnockTransientError(f"connection error: {type(exc).__name__}") from exc
        if 200 <= response.status_code < 300:
            try:
                return response.json()
            except ValueError:
                return {}
        message = _error_message(response)
        error = KnockTransientError if response.status_code in TRANSIENT_STATUSES else KnockRejected
        raise error(
            message,
            status=response.status_code,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    def log_email(self, prospect_id: str, body: dict[str, Any]) -> str | None:
        """POST /prospect/{id}/email; Knock's communicationId."""
        result = self._call("POST", prospect_path(prospect_id, "email"), body)
        return result.get("communicationId") if isinstance(result, dict) else None

    def find_logged_email(
        self, prospect_id: str, body: dict[str, Any], *, max_pages: int = EVENT_PAGES, page_size: int = 200
    ) -> str | None:
        """Whether Knock already holds the email `body` would log (same type, subject, sentTime and body)
        on the prospect's card: its communicationId ("" when Knock gave none), or None when it is not
        there. Reads `GET /prospect/{id}/events` page by page, at most `max_pages` pages, none asked
        once one request timeout has passed; KnockTransientError when Knock cannot answer
        now, KnockRejected when it will not list them (or not within those bounds)."""
        wanted = logged_as(body)
        cursor: str | None = "0"
        started = time.monotonic()
        for _ in range(max_pages):
            if time.monotonic() - started > self.timeout:
                break
            query = urlencode({"cursor": cursor, "limit": page_size})
            page = self._call("GET", f"{prospect_path(prospect_id, 'events')}?{query}")
            events = page.get("events") if isinstance(page, dict) else None
            if not isinstance(events, list):
                raise KnockRejected("Knock's event list has no events")
            for event in events:
                if not isinstance(event, dict):
                    continue
                if logged_as(event) == wanted:
                    return str(event.get("communicationId") or "")
            cursor = page.get("nextCursor")
            if not cursor:
                return None
        raise KnockRejected(f"Knock's event list is longer than {max_pages} pages or too slow to read")

    def get_prospect(self, prospect_id: str) -> dict[str, Any]:
        result = self._call("GET", prospect_path(prospect_id))
        if isinstance(result, dict) and isinstance(result.get("prospect"), dict):
            return result["prospect"]  # type: ignore[no-any-return]
        return result if isinstance(result, dict) else {}

    def agent_of_prospect(self, prospect_id: str) -> str | None:
        agent = self.get_prospect(prospect_id).get("agent")
        if isinstance(agent, dict) and agent.get("username"):
            return str(agent["username"])
        return None

    def create_prospect(self, body: dict[str, Any]) -> str:
        """POST /prospect; the new id (`id`, or `prospectId` in some of Knock's documents). An id that
        could not go into a path later (relay.ids) is refused here, before the directory keeps it."""
        result = self._call("POST", "/prospect", body)
        if isinstance(result, dict):
            found = result.get("id") or result.get("prospectId")
            if not found and isinstance(result.get("prospect"), dict):
                found = result["prospect"].get("id") or result["prospect"].get("prospectId")
            if found and is_path_id(str(found)):
                return str(found)
        raise KnockRejected("Knock's answer carries no usable prospect id")
