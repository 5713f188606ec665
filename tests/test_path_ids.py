"""The one rule for ids in URL paths (relay.ids), at every place an id enters, and its last line of
defence: the worker only ever calls Knock at `/prospect/<one segment>/email`."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

import pytest
from click.testing import CliRunner

from relay.__main__ import cli
from relay.app import create_app
from relay.errors import MalformedPayload
from relay.ids import PATH_ID_PATTERN, InvalidPathId, is_path_id, path_segment
from relay.knock.client import KnockClient, KnockRejected
from relay.message import Email, Metadata
from relay.providers.fetch import api_url
from relay.routing import DirectoryView, RoutingRules, route_email
from relay.sender_auth import SenderAuth
from tests.conftest import StorageStub
from tests.helpers import (
    BEARER,
    CONSOLE_PASSWORD,
    CONSOLE_USER,
    authenticated,
    basic_auth,
    mailgun_signature,
    mime,
    post_mime,
    provider_api_env,
    relay_env,
    signed_urlencoded,
    svix_headers,
    wait_for_status,
)

REFUSED = ["", ".", "..", "a b", " a", "a\tb", "a\nb", "a\rb", "a\x00b", "\x1f", "a\x7fb", "a\x85b", "a\x9fb",
           "a\u00a0b", "a\u2003b", "a\u2028b", "a\u3000b", "a\ufeffb", "a\ud800b",
           "\uff0e", "\uff0e\uff0e", ".\u2024", "\u2025", "\ufe30"]  # fmt: skip
ACCEPTED = ["4WXU6U2J", "...", ".a", "a.", "a..b", "a/b", "../x", "a?b", "a#b", "%2e%2e", "%2F", "+1-2", "'=x",
            "=HYPERLINK(\"http:\\\\evil.example\",\"x\")", "José", "名前", "\u2025.", "\uff0e\uff0e\uff0e"]  # fmt: skip
REPLY_DOMAIN = "reply.acme-living.com"


def reply_address(tag: str) -> str:
    return f"leasing+prospect-{tag}@{REPLY_DOMAIN}"


# The rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", REFUSED)
def test_the_rule_refuses_empty_dot_segments_controls_and_white_space(value: str) -> None:
    assert not is_path_id(value)
    with pytest.raises(InvalidPathId):
        path_segment(value)


@pytest.mark.parametrize("value", ACCEPTED)
def test_everything_else_is_one_percent_encoded_segment(value: str) -> None:
    segment = path_segment(value)
    assert re.fullmatch(r"[A-Za-z0-9%._~-]+", segment) and segment not in (".", "..")
    assert unquote(segment) == value


def test_the_documented_pattern_is_the_rule_for_every_character() -> None:
    """The OpenAPI document and the router read PATH_ID_PATTERN; the code reads is_path_id. Alike
    for every character that JSON and URLs can carry (all but lone surrogates, which are refused)."""
    pattern = re.compile(rf"(?:{PATH_ID_PATTERN})\Z")
    for code in range(0x110000):
        character = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            assert not is_path_id(character) and not is_path_id("a" + character)
            continue
        for value in (character, "a" + character, character * 2, character * 3):
            assert bool(pattern.match(value)) == is_path_id(value), (hex(code), value)


# Routing: reply tags and metadata -------------------------------------------------------------

RULES = RoutingRules(mailbox_domains=frozenset({"acme-living.com", REPLY_DOMAIN}))


@pytest.mark.parametrize("tag", [".", "..", "a\x01b"])
def test_a_reply_tag_that_is_no_id_leaves_the_email_unmatched(tag: str) -> None:
    mail = Email(message_id="m@x", sender="renter@example.com", to=(reply_address(tag),))
    route = route_email(mail, RULES, DirectoryView())
    assert (route.targets, route.unmatched_reason) == ((), "reply tag names no valid prospect id")


def test_a_usable_reply_tag_next_to_an_unusable_one_is_used() -> None:
    mail = Email(message_id="m@x", sender="renter@example.com", to=(reply_address(".."), reply_address("P1")))
    assert [t.prospect_id for t in route_email(mail, RULES, DirectoryView()).targets] == ["P1"]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (Metadata(prospect_id=".."), "routing metadata names no valid prospect id"),
        (Metadata(prospect_id="P1", agent_username="pat smith"), "routing metadata names no valid agent username"),
    ],
)
def test_metadata_that_names_no_id_leaves_the_email_unmatched(metadata: Metadata, reason: str) -> None:
    vouched = SenderAuth(vouched=True)
    mail = Email(message_id="m@x", sender="renter@example.com", metadata=metadata, sender_auth=vouched)
    route = route_email(mail, RULES, DirectoryView({"renter@example.com": ("P9",)}))
    assert (route.targets, route.unmatched_reason) == ((), reason)  # not the directory's P9 instead


def test_mail_to_a_dot_dot_reply_tag_is_unmatched_saying_why(client: Any) -> None:
    answer = post_mime(client, mime(to=f"Leasing <{reply_address('..')}>"))
    (summary,) = answer.json["deliveries"]
    assert (answer.status_code, summary["status"], summary["prospectId"]) == (200, "unmatched", None)
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert shown["reason"] == "reply tag names no valid prospect id"


def test_an_x_knock_header_naming_a_dot_segment_is_unmatched_saying_why(client: Any) -> None:
    raw = mime(sender="Dana <dana@acme-living.com>", to="renter@example.com",
               extra_headers=f"{authenticated()}\nX-Knock-Prospect-Id: ..")  # fmt: skip
    (summary,) = post_mime(client, raw).json["deliveries"]
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert (shown["status"], shown["reason"]) == ("unmatched", "routing metadata names no valid prospect id")


def test_mailgun_route_variables_naming_no_id_are_unmatched_saying_why(client: Any) -> None:
    headers = [["From", "Dana <dana@acme-living.com>"], ["To", "renter@example.com"], ["Subject", "Tour"],
               ["Message-Id", "<agent-2@acme-living.com>"], ["DKIM-Signature", "v=1; d=acme-living.com; s=mg"],
               ["X-Mailgun-Dkim-Check-Result", "Pass"],
               ["X-Mailgun-Variables", json.dumps({"knock_prospect_id": "."})]]  # fmt: skip
    fields = {"message-headers": json.dumps(headers), "body-plain": "See you Friday", "sender": "dana@acme-living.com"}
    body = signed_urlencoded(urlencode(fields).encode(), mailgun_signature())
    answer = client.post("/webhooks/mailgun/inbound", data=body, content_type="application/x-www-form-urlencoded")
    (summary,) = answer.json["deliveries"]
    shown = client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json
    assert (shown["status"], shown["reason"]) == ("unmatched", "routing metadata names no valid prospect id")


# The /v1 API -----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["%2E%2E", "%2E", "a%20b", "%09", "a%C2%A0b", "a%00b", "a%E2%80%A8b"])
def test_the_api_refuses_to_store_a_prospect_or_agent_whose_id_breaks_the_rule(client: Any, raw: str) -> None:
    body = {"emails": ["renter@example.com"]}
    for kind, name in (("prospects", "prospectId"), ("agents", "username")):
        refused = client.put(f"/v1/{kind}/{raw}", json=body, headers=BEARER)
        assert refused.status_code == 400, (kind, raw, refused.json)
        assert refused.json["details"][name][0].startswith("Not a usable id: it ")
        assert client.get(f"/v1/{kind}/{raw}", headers=BEARER).status_code == 404


def test_the_api_stores_and_reads_ids_with_reserved_characters(client: Any) -> None:
    for prospect_id in ("a?b", "a#b", "%2e%2e", "...", "+1-2"):
        path = f"/v1/prospects/{quote(prospect_id, safe='')}"
        assert client.put(path, json={"emails": ["renter@example.com"]}, headers=BEARER).status_code == 200
        assert client.get(path, headers=BEARER).json["prospectId"] == prospect_id


MESSAGE = {"from": "renter@example.com", "to": ["leasing@acme-living.com"], "subject": "Hi", "text": "Hi"}


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/messages", {**MESSAGE, "prospectId": ".."}, "prospectId"),
        ("POST", "/v1/messages", {**MESSAGE, "prospectId": "P1", "agentUsername": "pat\u2003smith"}, "agentUsername"),
        ("PUT", "/v1/prospects/P1", {"emails": ["renter@example.com"], "agentUsername": "."}, "agentUsername"),
        (
            "POST",
            "/v1/prospects",
            {"profile": {"email": "lee@example.com"}, "agentUsername": "a\x1fb"},
            "agentUsername",
        ),
    ],
)
def test_api_bodies_refuse_ids_that_break_the_rule(
    client: Any, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    answer = client.open(path, method=method, json=body, headers=BEARER)
    assert answer.status_code == 400, answer.json
    assert answer.json["details"][field][0].startswith("Not a usable id: it ")


def test_resolving_with_an_unusable_prospect_id_is_refused(client: Any) -> None:
    (summary,) = post_mime(client, mime(sender="stranger@example.net")).json["deliveries"]
    assert summary["status"] == "unmatched"
    answer = client.post(f"/v1/deliveries/{summary['id']}/resolve", json={"prospectId": ".."}, headers=BEARER)
    assert answer.status_code == 400 and "prospectId" in answer.json["details"]
    refused = CliRunner().invoke(cli, ["deliveries", "resolve", summary["id"], "--prospect-id", "a b"],
                                 env=relay_env("http://127.0.0.1:9"))  # fmt: skip
    assert refused.exit_code == 2 and "not a usable id: it contains white space" in refused.output


# Directory import, console -------------------------------------------------------------------


def test_csv_import_reports_unusable_ids_by_line(client: Any, tmp_path: Path) -> None:
    csv_file = tmp_path / "ids.csv"
    csv_file.write_text(
        "prospectId,email,agentUsername\nP1,a@example.com,pat\n..,b@example.com,\n"
        'P3,c@example.com,pat smith\nP4,d@example.com,\n"x\ty",e@example.com,\n'
    )
    result = CliRunner().invoke(cli, ["directory", "import", str(csv_file)], env=relay_env("http://127.0.0.1:9"))
    assert result.exit_code == 1
    assert "line 3: prospectId is not a usable id: it is a dot segment ('.' or '..'); skipped" in result.output
    assert "line 4: agentUsername is not a usable id: it contains white space; skipped" in result.output
    assert "line 6: prospectId is not a usable id: it contains white space; skipped" in result.output
    assert "imported 2 prospects; 3 bad rows skipped" in result.output
    assert client.get("/v1/prospects/P3", headers=BEARER).status_code == 404


@pytest.fixture
def operator(client: Any) -> Any:
    token = csrf(client, "/console/sign-in")
    signed_in = client.post("/console/sign-in", data={"csrf_token": token, "name": CONSOLE_USER,
                                                      "password": CONSOLE_PASSWORD})  # fmt: skip
    assert signed_in.status_code == 302
    return client


def csrf(client: Any, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found, path
    return found[1]


def test_the_console_refuses_unusable_ids_in_forms_and_imports(operator: Any, client: Any) -> None:
    token = csrf(operator, "/console/directory")
    saved = operator.post("/console/directory/prospects", follow_redirects=True,
                          data={"csrf_token": token, "prospectId": "..", "emails": "lee@example.com"})  # fmt: skip
    assert "The prospect was not saved." in saved.text and "id: Not a usable id: it is a dot segment" in saved.text
    agent = operator.post("/console/directory/agents", follow_redirects=True,
                          data={"csrf_token": token, "username": "a\u00a0b", "emails": "a@acme.com"})  # fmt: skip
    assert "The agent was not saved." in agent.text and "id: Not a usable id: it contains white space" in agent.text
    csv_text = b"prospectId,email,agentUsername\nP1,a@example.com,kim\n.,b@example.com,\n"
    imported = operator.post("/console/directory/import", content_type="multipart/form-data", follow_redirects=True,
                             data={"csrf_token": token, "file": (io.BytesIO(csv_text), "d.csv")})  # fmt: skip
    assert "Imported 1 prospect." in imported.text
    assert "Line 3: prospectId is not a usable id: it is a dot segment" in imported.text
    assert client.get("/v1/prospects/P1", headers=BEARER).status_code == 200


# Provider ids through api_url ------------------------------------------------------------------


@pytest.mark.parametrize("email_id", ["..", ".", "", "a b", "a\x00"])
def test_api_url_refuses_a_provider_id_that_is_no_id(email_id: str) -> None:
    with pytest.raises(MalformedPayload, match="a provider id .*: not fetched"):
        api_url("https://api.resend.com", "emails", email_id)


def test_api_url_keeps_every_other_provider_id_in_one_segment() -> None:
    assert api_url("https://api.resend.com/", "emails", "../a/b?c#d%e") == (
        "https://api.resend.com/emails/..%2Fa%2Fb%3Fc%23d%25e"
    )


@pytest.fixture
def api_client(make_settings: Any, storage: StorageStub, start_worker: Any) -> Any:
    settings = make_settings(**provider_api_env(storage.url))
    start_worker(settings)
    return create_app(settings).test_client()


def test_a_resend_email_id_of_dot_dot_is_never_fetched_and_goes_dead(api_client: Any, storage: StorageStub) -> None:
    event = json.loads((Path(__file__).parent / "payloads/resend/received.json").read_text())
    event["data"]["email_id"] = ".."
    data = json.dumps(event).encode()
    answer = api_client.post("/webhooks/resend", data=data, content_type="application/json", headers=svix_headers(data))
    (pending,) = answer.json["deliveries"]
    dead = wait_for_status(api_client, pending["id"], "dead")
    assert dead["lastError"] == "a provider id is a dot segment ('.' or '..'): not fetched"
    assert storage.seen == []


def test_a_postmark_message_id_of_one_dot_is_never_fetched(api_client: Any, storage: StorageStub) -> None:
    event = json.loads((Path(__file__).parent / "payloads/postmark/delivery.json").read_text())
    event["MessageID"] = "."
    (pending,) = api_client.post("/webhooks/postmark/outbound", json=event, headers=basic_auth()).json["deliveries"]
    assert wait_for_status(api_client, pending["id"], "dead")["lastError"].endswith(": not fetched")
    assert storage.seen == []


# Knock: the last line of defence, and what the worker calls -------------------------------------


@dataclass
class RecordingKnock:
    """Stands in for Knock: answers any call, and keeps each call's method and raw path as sent."""

    url: str = ""
    calls: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def recording_knock() -> Iterator[RecordingKnock]:
    knock = RecordingKnock()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, body: dict[str, Any]) -> None:
            knock.calls.append((self.command, self.path))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.answer({"prospect": {"agent": {"username": "pat"}}})

        def do_POST(self) -> None:  # noqa: N802
            self.answer({"communicationId": "C1"})

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    knock.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield knock
    server.shutdown()


