"""The operator console under /console: find, fix and replay emails, and keep the directory.

Server-rendered with Jinja. Sign-in and sessions are in relay/console/sessions.py: a session
kept in Redis behind a signed cookie, and a limit on failed sign-ins per client address.
Flask-WTF's CSRF token is on every form and checked here, the only place a session cookie is
read. Every action is recorded with who did it. Actions call the same functions as the /v1
API (relay/intake.py, relay/directory.py).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.wrappers import Response as BaseResponse

from relay.audit import recent_actions, record_action
from relay.config import PRODUCTION, Settings
from relay.console.next_steps import next_step
from relay.console.sessions import (
    SESSION_HOURS,
    ConsoleSessions,
    check_credentials,
    derived_key,
    end_session,
    give_back_attempt,
    session_operator,
    start_session,
    take_attempt,
)
from relay.errors import RelayError
from relay.ids import path_id_problem
from relay.intake import is_spam_ignored, replay_delivery, resolve_delivery
from relay.message import normalise_message_id
from relay.metrics import read_backlog
from relay.queue import QUEUE_KEY
from relay.routing import AUTOMATED, FROM_PROSPECT, TO_PROSPECT
from relay.store import (
    DEAD,
    PENDING,
    REPLAYABLE,
    STATUSES,
    UNMATCHED,
    Page,
    Search,
    address_searched,
    ms_from,
    now_ms,
)
from relay.store.indexes import search_words_problem
from relay.web import services

console = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")
csrf = CSRFProtect()

_OPEN = ("console.sign_in", "console.static")
#: Largest console form body read (the directory import's upload aside).
FORM_BYTES = 64 * 1024
SESSION_ENDED = "Your session ended; sign in again."
STALE_FORM = "That page was out of date, so nothing was done; try again."
#: What the console's pages may load: their own stylesheet; no script at all, no remote content.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def init_console(app: Flask, settings: Settings) -> None:
    """Mount the console when someone can sign in to it (a token or named accounts)."""
    if not (settings.api_token or settings.console_users):
        return
    app.secret_key = settings.console_secret_key or derived_key(settings)
    app.config.update(
        SESSION_COOKIE_NAME="relay_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.environment == PRODUCTION,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/console",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        WTF_CSRF_TIME_LIMIT=SESSION_HOURS * 3600,
        # Checked by the console itself (`require_operator`), after the session: webhooks and the
        # API authenticate otherwise and send no cookie, so there is nothing to forge there.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A console form is a few short fields (the CSV import's file is read apart): anything
        # larger is refused before it is parsed, since the sign-in form is open to everyone.
        MAX_FORM_MEMORY_SIZE=FORM_BYTES,
        MAX_FORM_PARTS=64,
    )
    app.session_interface = ConsoleSessions()
    csrf.init_app(app)
    app.register_blueprint(console)


# Sign-in -------------------------------------------------------------------------------------


@console.before_request
def require_operator() -> BaseResponse | None:
    """Who is asking, from the session's record; then, for a form, whether it came from one of
    this session's pages."""
    if request.endpoint == "console.static":
        return None
    if request.endpoint == "console.import_directory":
        # The upload is read in memory up to the size any request may have (RELAY_MAX_REQUEST_BYTES).
        request.max_form_memory_size = services().settings.max_request_bytes
    elif (request.content_length or 0) > FORM_BYTES:
        abort(413)
    relay = services()
    had_session = "id" in session
    g.operator = session_operator(relay.redis, relay.settings)
    if g.operator is None and request.endpoint not in _OPEN:
        # A form posted without a session means one ended while its page was open.
        return _to_sign_in(ended=had_session or request.method == "POST")
    if _form_is_current():
        return None
    if g.operator is None:  # the sign-in form itself, its session gone
        return _to_sign_in(ended=True)
    # From a page older than the latest sign-in: no harm done, and none to do.
    flash(STALE_FORM, "error")
    return redirect(_safe_next(_page_to_return_to()))


def _form_is_current() -> bool:
    """Whether a request that changes things (a form) carries a current CSRF token; any other
    request passes. A form with no token is none of the console's and is refused (400); one with
    a stale token (its session ended, or a later sign-in replaced it) was most likely ours."""
    try:
        csrf.protect()
    except CSRFError:
        if not request.form.get("csrf_token"):
            raise
        return False
    return True


def _to_sign_in(*, ended: bool) -> BaseResponse:
    """To the sign-in page, saying why when a session ended, and from it back to this page."""
    if ended:
        flash(SESSION_ENDED, "error")
    return redirect(url_for("console.sign_in", next=_page_to_return_to() or None))


def _page_to_return_to() -> str:
    """This page; for a form, the page it was sent from (a form's address may take no GET)."""
    if request.endpoint == "console.sign_in":
        return request.form.get("next", "")
    if request.method == "GET":
        return request.full_path.rstrip("?")
    sent_from = urlsplit(request.referrer or "")
    return sent_from.path + (f"?{sent_from.query}" if sent_from.query else "")  # checked by _safe_next


