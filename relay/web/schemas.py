"""The shapes of what the HTTP interface takes and answers.

Request schemas validate bodies and queries; response schemas serialise what the
views return. The OpenAPI document (relay/web/openapi.py) is generated from these
same classes, so the document and the code cannot disagree.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from relay.ids import PATH_ID_PATTERN, path_id_problem
from relay.routing import MESSAGE_TYPES
from relay.store import DUPLICATE, REPLAYABLE, STATUSES
from relay.store.indexes import WORD_CHARACTER

_non_empty = validate.Length(min=1)


def validate_path_id(value: str) -> None:
    """An id that goes into URL paths (Knock's, this API's, the console's) follows relay.ids' rule."""
    problem = path_id_problem(value)
    if problem:
        raise ValidationError(f"Not a usable id: it {problem}.")


def _optional_name() -> fields.String:
    """A name that may be left out or null, but is never the empty string."""
    return fields.String(load_default=None, allow_none=True, validate=_non_empty)


#: relay.ids' rule as the OpenAPI document states it (`validate_path_id` enforces it, with reasons).
_PATH_ID_DOCUMENTED = {"minLength": 1, "pattern": f"^{PATH_ID_PATTERN}$"}


def _id(*, required: bool = False) -> fields.String:
    """A prospect id or agent username, relay.ids' rule documented and enforced: required, or one
    that may be left out or null."""
    if required:
        return fields.String(required=True, validate=validate_path_id, metadata=_PATH_ID_DOCUMENTED)
    return fields.String(load_default=None, allow_none=True, validate=validate_path_id, metadata=_PATH_ID_DOCUMENTED)


class WholeMatch(validate.Regexp):
    """A Regexp that the whole value must match (`$` alone also matches before a final newline)."""

    def __call__(self, value: Any) -> Any:  # type: ignore[override]
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def _nullable_string(**options: Any) -> fields.String:
    return fields.String(allow_none=True, required=True, **options)


# Requests --------------------------------------------------------------------


class ProspectInput(Schema):
    emails = fields.List(fields.Email(), required=True, validate=_non_empty)
    agentUsername = _id()


class AgentInput(Schema):
    emails = fields.List(fields.Email(), required=True, validate=_non_empty)


class KnockProfile(Schema):
    class Meta:
        unknown = INCLUDE

    email = fields.Email(required=True)


class KnockProspectInput(Schema):
    """Knock's prospect-creation body, passed on as given; the relay needs `profile.email`."""

    class Meta:
        unknown = INCLUDE

    profile = fields.Nested(KnockProfile, required=True)
    agentUsername = _id()


class MessageInput(Schema):
    from_ = fields.Email(required=True, data_key="from")
    to = fields.List(fields.Email(), required=True, validate=_non_empty)
    cc = fields.List(fields.Email(), load_default=list)
    subject = fields.String(required=True)
    html = fields.String(load_default=None, allow_none=True)
    text = fields.String(load_default=None, allow_none=True)
    sentTime = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)
    messageId = _optional_name()
    type = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(MESSAGE_TYPES))
    prospectId = _id()
    agentUsername = _id()


class ResolveInput(Schema):
    prospectId = _id(required=True)
    agentUsername = _id()


class ProspectQuery(Schema):
    email = fields.String(required=True, validate=validate.Regexp(r"[\s\S]*\S"))  # something besides blanks


class ReplyAddressQuery(Schema):
    mailbox = fields.String(
        validate=validate.Regexp(r"^[^@\s<>,\x00-\x1f]+@[^@\s<>,\x00-\x1f]+$", error="Not an email address."),
        metadata={"description": "A leasing-side mailbox (`leasing@reply.acme.com`); RELAY_REPLY_MAILBOX if left out"},
    )


class DeliveryFilters(Schema):
    """What the delivery list and a bulk replay filter by."""

    status = fields.String(validate=validate.OneOf(STATUSES))
    messageId = fields.String()
    prospectId = fields.String()
    provider = fields.String(metadata={"description": "Webhook provider (`sendgrid`, `mailgun`, …, `api`)"})
    address = fields.String(
        metadata={"description": "The sender's or a recipient's address (`Name <address>` is read as the address)"}
    )
    subject = fields.String(
        validate=validate.Regexp(
            r"[\s\S]*" + WORD_CHARACTER, error="Give at least one word (letters or digits) to search for."
        ),
        metadata={"description": "Words that must all be whole words of the subject, in any case and order"},
    )
    since = fields.AwareDateTime(default_timezone=None, metadata={"description": "Received at or after"})
    until = fields.AwareDateTime(default_timezone=None, metadata={"description": "Received at or before"})