@pytest.mark.parametrize("prospect_id", ["..", ".", "", "a b", "a\x7f"])
def test_the_knock_client_never_sends_an_id_that_breaks_the_rule(recording_knock: RecordingKnock,
                                                                 prospect_id: str) -> None:  # fmt: skip
    knock = KnockClient(recording_knock.url, "key", timeout=2)
    with pytest.raises(KnockRejected, match="prospect id .*: not sent to Knock"):
        knock.log_email(prospect_id, {"subject": "Hi"})
    with pytest.raises(KnockRejected):
        knock.get_prospect(prospect_id)
    assert recording_knock.calls == []


ONE_SEGMENT = re.compile(r"/prospect/([^/?#]+)(/email)?")


def test_the_worker_calls_knock_only_at_one_segment_per_prospect_id(
    recording_knock: RecordingKnock, make_settings: Any, start_worker: Any
) -> None:
    settings = make_settings(KNOCK_BASE_URL=recording_knock.url)
    client = create_app(settings).test_client()
    start_worker(settings)
    tags = ["..", ".", "a/b", "..%2F..", "%2e%2e", "a?b", "a#b", "x%00", "P1"]
    sent = {}
    for n, tag in enumerate(tags):
        (summary,) = post_mime(client, mime(to=reply_address(tag), message_id=f"<tag-{n}@example.com>")).json[
            "deliveries"
        ]
        sent[tag] = summary
    message = {"from": "renter@example.com", "to": ["leasing@acme-living.com"], "subject": "Hi", "text": "Hi",
               "prospectId": "../../email", "agentUsername": "pat"}  # fmt: skip
    (by_api,) = client.post("/v1/messages", json=message, headers=BEARER).json["deliveries"]
    assert [sent[t]["status"] for t in (".", "..")] == ["unmatched", "unmatched"]
    expected = [t for t in tags if t not in (".", "..")] + ["../../email"]
    for summary in [sent[t] for t in expected[:-1]] + [by_api]:
        wait_for_status(client, summary["id"], "delivered")

    posted = [path for method, path in recording_knock.calls if method == "POST"]
    assert sorted(posted) == sorted(f"/prospect/{quote(pid, safe='')}/email" for pid in expected)
    for method, path in recording_knock.calls:
        found = ONE_SEGMENT.fullmatch(path)
        assert found and bool(found[2]) == (method == "POST"), (method, path)
        assert unquote(found[1]) in expected
