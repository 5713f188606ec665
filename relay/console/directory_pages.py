"""The console's directory pages: find, add, edit and remove prospects and agents, and CSV export and import."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from flask import (
    Response,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from marshmallow import Schema, ValidationError
from werkzeug.wrappers import Response as BaseResponse

from relay.audit import record_action
from relay.console import console
from relay.directory import directory_csv_rows, read_directory_csv
from relay.errors import RelayError
from relay.ids import path_id_problem
from relay.reply_tags import reply_address_of
from relay.web import services
from relay.web.schemas import AgentInput, ProspectInput


@console.get("/directory")
def directory() -> str:
    return _directory_page(request.args.get("q", "").strip(), request.args.get("edit", "").strip())


def _directory_page(
    wanted: str,
    edit: str = "",
    *,
    form: dict[str, str] | None = None,
    problems: list[str] | None = None,
    report: dict[str, Any] | None = None,
) -> str:
    """The directory page: what `wanted` finds, the forms (`form` keeps what was typed when a save
    failed, with its `problems`), and an import's `report`."""
    relay = services()
    prospects: list[dict[str, Any]] = []
    agent = None
    if "@" in wanted:
        prospects = relay.directory.prospects_for_email(wanted)
    elif wanted:
        found = relay.directory.get_prospect(wanted)
        prospects = [found] if found else []
        agent = relay.directory.get_agent(wanted)
    prospects = [{**found, **_reply_address(found["prospectId"])} for found in prospects]
    editing = relay.directory.get_prospect(edit) if edit else None
    if form is None and editing:
        form = {"prospectId": editing["prospectId"], "emails": "\n".join(editing["emails"]),
                "agentUsername": editing.get("agentUsername") or "", "originalId": editing["prospectId"]}  # fmt: skip
    return render_template("directory.html", q=wanted, prospects=prospects, agent=agent, form=form or {},
                           problems=problems or [], report=report)  # fmt: skip


def _reply_address(prospect_id: str) -> dict[str, Any]:
    """The prospect's reply address for RELAY_REPLY_MAILBOX, or why there is none."""
    try:
        found = reply_address_of(services().settings, prospect_id, None)
    except ValueError as exc:
        return {"replyAddressProblem": str(exc)}
    return {"replyAddress": found["address"], "replyAddressSigned": found["signed"]}


def _addresses(text: str) -> list[str]:
    return [a.strip() for a in text.replace(",", "\n").splitlines() if a.strip()]


@console.post("/directory/prospects")
def save_prospect() -> BaseResponse | tuple[str, int]:
    form = {
        name: request.form.get(name, "").strip() for name in ("prospectId", "emails", "agentUsername", "originalId")
    }
    prospect_id, original = form["prospectId"], form["originalId"]
    if original and original != prospect_id:
        problem = (f"The id of prospect {original} cannot be changed here: its emails are logged under that id. "
                   f"Add {prospect_id} as a new prospect and remove {original} if that is what you mean.")  # fmt: skip
        return _directory_page("", form=form, problems=[problem]), 400
    entry = {"emails": _addresses(form["emails"]), "agentUsername": form["agentUsername"] or None}
    body, problems = _checked_entry(prospect_id, ProspectInput(), entry)
    if problems:
        return _directory_page("", form=form, problems=["The prospect was not saved.", *problems]), 400
    services().directory.put_prospect(prospect_id, body["emails"], body["agentUsername"])
    record_action(services().redis, g.operator, "save prospect", prospect_id, f"{len(body['emails'])} addresses")
    flash(f"Prospect {prospect_id} saved.", "ok")
    return redirect(url_for("console.directory", q=prospect_id))


@console.post("/directory/agents")
def save_agent() -> BaseResponse | tuple[str, int]:
    username = request.form.get("username", "").strip()
    entry = {"emails": _addresses(request.form.get("emails", ""))}
    body, problems = _checked_entry(username, AgentInput(), entry)
    if problems:
        form = {"username": username, "agentEmails": request.form.get("emails", "")}
        return _directory_page("", form=form, problems=["The agent was not saved.", *problems]), 400
    try:
        services().directory.put_agent(username, body["emails"])
    except RelayError as error:
        form = {"username": username, "agentEmails": request.form.get("emails", "")}
        return _directory_page("", form=form, problems=[error.message]), 409
    record_action(services().redis, g.operator, "save agent", username, f"{len(entry['emails'])} addresses")
    flash(f"Agent {username} saved.", "ok")
    return redirect(url_for("console.directory", q=username))