@console.after_request
def protect_pages(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never another site."""
    if target and target.startswith("/console") and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("console.overview")


@console.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    if request.method == "GET":
        return render_template("sign_in.html", next=request.args.get("next", ""))
    relay = services()
    page = request.form.get("next", "")
    # Per client address, whatever name is typed: a fresh name must not buy more guesses at the
    # token, which also opens /v1. Behind proxies, RELAY_TRUSTED_PROXIES gives the real address.
    address = request.remote_addr or "unknown"
    seconds_left = take_attempt(relay.redis, address)
    if seconds_left:
        error = f"Too many failed sign-ins from your address; try again in {math.ceil(seconds_left / 60)} min."
        return render_template("sign_in.html", error=error, next=page), 429, {"Retry-After": str(seconds_left)}
    name, password = request.form.get("name", "").strip(), request.form.get("password", "")
    signed_in = check_credentials(relay.settings, name, password)
    if signed_in is None:
        return render_template("sign_in.html", error="Wrong name or password.", next=page), 401
    give_back_attempt(relay.redis, address)
    start_session(relay.redis, signed_in)
    record_action(relay.redis, signed_in.operator, "sign in", "console")
    return redirect(_safe_next(page))


@console.post("/sign-out")
def sign_out() -> BaseResponse:
    relay = services()
    end_session(relay.redis)
    record_action(relay.redis, g.operator, "sign out", "console")
    return redirect(url_for("console.sign_in"))


# Overview ------------------------------------------------------------------------------------


@console.get("/")
def overview() -> str:
    relay = services()
    now = now_ms()
    day, week = relay.store.count_by_status(now - 86_400_000), relay.store.count_by_status(now - 7 * 86_400_000)
    ok, errors = relay.store.knock_answers_since(now - 86_400_000)
    unmatched = relay.store.search(Search(status=UNMATCHED), limit=10).deliveries
    dead = relay.store.search(Search(status=DEAD), limit=10).deliveries
    return render_template(
        "overview.html",
        statuses=STATUSES,
        day=day,
        week=week,
        chart=hourly_chart(relay.store.received_per_hour(24)),
        backlog=read_backlog(relay.redis, QUEUE_KEY),
        probe_seconds=f"{relay.settings.knock_probe_seconds:g}",
        knock=(ok, errors, errors / (ok + errors) if ok + errors else None),
        unmatched=unmatched,
        dead=dead,
        actions=recent_actions(relay.redis, 10),
    )


def hourly_chart(series: list[tuple[int, int]], width: int = 720, height: int = 220) -> dict[str, Any]:
    """Bars for an inline SVG: deliveries received per hour, under a y-axis of three ticks. Labels are
    drawn large (the chart shrinks to half its width on a phone)."""
    left, bottom = 96, 30
    plot = height - bottom - 10
    highest = max((count for _, count in series), default=0)
    top = _round_up(highest)
    slot = (width - left) / max(len(series), 1)
    bars: list[dict[str, Any]] = []
    for index, (start, count) in enumerate(series):
        bar_height = round(plot * count / top, 1)
        label = datetime.fromtimestamp(start / 1000, UTC).strftime("%H:00")
        bars.append({"x": round(left + index * slot + 2, 1), "y": round(10 + plot - bar_height, 1),
                     "w": round(slot - 4, 1), "h": bar_height, "count": count, "label": label})  # fmt: skip
    ticks = [{"value": value, "y": round(10 + plot - plot * value / top, 1)} for value in (0, top // 2, top)]
    peak = max(bars, key=lambda bar: int(bar["count"])) if highest else None
    return {"width": width, "height": height, "left": left, "bars": bars, "ticks": ticks, "peak": peak}


def _round_up(count: int) -> int:
    """The y-axis top: `count` rounded up to 2, 5 or 10 times a power of ten (at least 2)."""
    step = 1
    while True:
        for factor in (2, 5, 10):
            if count <= factor * step:
                return factor * step
        step *= 10


# Deliveries ----------------------------------------------------------------------------------

_SEARCH_FIELDS = ("messageId", "prospectId", "address", "subject", "provider", "status", "since", "until")


def _moment(value: str, *, end: bool = False) -> int | None:
    """A `datetime-local` (taken as UTC) or ISO 8601 value, in ms; None when empty. With `end`, a
    value given to the minute means the end of that minute (`until 20:56` includes 20:56:21).
    Raises ValueError for one that is not a date and time."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    ms = ms_from(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    if end and ms is not None and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", value):
        ms += 59_999
    return ms


