"""Webhook behaviour every provider shares (SPEC §4.1); each provider's tests subclass this.

A subclass sets `path` and builds requests with `request(auth=...)`, returning
the keyword arguments of Flask's test-client `post`.
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

import redis

from relay.app import create_app
from relay.config import Settings
from relay.quarantine import KEY as QUARANTINE_KEY
from relay.web.schemas import Accepted
from tests.helpers import basic_auth, logged_as, wait_until

#: `expected` of an email routed by its reply tag, and of a post that only names an email the worker fetches.
REPLY_TAGGED = ("queued", "4WXU6U2J", "EMAIL_MESSAGE_FROM_PROSPECT_RECEIVED")
FETCH_PENDING = ("queued", None, "")
#: Headers for `request(auth=...)` of the providers behind RELAY_WEBHOOK_BASIC_AUTH.
BASIC_AUTH_CASES = {"valid": basic_auth(), "missing": {}, "wrong": basic_auth(password="guess")}


class WebhookCases:
    path: ClassVar[str]
    malformed_status: ClassVar[int] = 400
    #: What a failure a retry could fix is answered: the status the provider retries.
    retry_status: ClassVar[int] = 503
    #: The exact answer to `request()`: overall status and the first delivery's status, prospect and type.
    expected: ClassVar[tuple[str, str | None, str]]

    def request(self, auth: str = "valid") -> dict[str, Any]:
        """A readable email post; auth is 'valid', 'missing' or 'wrong'."""
        raise AssertionError("provider test classes define request()")

    def malformed_request(self) -> dict[str, Any]:
        """An authenticated post that is not readable as an email."""
        raise AssertionError("provider test classes define malformed_request()")

    def oversized_request(self, size: int) -> dict[str, Any]:
        """An authenticated post larger than `size` bytes."""
        raise AssertionError("provider test classes define oversized_request()")

    # --------------------------------------------------------------------------

    def test_valid_post_is_accepted(self, client: Any) -> None:
        response = client.post(self.path, **self.request())
        assert response.status_code == 200, response.json
        first = response.json["deliveries"][0]
        assert {"id", "status", "prospectId", "type"} <= set(first)
        outcome = (response.json["status"], first["prospectId"], first["type"])
        assert outcome == self.expected, outcome

    def test_answers_are_what_the_documented_schema_writes(self, client: Any) -> None:
        """Webhook answers are written without the contract's schema pass: byte for byte what
        `jsonify(Accepted().dump(...))` gives, for a first post and for its duplicate."""
        for _ in range(2):
            response = client.post(self.path, **self.request())
            assert response.status_code == 200 and response.mimetype == "application/json"
            with client.application.app_context():
                documented = client.application.json.response(Accepted().dump(response.json)).get_data()
            assert response.get_data() == documented
            assert Accepted().validate(response.json) == {}

    def test_missing_credentials_are_401_and_nothing_is_stored(self, client: Any, redis_client: redis.Redis) -> None:
        response = client.post(self.path, **self.request(auth="missing"))
        assert response.status_code == 401 and response.json["error"]
        assert redis_client.dbsize() == 0

    def test_wrong_credentials_are_401_and_nothing_is_stored(self, client: Any, redis_client: redis.Redis) -> None:
        response = client.post(self.path, **self.request(auth="wrong"))
        assert response.status_code == 401 and response.json["error"]
        assert redis_client.dbsize() == 0

    def test_unreadable_post_is_rejected_and_quarantined(self, client: Any, redis_client: redis.Redis) -> None:
        response = client.post(self.path, **self.malformed_request())
        assert response.status_code == self.malformed_status, response.json
        assert response.json["error"]
        assert redis_client.llen(QUARANTINE_KEY) == 1

    def test_oversized_post_is_413(self, client: Any, settings: Settings, redis_client: redis.Redis) -> None:
        response = client.post(self.path, **self.oversized_request(settings.max_request_bytes + 1))
        assert response.status_code == 413 and response.json["error"]
        assert redis_client.dbsize() == 0

    def test_redis_down_is_503_never_200(self, make_settings: Any) -> None:
        down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
        response = down.post(self.path, **self.request())
        assert response.status_code == self.retry_status and response.json["error"]

    def test_redis_stopped_under_a_running_relay_is_503_for_every_post(
        self, make_settings: Any, own_redis: Any
    ) -> None:
        """Redis stops while the relay holds connections to it: each post (readable or not) is
        answered 503 (429 to Brevo, which drops a 5xx), which the provider retries, never a 4xx it
        drops at once."""
        url = own_redis("--appendonly", "yes")
        client = create_app(make_settings(REDIS_URL=url)).test_client()
        assert client.post(self.path, **self.request()).status_code == 200
        try:
            redis.Redis.from_url(url).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # it went down while answering, as SHUTDOWN does
        for request in (self.request(), self.malformed_request()):
            response = client.post(self.path, **request)
            assert response.status_code == self.retry_status and response.headers["Retry-After"], response.json

    def test_unreadable_post_while_redis_is_down_is_503(self, make_settings: Any) -> None:
        """It cannot be quarantined, so the provider is asked to retry rather than told to give up."""
        down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
        assert down.post(self.path, **self.malformed_request()).status_code == self.retry_status

    def test_same_post_twice_is_a_duplicate(self, client: Any) -> None:
        first = client.post(self.path, **self.request())
        second = client.post(self.path, **self.request())
        assert second.json["status"] == "duplicate"
        assert second.json["deliveries"][0]["id"] == first.json["deliveries"][0]["id"]


#: One attachment for each way mailers name a file in raw MIME, and the name it is: a plain
#: quoted filename, RFC 2231 (percent-encoded UTF-8, and continued over two parameters) and RFC 2047
#: words (quoted-printable in Content-Type's `name`, base64 in the filename, as Outlook and Gmail
#: write them).
MIME_ATTACHMENTS: tuple[tuple[str, str], ...] = (
    ('Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="pay stub.pdf"', "pay stub.pdf"),
    ("Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=UTF-8''bail%20sign%C3%A9.pdf",
     "bail signé.pdf"),
    ("Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*0*=UTF-8''%C3%A9tat%20des;"
     "\r\n filename*1*=%20lieux.pdf", "état des lieux.pdf"),
    ('Content-Type: application/pdf; name="=?utf-8?q?fiche_d=C3=A9p=C3=B4t.pdf?="\r\nContent-Disposition: attachment',
     "fiche dépôt.pdf"),
    ('Content-Type: application/pdf\r\nContent-Disposition: attachment; '
     'filename="=?UTF-8?B?0LrQstC40YLQsNC90YbQuNGPLnBkZg==?="', "квитанция.pdf"),
)  # fmt: skip
MIME_ATTACHMENT_NAMES = tuple(name for _, name in MIME_ATTACHMENTS)
#: File names as the providers that hand over parsed fields give them (decoded, in UTF-8).
DECODED_ATTACHMENT_NAMES = ("pay stub.pdf", "bail signé.pdf", "квитанция.pdf", "reçu — loyer.pdf")
#: A file name in raw UTF-8 in a quoted parameter (RFC 6532), as some mailers write it.
RAW_UTF8_ATTACHMENT = ('Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="reçu — loyer.pdf"',
                       "reçu — loyer.pdf")  # fmt: skip


def message_with_attachments(
    attachments: tuple[tuple[str, str], ...] = MIME_ATTACHMENTS,
    *,
    sender: str = "Renter <renter@example.com>",
    to: str = "leasing+prospect-4WXU6U2J@reply.acme-living.com",
    message_id: str = "<attachments-1@mail.example.com>",
) -> bytes:
    """A raw message (a renter writing to a reply-tagged address) carrying `attachments`, each a
    part's headers and the name they give it."""
    content = base64.b64encode(b"%PDF-1.4 fake").decode()
    parts = [
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHere are my documents.\r\n",
        *(f"{headers}\r\nContent-Transfer-Encoding: base64\r\n\r\n{content}\r\n" for headers, _ in attachments),
    ]
    lines = [f"From: {sender}", f"To: {to}", "Subject: My documents", f"Message-ID: {message_id}",
             "Date: Tue, 31 Mar 2020 16:22:06 -0700", "MIME-Version: 1.0",
             'Content-Type: multipart/mixed; boundary="==docs=="', ""]  # fmt: skip
    body = "".join(f"--==docs==\r\n{part}" for part in parts) + "--==docs==--\r\n"
    return ("\r\n".join(lines) + "\r\n" + body).encode()


