"""`POST /webhooks/ses`: Amazon SES receipt rules publishing to SNS.

SNS posts JSON as `text/plain`. Every message is checked against its SNS
signature (v1 RSA-SHA1, v2 RSA-SHA256) with the certificate named by
`SigningCertURL`, fetched only from `https://sns.<region>.amazonaws.com/….pem`
(a real region's name: `sns.s3.amazonaws.com` is a bucket anyone can make) and
kept, and only once the cheap checks passed; the topic must be one of
RELAY_SES_TOPIC_ARNS. A subscription to an allowed topic is confirmed by fetching
its `SubscribeURL` (same host rule). The email's sender is judged by SES's own
SPF, DKIM and DMARC verdicts on receipt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask import Request

from relay.config import Settings
from relay.errors import MalformedPayload, Unauthorized
from relay.message import TRUNCATED_HEADERS, Email, Ignored, PendingFetch, normalise_message_id
from relay.mime import parse_mime
from relay.providers.base import WebhookProvider, as_dict, as_list, as_str, require_secrets
from relay.providers.fetch import allowed_fetch_url, fetch
from relay.providers.ses_s3 import STORED_IN_S3, read_stored_message
from relay.sender_auth import SenderAuth, from_ses, from_trusted_headers, strongest
from relay.spam import NO_VERDICT, ContentVerdict
from relay.untrusted_json import loads

CHALLENGE = 'SNS-Signature realm="knock-relay webhooks"'
#: An AWS region's name: partition prefix, `-gov` for GovCloud, a direction, a number (`us-east-1`,
#: `us-gov-west-1`, `ap-southeast-2`). S3's hosts (`s3`, `s3-us-west-2`, `s3-accelerate`) are not.
_REGION = (
    r"(?:us|eu|ap|sa|ca|me|af|il|mx)(?:-gov)?"
    r"-(?:east|west|north|south|central|northeast|southeast|northwest|southwest)-[0-9]{1,2}"
)
#: SNS endpoints: `sns.<region>.amazonaws.com`, and the two China regions under `.amazonaws.com.cn`.
_SNS_HOST = re.compile(rf"sns\.{_REGION}\.amazonaws\.com|sns\.cn-(?:north|northwest)-1\.amazonaws\.com\.cn")
#: Fields each message type signs, in the order SNS concatenates them.
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
_CERTIFICATE_LIMIT = 64 * 1024
#: Largest SNS post read: SNS messages are at most 256 KB, and writing every character of one as
#: a six-character JSON escape in the envelope would take it to 1.5 MB. Larger bodies are refused
#: unread (413).
SNS_MAX_BODY_BYTES = 2 * 1024 * 1024


def is_sns_host(host: str) -> bool:
    """Whether `host` is an SNS endpoint of a real region (nothing else under amazonaws.com)."""
    return _SNS_HOST.fullmatch(host) is not None


def sns_url(url: str, settings: Settings, *, certificate: bool) -> str | None:
    """`url` when SNS may be fetched from it: https on `sns.<region>.amazonaws.com` (or an origin
    in RELAY_SNS_CERTIFICATE_ORIGINS), a certificate path ending in `.pem`; else None."""
    allowed = allowed_fetch_url(url, ("https://*.amazonaws.com", "https://*.amazonaws.com.cn"))
    if allowed is not None and not is_sns_host(urlsplit(allowed).hostname or ""):
        allowed = None
    if allowed is None and settings.sns_certificate_origins:
        allowed = allowed_fetch_url(url, settings.sns_certificate_origins)
    if allowed is None or (certificate and not urlsplit(allowed).path.endswith(".pem")):
        return None
    return allowed


class CertificateCache:
    """Signing certificates by URL: SNS signs every message with the same few."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        key = self._keys.get(url)
        if key is not None:
            return key
        try:
            pem = fetch(url, what="SNS signing certificate", limit=_CERTIFICATE_LIMIT)
        except MalformedPayload as exc:
            # Refused or gone (4xx), or too large: no certificate, so no valid signature. A network
            # error or a 5xx stays ProviderUnavailable (503), and SNS tries again.
            raise Unauthorized(f"SigningCertURL gave no certificate: {exc.message}", challenge=CHALLENGE) from exc
        try:
            found = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError as exc:
            raise Unauthorized("SigningCertURL does not hold a certificate", challenge=CHALLENGE) from exc
        if not isinstance(found, rsa.RSAPublicKey):
            raise Unauthorized("SNS signing certificate is not RSA", challenge=CHALLENGE)
        with self._lock:
            if len(self._keys) >= self.size:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = found
        return found


