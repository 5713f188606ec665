"""Each provider's own sender verdicts, read into the email's sender authentication.

Mail whose From is on the leasing side goes to prospects as an agent's: under
RELAY_SENDER_AUTH=enforce it is logged only when the provider (or a receiving server the
operator trusts) vouches for the From domain. A failed verdict, and no verdict at all, leave it
unmatched ("sender not authenticated") with nothing queued. Every post here is in the provider's
own format, from a stranger using `maria@acme-living.com` or from Maria herself.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from werkzeug.serving import make_server

from relay.app import create_app
from relay.queue import QUEUE_KEY
from relay.sender_auth import NOT_AUTHENTICATED
from tests.conftest import SnsSigner
from tests.helpers import (
    BEARER,
    RESEND_API_KEY,
    SENDGRID_FORM,
    SPARKPOST_TOKEN,
    TRUSTED_AUTHSERV_ID,
    basic_auth,
    free_port,
    mailersend_headers,
    mailgun_signature,
    mandrill_headers,
    mime,
    payload,
    signed_urlencoded,
    svix_headers,
    wait_for_status,
)

TO_PROSPECT = "EMAIL_MESSAGE_TO_PROSPECT_SENT"
AGENT = "Maria Lopez <maria@acme-living.com>"
PROSPECT = "lee@example.com"
LOG_ADDRESS = "log@reply.acme-living.com"  # the BCC'd relay address: on the leasing side
OWN_ENVELOPE = "bounces@acme-living.com"
STRANGER_ENVELOPE = "maria@evil.example"
MESSAGE_ID = "<tour-friday-7@acme-living.com>"
OWN_SIGNATURE = "v=1; a=rsa-sha256; d=acme-living.com; s=k1; h=from:to:subject; bh=aGk=; b=c2ln"
STRANGER_SIGNATURE = "v=1; a=rsa-sha256; d=evil.example; s=k1; h=from:to:subject; bh=aGk=; b=c2ln"
VERDICTS = ("pass", "fail", "none")


def trusted_results(verdict: str) -> list[tuple[str, str]]:
    """An Authentication-Results header from the receiving server the tests trust, or none."""
    if verdict == "none":
        return []
    domain = "acme-living.com" if verdict == "pass" else "evil.example"
    result = f"{TRUSTED_AUTHSERV_ID}; dkim=pass header.d={domain}; spf={verdict} smtp.mailfrom={domain}"
    return [("Authentication-Results", result)]


def outbound(headers: list[tuple[str, str]] | None = None) -> bytes:
    extra = "\n".join(f"{name}: {value}" for name, value in headers or [])
    return mime(sender=AGENT, to=f"Lee <{PROSPECT}>", subject="Your tour on Friday", body="See you at ten.",
                message_id=MESSAGE_ID, extra_headers=extra)  # fmt: skip


@dataclass
class Post:
    path: str
    kwargs: dict[str, Any]


# Each provider's post for a verdict: "pass" (aligned), "fail" (failed), "none" (nothing given) -----


def sendgrid(verdict: str) -> Post:
    fields = {
        "pass": {"SPF": "pass", "dkim": "{@acme-living.com : pass}", "from": OWN_ENVELOPE},
        "fail": {"SPF": "fail", "dkim": "{@evil.example : pass}", "from": STRANGER_ENVELOPE},
        "none": {"from": STRANGER_ENVELOPE},
    }[verdict]
    return sendgrid_post(outbound(), fields.get("SPF"), fields.get("dkim"), fields["from"])


def sendgrid_post(raw: bytes, spf: str | None, dkim: str | None, envelope_from: str | None) -> Post:
    envelope: dict[str, Any] = {"to": [LOG_ADDRESS]} | ({"from": envelope_from} if envelope_from else {})
    parts = [("email", raw), ("envelope", json.dumps(envelope).encode())]
    parts += [(name, value.encode()) for name, value in (("SPF", spf), ("dkim", dkim)) if value is not None]
    body = b"".join(
        b'--xYzZY\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
        for name, value in parts
    )
    return Post("/webhooks/sendgrid/inbound", {"data": body + b"--xYzZY--\r\n", "content_type": SENDGRID_FORM,
                                               "headers": basic_auth()})  # fmt: skip


def mailgun(verdict: str) -> Post:
    headers = [["From", AGENT], ["To", f"Lee <{PROSPECT}>"], ["Subject", "Your tour"], ["Message-Id", MESSAGE_ID],
               ["DKIM-Signature", OWN_SIGNATURE if verdict == "pass" else STRANGER_SIGNATURE]]  # fmt: skip
    if verdict != "none":
        headers += [["X-Mailgun-Dkim-Check-Result", "Pass" if verdict == "pass" else "Fail"], ["X-Mailgun-Spf", "Fail"]]
    return mailgun_post(headers, OWN_ENVELOPE if verdict == "pass" else STRANGER_ENVELOPE)


def mailgun_post(headers: list[list[str]], sender: str) -> Post:
    fields = {"message-headers": json.dumps(headers), "body-plain": "See you at ten.", "sender": sender,
              "recipient": LOG_ADDRESS}  # fmt: skip
    data = signed_urlencoded(urlencode(fields).encode(), mailgun_signature())
    return Post("/webhooks/mailgun/inbound", {"data": data, "content_type": "application/x-www-form-urlencoded"})


def postmark(verdict: str) -> Post:
    spf = {
        "pass": f"Pass (sender SPF authorized) identity=mailfrom; client-ip=192.0.2.1; envelope-from={OWN_ENVELOPE}; "
        "receiver=1a2b@inbound.postmarkapp.com",
        "fail": f"Fail (sender not authorized) identity=mailfrom; client-ip=203.0.113.9; "
        f"envelope-from={STRANGER_ENVELOPE}; receiver=1a2b@inbound.postmarkapp.com",
    }.get(verdict)
    headers = [{"Name": "Message-ID", "Value": MESSAGE_ID}] + ([{"Name": "Received-SPF", "Value": spf}] if spf else [])
    body = {"FromFull": {"Email": "maria@acme-living.com", "Name": "Maria Lopez"}, "ToFull": [{"Email": PROSPECT}],
            "Subject": "Your tour", "TextBody": "See you at ten.", "Headers": headers,
            "OriginalRecipient": LOG_ADDRESS}  # fmt: skip
    return Post("/webhooks/postmark/inbound", {"json": body, "headers": basic_auth()})


def ses_event(verdict: str, raw: bytes | None = None) -> dict[str, Any]:
    """SES's Received event: the receipt's verdicts, the envelope sender, the message."""
    source, spf, dkim, dmarc = {
        "pass": (STRANGER_ENVELOPE, "PASS", "GRAY", "PASS"),  # DMARC passed: SES judged the From domain
        "fail": (STRANGER_ENVELOPE, "FAIL", "FAIL", "FAIL"),
        "none": (STRANGER_ENVELOPE, "GRAY", "GRAY", "GRAY"),
    }[verdict]
    event = json.loads(payload("ses/received-event.json"))
    event["mail"]["source"] = source
    event["receipt"].update({"recipients": [LOG_ADDRESS], "spfVerdict": {"status": spf},
                             "dkimVerdict": {"status": dkim}, "dmarcVerdict": {"status": dmarc}})  # fmt: skip
    event["content"] = base64.b64encode(raw or outbound()).decode()
    return event


def ses_post(sns: SnsSigner, event: dict[str, Any]) -> Post:
    message = sns.sign({**json.loads(payload("ses/notification.json")), "Message": json.dumps(event)})
    return Post("/webhooks/ses", {"data": json.dumps(message), "content_type": "text/plain; charset=UTF-8",
                                  "headers": {"x-amz-sns-message-type": "Notification"}})  # fmt: skip


def mandrill(verdict: str) -> Post:
    msg: dict[str, Any] = {
        "pass": {"dkim": {"signed": True, "valid": True}, "spf": {"result": "pass", "detail": "sender SPF authorized"}},
        "fail": {"dkim": {"signed": True, "valid": False}, "spf": {"result": "fail", "detail": "not authorized"}},
        "none": {},
    }[verdict]
    signature = OWN_SIGNATURE if verdict == "pass" else STRANGER_SIGNATURE
    msg |= {"raw_msg": outbound([("DKIM-Signature", signature)]).decode(), "email": LOG_ADDRESS}
    return mandrill_post([{"event": "inbound", "msg": msg}])


def mandrill_post(events: list[dict[str, Any]]) -> Post:
    params = {"mandrill_events": json.dumps(events)}
    headers = mandrill_headers("http://localhost/webhooks/mandrill/inbound", params)
    form = {"data": urlencode(params), "content_type": "application/x-www-form-urlencoded", "headers": headers}
    return Post("/webhooks/mandrill/inbound", form)


def mailersend(verdict: str) -> Post:
    data: dict[str, Any] = {
        "pass": {"spf_check": {"code": "+", "value": None}, "dkim_check": False, "sender": {"email": OWN_ENVELOPE}},
        "fail": {"spf_check": {"code": "-", "value": None}, "dkim_check": False,
                 "sender": {"email": STRANGER_ENVELOPE}},
        "none": {"dkim_check": False, "sender": {"email": STRANGER_ENVELOPE}},
    }[verdict]  # fmt: skip
    data |= {"raw": outbound().decode(), "recipients": {"rcptTo": [{"email": LOG_ADDRESS}]}}
    body = json.dumps({"type": "inbound.message", "data": data}).encode()
    return Post("/webhooks/mailersend/inbound", {"data": body, "content_type": "application/json",
                                                 "headers": mailersend_headers(body)})  # fmt: skip


def mailjet(verdict: str) -> Post:
    headers = dict([("To", f"Lee <{PROSPECT}>"), ("Message-ID", MESSAGE_ID), *trusted_results(verdict)])
    body = {"Sender": "maria@acme-living.com", "Recipient": LOG_ADDRESS, "From": AGENT, "Subject": "Your tour",
            "Headers": headers, "Text-part": "See you at ten."}  # fmt: skip
    return Post("/webhooks/mailjet/inbound", {"json": body, "headers": basic_auth()})


def brevo(verdict: str) -> Post:
    item = {"From": {"Name": "Maria Lopez", "Address": "maria@acme-living.com"}, "To": [{"Address": PROSPECT}],
            "Subject": "Your tour", "MessageId": MESSAGE_ID, "RawTextBody": "See you at ten.",
            "Headers": dict(trusted_results(verdict)), "Recipients": [LOG_ADDRESS]}  # fmt: skip
    return Post("/webhooks/brevo/inbound", {"json": {"items": [item]}, "headers": basic_auth()})


def sparkpost(verdict: str) -> Post:
    content = {"email_rfc822": outbound(trusted_results(verdict)).decode(), "email_rfc822_is_base64": False}
    message = {"content": content, "rcpt_to": LOG_ADDRESS, "msg_from": "maria@acme-living.com"}
    token = {"X-MessageSystems-Webhook-Token": SPARKPOST_TOKEN}
    return Post("/webhooks/sparkpost/inbound", {"json": [{"msys": {"relay_message": message}}], "headers": token})


def raw_mime(verdict: str) -> Post:
    return Post("/webhooks/mime", {"data": outbound(trusted_results(verdict)), "content_type": "message/rfc822",
                                   "headers": basic_auth()})  # fmt: skip


PROVIDERS: dict[str, Callable[[str], Post]] = {
    "sendgrid": sendgrid,
    "mailgun": mailgun,
    "postmark": postmark,
    "mandrill": mandrill,
    "mailersend": mailersend,
    "mailjet": mailjet,
    "brevo": brevo,
    "sparkpost": sparkpost,
    "mime": raw_mime,
}


@pytest.fixture
def client(make_settings: Any, sns: SnsSigner) -> Any:
    client = create_app(make_settings(RELAY_SNS_CERTIFICATE_ORIGINS=sns.origin)).test_client()
    client.put("/v1/prospects/P1", json={"emails": [PROSPECT], "agentUsername": "pat"}, headers=BEARER)
    return client


def outcome(client: Any, post: Post) -> dict[str, Any]:
    response = client.post(post.path, **post.kwargs)
    assert response.status_code == 200, response.json
    (summary,) = response.json["deliveries"]
    return client.get(f"/v1/deliveries/{summary['id']}", headers=BEARER).json  # type: ignore[no-any-return]


def assert_logged(shown: dict[str, Any]) -> None:
    assert (shown["status"], shown["prospectId"], shown["type"]) == ("queued", "P1", TO_PROSPECT), shown
    assert shown["senderAuth"].startswith("pass: ")


def assert_parked(shown: dict[str, Any], redis_client: Any, status: str) -> None:
    assert (shown["status"], shown["reason"], shown["prospectId"]) == ("unmatched", NOT_AUTHENTICATED, None), shown
    assert shown["senderAuth"].split(":")[0] == status
    assert redis_client.llen(QUEUE_KEY) == 0


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("verdict", VERDICTS)
def test_leasing_side_mail_is_logged_only_when_its_provider_vouches_for_the_sender(
    client: Any, redis_client: Any, provider: str, verdict: str
) -> None:
    shown = outcome(client, PROVIDERS[provider](verdict))
    if verdict == "pass":
        assert_logged(shown)
    else:
        assert_parked(shown, redis_client, verdict)


@pytest.mark.parametrize("verdict", VERDICTS)
def test_ses_receipt_verdicts(client: Any, redis_client: Any, sns: SnsSigner, verdict: str) -> None:
    shown = outcome(client, ses_post(sns, ses_event(verdict)))
    if verdict == "pass":
        assert_logged(shown)
        assert shown["senderAuth"] == "pass: dmarc=pass"
    else:
        assert_parked(shown, redis_client, verdict)


def test_sendgrid_spf_pass_without_an_envelope_sender_or_aligned_dkim_is_not_authenticated(
    client: Any, redis_client: Any
) -> None:
    """SPF passed for some envelope sender SendGrid did not name: it vouches for no domain."""
    shown = outcome(client, sendgrid_post(outbound(), "pass", "none", None))
    assert_parked(shown, redis_client, "fail")


@pytest.mark.parametrize(
    ("source", "spf", "dkim", "signatures", "logged"),
    [
        (OWN_ENVELOPE, "PASS", "GRAY", [], True),  # SPF for an aligned envelope sender
        (STRANGER_ENVELOPE, "PASS", "GRAY", [], False),  # SPF for the stranger's own domain
        (STRANGER_ENVELOPE, "FAIL", "PASS", [OWN_SIGNATURE], True),  # the only signature is the From domain's
        (STRANGER_ENVELOPE, "FAIL", "PASS", [STRANGER_SIGNATURE], False),
        (STRANGER_ENVELOPE, "FAIL", "PASS", [OWN_SIGNATURE, STRANGER_SIGNATURE], False),  # which one passed?
        (STRANGER_ENVELOPE, "FAIL", "PASS", [], False),  # a DKIM pass naming no domain
    ],
)
def test_ses_spf_and_dkim_count_only_when_aligned(
    client: Any, sns: SnsSigner, source: str, spf: str, dkim: str, signatures: list[str], logged: bool
) -> None:
    event = ses_event("none", outbound([("DKIM-Signature", s) for s in signatures]))
    event["mail"]["source"] = source
    event["receipt"].update({"spfVerdict": {"status": spf}, "dkimVerdict": {"status": dkim}})
    shown = outcome(client, ses_post(sns, event))
    assert (shown["status"] == "queued") is logged, shown


def test_ses_dmarc_pass_does_not_cover_a_message_with_two_from_headers(client: Any, sns: SnsSigner) -> None:
    shown = outcome(client, ses_post(sns, ses_event("pass", outbound([("From", "someone@evil.example")]))))
    assert (shown["status"], shown["reason"]) == ("unmatched", NOT_AUTHENTICATED)


def test_a_trusted_receiving_server_vouches_when_ses_cannot(client: Any, sns: SnsSigner) -> None:
    shown = outcome(client, ses_post(sns, ses_event("none", outbound(trusted_results("pass")))))
    assert_logged(shown)


def test_mailgun_dkim_pass_beside_a_strangers_signature_is_not_the_from_domains(client: Any, redis_client: Any) -> None:
    """One valid signature by the stranger's domain and a forged one for the From domain: Mailgun's
    single `Pass` cannot say which one it was for."""
    headers = [["From", AGENT], ["To", PROSPECT], ["Subject", "Tour"], ["Message-Id", MESSAGE_ID],
               ["DKIM-Signature", OWN_SIGNATURE], ["DKIM-Signature", STRANGER_SIGNATURE],
               ["X-Mailgun-Dkim-Check-Result", "Pass"], ["X-Mailgun-Spf", "Pass"]]  # fmt: skip
    assert_parked(outcome(client, mailgun_post(headers, STRANGER_ENVELOPE)), redis_client, "fail")


def test_mandrill_dkim_pass_is_the_from_domains_only_when_every_signature_is(client: Any, redis_client: Any) -> None:
    raw = outbound([("DKIM-Signature", OWN_SIGNATURE), ("DKIM-Signature", STRANGER_SIGNATURE)]).decode()
    msg = {"raw_msg": raw, "email": LOG_ADDRESS, "dkim": {"signed": True, "valid": True},
           "spf": {"result": "pass", "detail": "sender SPF authorized"}}  # fmt: skip
    assert_parked(outcome(client, mandrill_post([{"event": "inbound", "msg": msg}])), redis_client, "fail")


# Resend gives no verdict: the worker fetches the email, and only a trusted server can vouch -----


@dataclass
class ReceivedEmails:
    """Stands in for Resend's API: serves `found` as the received email."""

    url: str = ""
    found: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def resend_api() -> Iterator[ReceivedEmails]:
    from flask import Flask, Response, request

    stub = ReceivedEmails()
    app = Flask("resend-received-stub")

    @app.get("/emails/receiving/<email_id>")
    def received(email_id: str) -> Response:
        if request.headers.get("Authorization") != f"Bearer {RESEND_API_KEY}":
            return Response("{}", status=401, mimetype="application/json")
        return Response(json.dumps(stub.found), mimetype="application/json")

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stub.url = f"http://127.0.0.1:{server.server_port}"
    yield stub
    server.shutdown()


