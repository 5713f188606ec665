"""The console's bulk replay: every dead delivery a search of the delivery list finds, queued again
after a page that says how many it is."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from relay.console import _SEARCH_FIELDS, _search_from, console
from relay.redrive import Redrive, count_matching, replay_matching
from relay.store import REPLAYABLE
from relay.web import services


def _redrive(values: dict[str, str]) -> tuple[Redrive | None, dict[str, str], list[str]]:
    """The replay the list's filters ask for (only of a replayable status), the filters, and problems."""
    query = {name: values.get(name, "").strip() for name in _SEARCH_FIELDS}
    search, problems = _search_from(query)
    if search is None:
        return None, query, problems
    if query["messageId"] and search.message_id is None:
        return None, query, ["Message-ID: give an id, or leave the filter empty."]
    if search.status not in REPLAYABLE:
        return None, query, [f"Only {', '.join(REPLAYABLE)} deliveries can be replayed: choose one of those statuses."]
    return Redrive(search), query, []


@console.get("/deliveries/replay")
def confirm_bulk_replay() -> str | tuple[str, int]:
    redrive, query, problems = _redrive(request.args.to_dict())
    count = count_matching(services(), redrive) if redrive else 0
    page = render_template("bulk_replay.html", query=query, problems=problems, count=count)
    return (page, 400) if problems else page


@console.post("/deliveries/replay")
def bulk_replay() -> BaseResponse | tuple[str, int]:
    redrive, query, problems = _redrive(request.form.to_dict())
    if redrive is None:
        return render_template("bulk_replay.html", query=query, problems=problems, count=0), 400
    replayed = replay_matching(services(), redrive, g.operator)
    flash(f"Queued {len(replayed)} deliveries again.", "ok")
    kept: dict[str, Any] = {name: value for name, value in query.items() if value and name != "status"}
    return redirect(url_for("console.deliveries", **kept))