CERTIFICATES = CertificateCache()


def string_to_sign(message: dict[str, Any]) -> bytes:
    fields = _SIGNED_FIELDS[message["Type"]]
    return "".join(f"{name}\n{message[name]}\n" for name in fields if isinstance(message.get(name), str)).encode()


def sns_message(request: Request) -> dict[str, Any]:
    """The SNS envelope, read from the raw body whatever the content type (SNS says text/plain)."""
    try:
        message = loads(request.get_data(cache=True))
    except ValueError as exc:
        raise Unauthorized("not an SNS message", challenge=CHALLENGE) from exc
    if not isinstance(message, dict):
        raise Unauthorized("not an SNS message", challenge=CHALLENGE)
    return message


class SesSnsProvider(WebhookProvider):
    name = "ses"
    path = "/webhooks/ses"
    summary = "Amazon SES receipt rule → SNS topic (HTTPS subscription); subscriptions are confirmed"
    authentication = (
        "The SNS signature (SignatureVersion 1: RSA-SHA1, 2: RSA-SHA256) with the certificate at "
        "SigningCertURL (https://sns.<region>.amazonaws.com/….pem only); TopicArn in RELAY_SES_TOPIC_ARNS."
    )
    media_types: ClassVar[dict[str, dict[str, Any]]] = {
        "text/plain": {"type": "string"},
        "application/json": {"type": "object"},
    }
    # An SNS message is at most 256 KB; JSON escapes in the envelope can make that about 1.5 MB.
    max_body_bytes: ClassVar[int | None] = SNS_MAX_BODY_BYTES

    def verify_request(self, request: Request, settings: Settings) -> None:
        if not require_secrets(settings.ses_topic_arns, "RELAY_SES_TOPIC_ARNS", settings, CHALLENGE):
            return
        message = sns_message(request)
        kind = as_str(message.get("Type"))
        if kind not in _SIGNED_FIELDS:
            raise Unauthorized("unknown SNS message Type", challenge=CHALLENGE)
        if request.headers.get("x-amz-sns-message-type") != kind:
            raise Unauthorized("x-amz-sns-message-type does not match Type", challenge=CHALLENGE)
        if as_str(message.get("TopicArn")) not in settings.ses_topic_arns:
            raise Unauthorized("TopicArn is not in RELAY_SES_TOPIC_ARNS", challenge=CHALLENGE)
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise Unauthorized("unknown SNS SignatureVersion", challenge=CHALLENGE)
        url = sns_url(as_str(message.get("SigningCertURL")) or "", settings, certificate=True)
        if url is None:
            raise Unauthorized("SigningCertURL is not an SNS certificate URL", challenge=CHALLENGE)
        try:
            signature = base64.b64decode(as_str(message.get("Signature")) or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unauthorized("Signature is not base64", challenge=CHALLENGE) from exc
        try:
            CERTIFICATES.public_key(url).verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
        except InvalidSignature as exc:
            raise Unauthorized("wrong SNS signature", challenge=CHALLENGE) from exc

    def replay_token(self, request: Request) -> str | None:
        """What SNS signed, not the MessageId in it: fields are joined with newlines, so one can
        hold the next (`MessageId` "…\\nSubject\\n…" with no Subject signs the same text), and
        only the signed text itself cannot be re-split. SNS retries the very message."""
        try:
            message = as_dict(loads(request.get_data(cache=True)))
        except ValueError:
            return None
        if as_str(message.get("Type")) not in _SIGNED_FIELDS:
            return None
        return hashlib.sha256(string_to_sign(message)).hexdigest()

    def parse_request(self, request: Request, settings: Settings) -> list[Email | Ignored | PendingFetch]:
        message = sns_message(request)
        kind = message.get("Type")
        topic = as_str(message.get("TopicArn")) or ""
        if kind == "SubscriptionConfirmation":
            url = sns_url(as_str(message.get("SubscribeURL")) or "", settings, certificate=False)
            if url is None:
                # Part of the check, as the certificate's host is: a failed check is 401, nothing stored.
                raise Unauthorized("SubscribeURL is not on an SNS host", challenge=CHALLENGE)
            fetch(url, what="SNS subscription confirmation", limit=_CERTIFICATE_LIMIT)
            return [Ignored(f"sns subscription confirmed for {topic[-80:]}")]
        if kind != "Notification":
            return [Ignored(f"sns {str(kind)[:40]}")]
        try:
            notification = as_dict(loads(as_str(message.get("Message")) or ""))
        except ValueError as exc:
            raise MalformedPayload("Message is not JSON") from exc
        return [_ses_notification(notification, settings)]


def _ses_notification(notification: dict[str, Any], settings: Settings) -> Email | Ignored | PendingFetch:
    kind = as_str(notification.get("notificationType")) or as_str(notification.get("eventType")) or ""
    mail = as_dict(notification.get("mail"))
    common = as_dict(mail.get("commonHeaders"))
    subject = as_str(common.get("subject")) or ""
    message_id = normalise_message_id(as_str(common.get("messageId")))
    if kind != "Received":
        return Ignored(f"ses {kind[:40] or 'notification without a type'}", message_id, subject)
    action = as_dict(as_dict(notification.get("receipt")).get("action"))
    content = as_str(notification.get("content"))
    if content is None:
        if action.get("type") == "S3":
            # The message is in the bucket: the worker fetches it (relay.providers.ses_s3).
            bucket, key = as_str(action.get("bucketName")), as_str(action.get("objectKey"))
            if not bucket or not key:
                raise MalformedPayload("an S3 action without bucketName and objectKey")
            receipt = as_dict(notification.get("receipt"))
            spec: dict[str, object] = {
                "bucket": bucket,
                "key": key,
                "recipients": [r for r in map(as_str, as_list(receipt.get("recipients"))) if r],
                "source": as_str(mail.get("source")),
                "verdicts": {
                    name: as_str(as_dict(receipt.get(name)).get("status"))
                    for name in ("spfVerdict", "dkimVerdict", "dmarcVerdict", "spamVerdict", "virusVerdict")
                },  # fmt: skip
            }
            return PendingFetch(STORED_IN_S3, spec, message_id, subject)
        raise MalformedPayload("a Received notification without content")
    if action.get("encoding") == "BASE64":
        try:
            raw = base64.b64decode(content, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise MalformedPayload("content is not base64") from exc
    else:
        raw = content.encode("utf-8", "surrogateescape")
    recipients = [r for r in map(as_str, as_list(as_dict(notification.get("receipt")).get("recipients"))) if r]
    # The RFC Message-ID comes from the MIME itself; SES's `mail.messageId` is its own id.
    email = parse_mime(
        raw, limits=settings.parse_limits, envelope_to=recipients, envelope_from=as_str(mail.get("source"))
    )
    receipt = as_dict(notification.get("receipt"))
    return replace(email, sender_auth=_verdict(email, receipt, settings), content_verdict=content_verdict(receipt))


def email_from_s3(spec: dict[str, Any], settings: Settings) -> Email:
    """The worker's half of an S3 action: the stored message, with the notification's envelope and
    SES's verdicts."""
    raw = read_stored_message(str(spec.get("bucket") or ""), str(spec.get("key") or ""), settings)
    recipients = [str(r) for r in spec.get("recipients") or []]
    email = parse_mime(raw, limits=settings.parse_limits, envelope_to=recipients, envelope_from=spec.get("source"))
    verdicts = {name: {"status": status} for name, status in dict(spec.get("verdicts") or {}).items()}
    return replace(email, sender_auth=_verdict(email, verdicts, settings), content_verdict=content_verdict(verdicts))


def content_verdict(receipt: dict[str, Any]) -> ContentVerdict:
    """SES's spam and virus scans (`FAIL` is found, `PASS` clean; `GRAY` and `PROCESSING_FAILED`
    say nothing)."""
    spam, virus = (as_str(as_dict(receipt.get(name)).get("status")) for name in ("spamVerdict", "virusVerdict"))
    if virus == "FAIL":
        return ContentVerdict(virus=True, source="ses virusVerdict FAIL")
    flag = {"FAIL": True, "PASS": False}.get(spam or "")
    return NO_VERDICT if flag is None else ContentVerdict(spam=flag, source=f"ses spamVerdict {spam}")


def _verdict(email: Email, receipt: dict[str, Any], settings: Settings) -> SenderAuth:
    """SES's receipt verdicts, or what a receiving server the operator trusts wrote into the message."""

    def status(name: str) -> str | None:
        return as_str(as_dict(receipt.get(name)).get("status"))

    complete = TRUNCATED_HEADERS not in email.truncated
    own = from_ses(status("spfVerdict"), status("dkimVerdict"), status("dmarcVerdict"), email.envelope_from,
                   email.sender, email.headers, complete)  # fmt: skip
    trusted = from_trusted_headers(email.headers, email.envelope_from, email.sender, settings.trusted_authserv_ids)
    return strongest(own, trusted)
