"""Reading from a provider's API: the email a webhook names, a signing certificate.

Only allow-listed origins, never a redirect, never userinfo, never more than the
request cap, never longer than FETCH_DEADLINE_SECONDS in all (relay.outbound). Ids
from webhooks go into paths only as one segment each (relay.ids). Failures are
sorted for the retry policy: ProviderUnavailable means try again later,
MalformedPayload means the provider will never give it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from relay.errors import MalformedPayload, ProviderUnavailable
from relay.ids import InvalidPathId, path_segment
from relay.outbound import bounded_session, deadline
from relay.providers.base import json_object

#: Seconds one call to a provider may take in all: connecting, sending and every read of the answer.
#: A provider trickling its answer cannot hold a worker thread (or a webhook's request) longer.
FETCH_DEADLINE_SECONDS = 10.0
_NOT_IN_TIME = "no complete answer within the deadline"

# A host as DNS spells it: labels of letters, digits and hyphens (no trailing dot, no escapes).
_HOSTNAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")


def allowed_fetch_url(url: str, allowed: tuple[str, ...]) -> str | None:
    """The URL to fetch when `url`'s origin is on the allow-list (`*.` matches subdomains), else None.

    The host is read by urllib3's parser, the one `requests` connects with, and must agree with
    the standard library's reading: a URL that two parsers read differently (a backslash, an
    `@`, an escape in the host) is refused rather than guessed at.
    """
    if any(ch in url for ch in "\\@") or any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        return None
    try:
        connected = parse_url(url)
        standard = urlsplit(url)
        standard_port = standard.port
    except (LocationParseError, ValueError):
        return None
    host = (connected.host or "").lower()
    if (
        connected.auth
        or not _HOSTNAME.match(host)
        or (connected.scheme, host, connected.port) != (standard.scheme, standard.hostname, standard_port)
    ):
        return None
    for origin in allowed:
        scheme, _, rest = origin.partition("://")
        pattern, _, allowed_port = rest.partition(":")
        if connected.scheme != scheme or str(connected.port or "") != allowed_port:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return connected.url
        elif host == pattern:
            return connected.url
    return None


def api_url(base: str, *segments: str) -> str:
    """`base` (an operator-configured API origin and path) with ids from a webhook as escaped path
    segments: an id can never climb out of the API's path or reach another host. An id that is no
    id (empty, `.`, `..`, control characters, white space) raises MalformedPayload: the provider
    will never answer for it, and the delivery goes dead saying why."""
    try:
        return base.rstrip("/") + "".join("/" + path_segment(segment, "a provider id") for segment in segments)
    except InvalidPathId as exc:
        raise MalformedPayload(f"{exc}: not fetched") from exc


def fetch(url: str, *, what: str, limit: int, **options: Any) -> bytes:
    """The body of a 200 answer. 404/410 (gone) and 401/403 (refused: a wrong key) raise
    MalformedPayload; anything else that is not 200, or no answer, raises ProviderUnavailable.
    `options` go to `fetch_answer` (method, headers, auth, json_body)."""
    status, body = fetch_answer(url, what=what, limit=limit, **options)
    if status in (404, 410):
        raise MalformedPayload(f"{what} expired or gone (HTTP {status})")
    if status in (401, 403):
        raise MalformedPayload(f"{what} refused (HTTP {status}): check the API key")
    if status != 200:
        raise ProviderUnavailable(f"{what} fetch answered HTTP {status}")
    return body


def fetch_json(url: str, *, what: str, limit: int, **options: Any) -> dict[str, Any]:
    """`fetch`, read as a JSON object (MalformedPayload when the provider answers anything else)."""
    return json_object(fetch(url, what=what, limit=limit, **options), what)


def fetch_answer(
    url: str,
    *,
    what: str,
    limit: int,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    json_body: Any = None,
    deadline_seconds: float = FETCH_DEADLINE_SECONDS,
) -> tuple[int, bytes]:
    """Status and body of whatever the provider answered (for providers whose errors need reading);
    ProviderUnavailable when it did not answer, or not completely within `deadline_seconds` (or an
    enclosing deadline: the worker gives a whole fetch one); MalformedPayload when the body is over
    `limit`."""
    chunks: list[bytes] = []
    size = 0
    try:
        with bounded_session() as session, deadline(deadline_seconds) as call:
            with session.request(
                method,
                url,
                headers=headers,
                auth=auth,
                json=json_body,
                timeout=call.timeouts(deadline_seconds, deadline_seconds),
                allow_redirects=False,  # a redirect could lead outside the allow-list
                stream=True,
            ) as response:
                # Read no more than the cap (plus one chunk, to tell a body that fits from one that does not).
                for chunk in response.iter_content(64 * 1024):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        break
    except requests.Timeout as exc:
        raise ProviderUnavailable(f"{what} fetch failed: {_NOT_IN_TIME} ({type(exc).__name__})") from exc
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"{what} fetch failed: {type(exc).__name__}") from exc
    if call.passed:  # a body without a length ends at the shutdown as if complete: it may not be
        raise ProviderUnavailable(f"{what} fetch failed: {_NOT_IN_TIME}")
    if size > limit:
        raise MalformedPayload(f"{what} is larger than RELAY_MAX_REQUEST_BYTES")
    return response.status_code, b"".join(chunks)
