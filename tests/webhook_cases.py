"""Webhook behaviour every provider shares (SPEC §4.1); each provider's tests subclass this.

A subclass sets `path` and builds requests with `request(auth=...)`, returning
the keyword arguments of Flask's test-client `post`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import redis

from relay.app import create_app
from relay.config import Settings
from relay.quarantine import KEY as QUARANTINE_KEY
from relay.web.schemas import Accepted


class WebhookCases:
    path: ClassVar[str]
    malformed_status: ClassVar[int] = 400
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
        assert response.status_code == 503 and response.json["error"]

    def test_redis_stopped_under_a_running_relay_is_503_for_every_post(
        self, make_settings: Any, own_redis: Any
    ) -> None:
        """Redis stops while the relay holds connections to it: each post (readable or not) is
        answered 503, which every provider retries, never a 4xx some providers drop at once."""
        url = own_redis("--appendonly", "yes")
        client = create_app(make_settings(REDIS_URL=url)).test_client()
        assert client.post(self.path, **self.request()).status_code == 200
        try:
            redis.Redis.from_url(url).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # it went down while answering, as SHUTDOWN does
        for request in (self.request(), self.malformed_request()):
            response = client.post(self.path, **request)
            assert response.status_code == 503 and response.headers["Retry-After"], response.json

    def test_unreadable_post_while_redis_is_down_is_503(self, make_settings: Any) -> None:
        """It cannot be quarantined, so the provider is asked to retry rather than told to give up."""
        down = create_app(make_settings(REDIS_URL="redis://127.0.0.1:1/0")).test_client()
        assert down.post(self.path, **self.malformed_request()).status_code == 503

    def test_same_post_twice_is_a_duplicate(self, client: Any) -> None:
        first = client.post(self.path, **self.request())
        second = client.post(self.path, **self.request())
        assert second.json["status"] == "duplicate"
        assert second.json["deliveries"][0]["id"] == first.json["deliveries"][0]["id"]


class CarriesAttachments:
    """For a provider whose `request()` carries attachments: each is listed on the logged email by
    its real file name (as raw MIME names it), never by the provider's field name for it."""

    path: ClassVar[str]
    #: The file names `request()` carries.
    attachment_names: ClassVar[tuple[str, ...]]

    def request(self, auth: str = "valid") -> dict[str, Any]:
        raise AssertionError("provider test classes define request()")

    def test_attachments_are_listed_by_their_file_names(self, client: Any) -> None:
        services = client.application.extensions["relay"]
        queued = [d for d in client.post(self.path, **self.request()).json["deliveries"] if d["status"] == "queued"]
        assert queued
        for summary in queued:
            body = services.store.payload(summary["id"])["body"]
            for name in self.attachment_names:
                assert name in body, (name, body[-400:])
            assert "Attachment1" not in body