def _checked_entry(key: str, schema: Schema, entry: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A directory entry as the API's own schema loads it, and what keeps it from being saved, each
    problem naming the id or the address at fault (ids follow relay.ids' rule)."""
    if not key:
        return {}, ["id: give the id."]
    if path_id_problem(key):
        return {}, [f"id: Not a usable id: it {path_id_problem(key)}."]
    try:
        return schema.load(entry), []
    except ValidationError as err:
        problems = []
        for name, messages in err.normalized_messages().items():
            if name == "emails" and isinstance(messages, dict):
                for index, why in messages.items():
                    address = entry["emails"][index] if isinstance(index, int) else index
                    problems.append(f"{address!r}: {' '.join(map(str, _flatten(why)))}")
            else:
                problems.append(f"{name}: {' '.join(map(str, _flatten(messages)))}")
        return {}, problems


def _flatten(messages: Any) -> list[Any]:
    if isinstance(messages, dict):
        return [m for value in messages.values() for m in _flatten(value)]
    if isinstance(messages, list):
        return [m for value in messages for m in _flatten(value)]
    return [messages]


@console.get("/directory/prospects/<path:prospect_id>/remove")
def confirm_remove_prospect(prospect_id: str) -> str:
    return render_template("remove.html", kind="prospect", key=prospect_id,
                           action=url_for("console.delete_prospect", prospect_id=prospect_id))  # fmt: skip


@console.get("/directory/agents/<path:username>/remove")
def confirm_remove_agent(username: str) -> str:
    return render_template("remove.html", kind="agent", key=username,
                           action=url_for("console.delete_agent", username=username))  # fmt: skip


@console.post("/directory/prospects/<path:prospect_id>/delete")
def delete_prospect(prospect_id: str) -> BaseResponse:
    return _remove_entry("prospect", prospect_id, services().directory.delete_prospect)


@console.post("/directory/agents/<path:username>/delete")
def delete_agent(username: str) -> BaseResponse:
    return _remove_entry("agent", username, services().directory.delete_agent)


def _remove_entry(kind: str, key: str, remove: Callable[[str], bool]) -> BaseResponse:
    if remove(key):
        record_action(services().redis, g.operator, f"remove {kind}", key)
        flash(f"{kind.capitalize()} {key} removed.", "ok")
    else:
        flash(f"No {kind} {key} to remove.", "error")
    return redirect(url_for("console.directory"))


@console.get("/directory/export.csv")
def export_directory() -> BaseResponse:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(directory_csv_rows(services().directory))
    record_action(services().redis, g.operator, "export directory", "csv")
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="directory.csv"'})  # fmt: skip


@console.post("/directory/import")
def import_directory() -> BaseResponse | tuple[str, int]:
    relay = services()
    upload = request.files.get("file")
    if upload is None:
        flash("Choose a CSV file.", "error")
        return redirect(url_for("console.directory"))
    try:
        found = read_directory_csv(io.TextIOWrapper(upload.stream, encoding="utf-8-sig", errors="replace"))
    except ValueError as error:
        return _directory_page("", problems=[f"Nothing imported: {error}."]), 400
    for prospect_id, (emails, agent) in found.prospects.items():
        relay.directory.merge_prospect(prospect_id, emails, agent)
    record_action(relay.redis, g.operator, "import directory", "csv", f"{len(found.prospects)} prospects")
    count = len(found.prospects)
    report = {
        "imported": f"Imported {count} prospect{'' if count == 1 else 's'}.",
        "skipped": [f"Line {line}: {problem}." for line, problem in found.bad_rows[:SKIPPED_SHOWN]],
        "more": max(len(found.bad_rows) - SKIPPED_SHOWN, 0),
        "unknown": found.unknown_columns,
    }
    return _directory_page("", report=report), 200


#: Skipped lines an import report lists one by one.
SKIPPED_SHOWN = 50