def logged_body(services: Any, delivery_id: str) -> str | None:
    """The email's body as stored for Knock: once Knock has it the record lets go of it, and a
    copy of what was sent stays."""
    stored = services.store.payload(delivery_id) or services.store.sent_payload(delivery_id)
    return stored["body"] if stored else None


def listed_attachments(client: Any, response: Any, names: tuple[str, ...], *, fetched: bool = False) -> None:
    """Assert that every email `response` queued lists exactly `names` as its attachments and no
    provider field name; with `fetched`, the emails the worker logged for the fetches it queued."""
    services = client.application.extensions["relay"]
    assert response.status_code == 200, response.json
    queued = [d["id"] for d in response.json["deliveries"] if d["status"] == "queued"]
    assert queued
    if fetched:
        queued = [logged_as(client, fetch_id)["id"] for fetch_id in queued]
    for delivery_id in queued:
        body = wait_until(lambda found=delivery_id: logged_body(services, found))
        listed = body[body.index("Attachments (not included)") :]
        for name in names:
            assert f"<li>{name} (" in listed, (name, listed)
        assert listed.count("<li>") == len(names), listed
        for field in ("Attachment1", "attachment-1", "attachment1"):  # how providers name the fields
            assert field not in body, (field, listed)


class CarriesAttachments:
    """For a provider whose posts carry attachments: each is listed on the logged email by its real
    file name (as raw MIME names it), never by the provider's field name for it.

    `attachment_request()` (by default `request()`) is the post and `attachment_names` the names it
    carries. Where the post only names the email and the worker fetches it from the provider
    (`fetched`), the class's `client` reaches the provider's API (a local stand-in) and a worker runs."""

    path: ClassVar[str]
    #: The file names `attachment_request()` carries.
    attachment_names: ClassVar[tuple[str, ...]]
    #: Whether the worker fetches the email the post names (its attachments come with the fetch).
    fetched: ClassVar[bool] = False

    def request(self, auth: str = "valid") -> dict[str, Any]:
        raise AssertionError("provider test classes define request()")

    def attachment_request(self) -> dict[str, Any]:
        return self.request()

    def test_attachments_are_listed_by_their_file_names(self, client: Any) -> None:
        response = client.post(self.path, **self.attachment_request())
        listed_attachments(client, response, self.attachment_names, fetched=self.fetched)


class CarriesMimeAttachments(CarriesAttachments):
    """For a provider that hands over the raw message: every way raw MIME names a file."""

    attachment_names = MIME_ATTACHMENT_NAMES

    def carrying(self, raw: bytes) -> dict[str, Any]:
        """An authenticated post of the provider's that carries the raw message `raw`."""
        raise AssertionError("provider test classes define carrying()")

    def attachment_request(self) -> dict[str, Any]:
        return self.carrying(message_with_attachments())

    def test_a_file_name_in_raw_utf8_is_listed(self, client: Any) -> None:
        raw = message_with_attachments((RAW_UTF8_ATTACHMENT,), message_id="<attachments-utf8@mail.example.com>")
        response = client.post(self.path, **self.carrying(raw))
        listed_attachments(client, response, (RAW_UTF8_ATTACHMENT[1],), fetched=self.fetched)