@pytest.mark.parametrize("verdict", VERDICTS)
def test_resend_received_mail_is_judged_by_trusted_headers_only(
    make_settings: Any, start_worker: Any, resend_api: ReceivedEmails, verdict: str
) -> None:
    settings = make_settings(RELAY_RESEND_API_URL=resend_api.url)
    client = create_app(settings).test_client()
    client.put("/v1/prospects/P1", json={"emails": [PROSPECT], "agentUsername": "pat"}, headers=BEARER)
    start_worker(settings)
    resend_api.found = {"object": "email", "id": "4ef9", "from": AGENT, "to": [PROSPECT], "subject": "Your tour",
                        "text": "See you at ten.", "message_id": MESSAGE_ID,
                        "headers": {name.lower(): value for name, value in trusted_results(verdict)}}  # fmt: skip
    event = json.dumps({"type": "email.received", "data": {"email_id": "4ef9", "subject": "Your tour"}}).encode()
    response = client.post("/webhooks/resend", data=event, content_type="application/json", headers=svix_headers(event))
    done = wait_for_status(client, response.json["deliveries"][0]["id"], "fetched")
    shown = client.get(f"/v1/deliveries/{done['reason'].removeprefix('logged as ')}", headers=BEARER).json
    if verdict == "pass":
        assert (shown["prospectId"], shown["type"]) == ("P1", TO_PROSPECT) and shown["senderAuth"].startswith("pass")
    else:
        assert (shown["status"], shown["reason"]) == ("unmatched", NOT_AUTHENTICATED)
        assert shown["senderAuth"].split(":")[0] == verdict