def _search_from(query: dict[str, str]) -> tuple[Search | None, list[str]]:
    """The search the form asks for, or None and what is wrong with it."""
    problems = []
    moments: dict[str, int | None] = {}
    for name, label in (("since", "Received from"), ("until", "Received until")):
        try:
            moments[name] = _moment(query[name], end=name == "until")
        except ValueError:
            problems.append(f"{label}: {query[name]!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC).")
            moments[name] = None
    since, until = moments["since"], moments["until"]
    if since is not None and until is not None and since > until:
        problems.append("Received from is after Received until: nothing can match.")
    words_problem = search_words_problem(query["subject"]) if query["subject"] else None
    if words_problem:
        problems.append(f"Subject words: {words_problem}.")
    if query["address"] and "@" not in query["address"]:
        problems.append(f"Sender or recipient address: {query['address']!r} is not an address.")
    if query["status"] and query["status"] not in STATUSES:
        problems.append(f"Status: {query['status']!r} is not a status.")
    if problems:
        return None, problems
    search = Search(
        status=query["status"] or None,
        message_id=normalise_message_id(query["messageId"]),
        prospect_id=query["prospectId"] or None,
        address=address_searched(query["address"]),
        words=query["subject"] or None,
        provider=query["provider"].lower() or None,
        since_ms=since,
        until_ms=until,
    )
    return search, []


#: A moment as a `datetime-local` field writes it (UTC here), to the minute or the second.
_FIELD_MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?")


@console.get("/deliveries")
def deliveries() -> str:
    query = {name: request.args.get(name, "").strip() for name in _SEARCH_FIELDS}
    search, problems = _search_from(query)
    page = Page([])
    if search is not None:
        # A time given otherwise (with a zone, or a date alone) is shown as the fields write one, in UTC,
        # so that the next search keeps it.
        for name, ms in (("since", search.since_ms), ("until", search.until_ms)):
            if ms is not None and not _FIELD_MOMENT.fullmatch(query[name]):
                query[name] = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        page = services().store.search(search, cursor=request.args.get("cursor") or None, limit=25)
    return render_template(
        "deliveries.html",
        query=query,
        statuses=STATUSES,
        problems=problems,
        page=page,
        filtered=any(query.values()),
        replayable=REPLAYABLE,
        record_days=services().settings.record_ttl_seconds // 86_400,
    )


@console.get("/deliveries/<delivery_id:delivery_id>")
def delivery(delivery_id: str) -> str:
    relay = services()
    found, payload = relay.store.get_with_payload(delivery_id)
    if found is None:
        abort(404)
    if payload is None:
        payload = relay.store.sent_payload(delivery_id)
    candidates = relay.directory.prospects_for_email(found.sender) if found.sender else []
    return render_template(
        "delivery.html",
        delivery=found,
        payload=payload,
        attempts=relay.store.attempts_of(delivery_id),
        candidates=candidates,
        spam_ignored=is_spam_ignored(found),
        pending=found.status in PENDING,
        next_step=next_step(found),
    )


#: Knock's message types as the console names them.
TYPE_NAMES = {FROM_PROSPECT: "From prospect", TO_PROSPECT: "To prospect", AUTOMATED: "Automated"}


@console.app_template_filter("type_name")
def _type_name(message_type: str | None) -> str:
    return TYPE_NAMES.get(message_type or "", message_type or "–")


@console.app_template_filter("moment")
def _when(moment: int | str | None) -> str:
    """One way of writing a time on every page: `2026-12-06 04:27:45 UTC`, from ms or ISO 8601."""
    if not moment:
        return ""
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    else:
        parsed = datetime.fromtimestamp(moment / 1000, UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@console.post("/deliveries/<delivery_id:delivery_id>/replay")
def replay(delivery_id: str) -> BaseResponse:
    relay = services()
    try:
        replay_delivery(relay, delivery_id)
    except RelayError as error:
        flash(error.message, "error")
    else:
        record_action(relay.redis, g.operator, "replay", delivery_id)
        flash("Queued again.", "ok")
    return redirect(url_for("console.delivery", delivery_id=delivery_id))


@console.post("/deliveries/<delivery_id:delivery_id>/resolve")
def resolve(delivery_id: str) -> BaseResponse:
    relay = services()
    prospect_id = request.form.get("prospectId", "").strip()
    agent = request.form.get("agentUsername", "").strip() or None
    if not prospect_id:
        flash("Give the prospect id.", "error")
        return redirect(url_for("console.delivery", delivery_id=delivery_id))
    problem = path_id_problem(prospect_id) or (path_id_problem(agent) if agent else None)
    if problem:
        flash(f"Not a usable id: it {problem}.", "error")
        return redirect(url_for("console.delivery", delivery_id=delivery_id))
    try:
        resolved = resolve_delivery(relay, delivery_id, prospect_id, agent)
    except RelayError as error:
        flash(error.message, "error")
        return redirect(url_for("console.delivery", delivery_id=delivery_id))
    detail = f"prospect {prospect_id}"
    if request.form.get("remember") and resolved.sender:
        relay.directory.merge_prospect(prospect_id, [resolved.sender], agent)
        detail += ", sender's address remembered"
    record_action(relay.redis, g.operator, "resolve", delivery_id, detail)
    flash(f"Queued for prospect {prospect_id}: this page shows Knock's answer once it comes.", "ok")
    return redirect(url_for("console.delivery", delivery_id=delivery_id))


# The directory's pages register on `console` too.
from relay.console import bulk_replay, directory_pages  # noqa: E402, F401