class DeliveryQuery(DeliveryFilters):
    cursor = fields.String(validate=WholeMatch(r"^[0-9]{1,15}_[0-9a-f]{1,64}$"))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


_FILLED = validate.Regexp(r"[\s\S]*[^\s<>]", error="Give a value, or leave the filter out.")


class BulkReplayInput(DeliveryFilters):
    """The delivery list's filters, for a replay: a filter given must filter (an empty one would
    replay everything; a range that ends before it starts replays nothing)."""

    status = fields.String(
        required=True,
        validate=validate.OneOf(REPLAYABLE),
        metadata={"description": "`dead`, or `ignored` (only those ignored as spam are replayed)"},
    )
    messageId = fields.String(validate=_FILLED)
    prospectId = fields.String(validate=_FILLED)
    provider = fields.String(validate=_FILLED)
    address = fields.String(validate=validate.Regexp(r"[\s\S]*@", error="Not an address."))
    lastError = fields.String(
        validate=_FILLED, metadata={"description": "Text the delivery's last error contains (any case)"}
    )


# Responses -------------------------------------------------------------------


class Error(Schema):
    error = fields.String(required=True)
    details = fields.Raw(metadata={"description": "Field-level messages, where there are any"})


class Prospect(Schema):
    prospectId = fields.String(required=True)
    emails = fields.List(fields.String(), required=True)
    agentUsername = _nullable_string()


class ProspectMatches(Schema):
    prospects = fields.List(fields.Nested(Prospect), required=True)


class ReplyAddress(Schema):
    address = fields.String(required=True, metadata={"description": "The mailbox with the prospect's reply tag"})
    signed = fields.Boolean(required=True, metadata={"description": "Whether the tag carries a signature"})


class CreatedProspect(Schema):
    prospectId = fields.String(required=True)


class Agent(Schema):
    username = fields.String(required=True)
    emails = fields.List(fields.String(), required=True)


class DeliverySummary(Schema):
    id = fields.String(required=True)
    #: A post seen before is answered with its earlier deliveries, each marked `duplicate`.
    status = fields.String(required=True, validate=validate.OneOf((*STATUSES, DUPLICATE)))
    prospectId = _nullable_string()
    type = _nullable_string()


class Accepted(Schema):
    """What a webhook or `POST /v1/messages` answers: the overall status and one entry per delivery."""

    status = fields.String(required=True, validate=validate.OneOf((*STATUSES, DUPLICATE)))
    deliveries = fields.List(fields.Nested(DeliverySummary), required=True)


class Delivery(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    type = _nullable_string()
    direction = _nullable_string()
    prospectId = _nullable_string()
    agentUsername = _nullable_string()
    messageId = _nullable_string()
    provider = _nullable_string()
    subject = _nullable_string()
    sentTime = _nullable_string()
    receivedAt = _nullable_string()
    attempts = fields.Integer(required=True)
    lastError = _nullable_string()
    communicationId = _nullable_string()
    deliveredAt = _nullable_string()
    reason = _nullable_string()
    remoteImages = fields.List(fields.String(), required=True)
    truncated = fields.List(fields.String(), required=True)
    possibleDuplicate = fields.Boolean(required=True)
    senderAuth = _nullable_string()
    sender = _nullable_string()
    recipients = fields.List(fields.String(), required=True)
    prospectFoundBy = _nullable_string()
    matchedBy = _nullable_string(
        metadata={"description": "How the prospect was matched: `metadata`, `address`, `reply tag` or `thread`"}
    )
    threadMessageId = _nullable_string(metadata={"description": "For a thread: the Message-ID it followed"})
    agentFoundBy = _nullable_string()


class DeliveryPage(Schema):
    deliveries = fields.List(fields.Nested(Delivery), required=True)
    nextCursor = _nullable_string(
        metadata={"description": "Pass as cursor for the next, older page; null when no older match exists"}
    )
    stoppedAt = _nullable_string(
        metadata={
            "description": "Set when the search looked at its most records for one page before finding a page "
            "of matches: it looked back to this receipt time, older matches may exist, nextCursor goes on "
            "from there"
        }
    )


class Replayed(Schema):
    replayed = fields.Integer(required=True)
    ids = fields.List(fields.String(), required=True)


class Health(Schema):
    status = fields.String(required=True)


class Readiness(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    redis = fields.String(required=True)
    persistence = fields.Dict(metadata={"description": "What Redis says about keeping its data"})
    topology = fields.Dict(
        metadata={
            "description": "Where the data lives now: mode (direct or sentinel), the primary's address "
            "and each replica's address, state and lag in seconds"
        }
    )
