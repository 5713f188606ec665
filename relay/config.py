"""Settings from the environment, validated once, one line per problem."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay.message import ParseLimits
from relay.sender_auth import ENFORCE, MODES
from relay.spam import IGNORE, SPAM_POLICIES

log = logging.getLogger(__name__)

PRODUCTION = "production"
DEVELOPMENT = "development"

# Local development talks to the sandbox (`python -m relay sandbox`) with its
# default key, so a fresh checkout runs without any Knock credentials.
DEV_KNOCK_BASE_URL = "http://localhost:8081"
DEV_KNOCK_API_KEY = "sandbox-key"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9-]+\.)+[a-z0-9-]+$")
_ORIGIN = re.compile(r"^https?://(\*\.)?[a-z0-9.-]+(:\d{1,5})?$")


#: The longest setting read from a file (a list of tokens fits many times over).
SETTING_FILE_MAX_CHARS = 65536


class ConfigError(Exception):
    """The environment does not describe a runnable relay."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    environment: str = DEVELOPMENT
    redis_url: str = "redis://localhost:6379/0"
    #: Sentinel: (host, port) of each sentinel and the name of the primary they watch.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    redis_sentinel_password: str | None = None
    redis_sentinel_tls: bool = False
    knock_base_url: str = DEV_KNOCK_BASE_URL
    knock_api_key: str = DEV_KNOCK_API_KEY
    knock_default_agent_username: str | None = None
    api_token: str | None = None
    webhook_basic_auth: tuple[tuple[str, str], ...] = ()
    #: Mailgun's HTTP webhook signing keys (a list, so that a key can be rotated).
    mailgun_webhook_signing_keys: tuple[str, ...] = ()
    mailgun_api_key: str | None = None
    mailgun_storage_origins: tuple[str, ...] = ("https://*.mailgun.net",)
    mailbox_domains: frozenset[str] = frozenset()
    automated_senders: tuple[str, ...] = ()
    reply_tag_prefix: str = "prospect-"
    #: Reply tags: the secrets that sign them (the first signs new ones, each verifies), whether an
    #: unsigned tag still routes, and the mailbox reply addresses are made from by default.
    reply_tag_secrets: tuple[str, ...] = ()
    accept_unsigned_reply_tags: bool = False
    reply_mailbox: str | None = None
    knock_logged_domains: frozenset[str] = frozenset()
    learn_thread_addresses: bool = False
    spam_policy: str = "ignore"
    spam_score_threshold: float = 5.0
    dedup_ttl_seconds: int = 2592000
    record_ttl_seconds: int = 2592000
    sent_body_ttl_seconds: int = 86400
    retry_min_backoff_seconds: float = 15.0
    retry_max_backoff_seconds: float = 3600.0
    retry_max_age_seconds: float = 259200.0
    knock_timeout_seconds: float = 10.0
    knock_rate_limit: int = 0
    #: The Knock circuit: calls failing in a row that open it, and seconds between probes while open.
    knock_circuit_failures: int = 5
    knock_probe_seconds: float = 30.0
    max_request_bytes: int = 31457280
    #: Replicas that must hold an email's records before its webhook is answered (Redis WAIT).
    redis_min_replicas: int = 0
    redis_replica_timeout_ms: int = 500
    signature_max_age_seconds: int = 86400
    ignore_auto_replies: bool = True
    insecure_webhooks: bool = False
    worker_heartbeat_timeout_seconds: float = 60.0
    worker_port: int = 8001
    requeue_after_seconds: float = 300.0
    require_durable_redis: bool = False
    max_addresses: int = 1000
    max_mime_parts: int = 500
    max_mime_depth: int = 20
    max_html_depth: int = 256
    max_html_chars: int = 1048576
    sender_auth: str = "enforce"
    trusted_authserv_ids: tuple[str, ...] = ()
    # Providers besides Mailgun: webhook secrets (lists, for rotation), API keys for fetching
    # content in the worker, and API origins (overridable for a private endpoint or a test stub).
    public_url: str | None = None
    sparkpost_webhook_tokens: tuple[str, ...] = ()
    mailersend_signing_secrets: tuple[str, ...] = ()
    mandrill_webhook_keys: tuple[str, ...] = ()
    mandrill_api_key: str | None = None
    mandrill_api_url: str = "https://mandrillapp.com/api/1.0"
    brevo_webhook_tokens: tuple[str, ...] = ()
    brevo_api_key: str | None = None
    brevo_api_url: str = "https://api.brevo.com"
    resend_webhook_secrets: tuple[str, ...] = ()
    resend_api_key: str | None = None
    resend_api_url: str = "https://api.resend.com"
    postmark_server_token: str | None = None
    postmark_api_url: str = "https://api.postmarkapp.com"
    ses_topic_arns: tuple[str, ...] = ()
    #: Buckets the worker may read SES's stored messages from, and an S3 endpoint other than AWS's.
    ses_s3_buckets: tuple[str, ...] = ()
    ses_s3_endpoint_url: str | None = None
    sns_certificate_origins: tuple[str, ...] = ()
    #: Operator console: named accounts (`name`, password hash) and the key that signs its cookies.
    console_users: tuple[tuple[str, str], ...] = ()
    console_secret_key: str | None = None
    #: Proxies in front of the web process whose X-Forwarded-For/-Proto/-Host are believed.
    trusted_proxies: int = 0

    @property
    def parse_limits(self) -> ParseLimits:
        return ParseLimits(
            addresses=self.max_addresses,
            parts=self.max_mime_parts,
            depth=self.max_mime_depth,
            html_depth=self.max_html_depth,
            html_chars=self.max_html_chars,
        )


class _Reader:
    """Reads variables one by one, collecting every problem before failing."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        """The variable's value; when it is unset, the contents of the file `<name>_FILE` names, else
        of the file `<name>` in the folder RELAY_SECRETS_DIR names (a mounted Secret), so that no
        secret need be an environment variable."""
        value = self.env.get(name, "").strip()
        if value:
            return value
        path, origin = self.env.get(f"{name}_FILE", "").strip(), f"{name}_FILE"
        folder = self.env.get("RELAY_SECRETS_DIR", "").strip()
        if not path and folder and name != "RELAY_SECRETS_DIR" and os.path.isfile(os.path.join(folder, name)):
            path, origin = os.path.join(folder, name), f"{name} (from RELAY_SECRETS_DIR)"
        if not path:
            return None
        if os.path.exists(path) and not os.path.isfile(path):  # a folder, a FIFO (it would block), a device
            self.problems.append(f"{origin}: {path!r} is not a file")
            return None
        try:
            with open(path, encoding="utf-8") as file:
                contents = file.read(SETTING_FILE_MAX_CHARS + 1)
        except (OSError, UnicodeDecodeError) as error:
            self.problems.append(f"{origin}: cannot read {path!r} ({type(error).__name__})")
            return None
        if len(contents) > SETTING_FILE_MAX_CHARS:
            self.problems.append(f"{origin}: {path!r} is longer than {SETTING_FILE_MAX_CHARS} characters")
            return None
        return contents.strip() or None

    def number(
        self, name: str, default: float, *, minimum: float = 0, maximum: float | None = None, integer: bool = False
    ) -> Any:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            self.problems.append(f"{name}: must be {kind}, got {raw!r}")
            return default
        if value < minimum:
            self.problems.append(f"{name}: must be at least {minimum}, got {raw!r}")
            return default
        if maximum is not None and value > maximum:
            self.problems.append(f"{name}: must be at most {maximum}, got {raw!r}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.env[name] if name in self.env else self.text(name)  # set but empty means false
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.problems.append(f"{name}: must be true or false, got {raw!r}")
        return default

    def items(self, name: str) -> list[str]:
        raw = self.text(name) or ""
        return [part.strip() for part in raw.split(",") if part.strip()]

    def url(self, name: str, value: str, schemes: tuple[str, ...]) -> str:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            shown = value.replace(parts.netloc, parts.netloc.rpartition("@")[2]) if "@" in parts.netloc else value
            self.problems.append(f"{name}: must be a {'/'.join(schemes)} URL, got {shown!r} (credentials not shown)")
        return value


def _sentinels(reader: _Reader) -> tuple[tuple[str, int], ...]:
    """REDIS_SENTINELS: `host:port,host:port,…` (port 26379 when left out)."""
    sentinels = []
    for item in reader.items("REDIS_SENTINELS"):
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "26379"
        host = host.strip("[]")  # [::1]:26379
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            reader.problems.append(f"REDIS_SENTINELS: each entry must be host:port, got {item!r}")
            continue
        sentinels.append((host, int(port)))
    if sentinels and not reader.text("REDIS_SENTINEL_MASTER"):
        reader.problems.append("REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS (the name the sentinels monitor)")
    elif reader.text("REDIS_SENTINEL_MASTER") and not sentinels:
        reader.problems.append("REDIS_SENTINELS: required with REDIS_SENTINEL_MASTER")
    return tuple(sentinels)


def _basic_auth_pairs(reader: _Reader) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in reader.items("RELAY_WEBHOOK_BASIC_AUTH"):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            reader.problems.append("RELAY_WEBHOOK_BASIC_AUTH: each entry must be user:pass (an entry is malformed)")
            continue
        pairs.append((user, password))
    return tuple(pairs)


def _mailbox_domains(reader: _Reader) -> frozenset[str]:
    entries = set()
    for item in reader.items("RELAY_MAILBOX_DOMAINS"):
        lowered = item.lower()
        domain = lowered.rpartition("@")[2]
        if not _DOMAIN.match(domain):
            reader.problems.append(f"RELAY_MAILBOX_DOMAINS: {item!r} is neither a domain nor an address")
            continue
        entries.add(lowered)
    return frozenset(entries)


def _automated_senders(reader: _Reader) -> tuple[str, ...]:
    patterns = []
    for item in reader.items("RELAY_AUTOMATED_SENDERS"):
        lowered = item.lower()
        if "@" not in lowered:
            reader.problems.append(f"RELAY_AUTOMATED_SENDERS: {item!r} must be an address or *@domain")
            continue
        patterns.append(lowered)
    return tuple(patterns)


def _origins(reader: _Reader, name: str, default: tuple[str, ...] = (), *, https_only: bool = False) -> tuple[str, ...]:
    """A comma list of origins the relay may fetch from: `scheme://host[:port]`, host may start with `*.`."""
    origins = []
    for item in reader.items(name) or default:
        lowered = item.lower().rstrip("/")
        if not _ORIGIN.match(lowered) or (https_only and not lowered.startswith("https:")):
            scheme = "https" if https_only else "scheme"
            reader.problems.append(f"{name}: {item!r} must be {scheme}://host[:port], host may start with *.")
            continue
        origins.append(lowered)
    return tuple(origins)


def is_loopback_host(host: str | None) -> bool:
    host = (host or "").lower()
    return host == "localhost" or host == "::1" or bool(re.fullmatch(r"127(\.\d{1,3}){3}", host))


def _api_url(reader: _Reader, name: str, default: str, *, https_only: bool) -> str:
    """A provider API base URL: http(s), no userinfo, no query; ids are appended as path segments.
    With `https_only` (production) plain http is allowed on the loopback only: the worker sends
    the provider's API key with every call."""
    value = (reader.text(name) or default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc or parts.query:
        reader.problems.append(f"{name}: must be an http(s) URL without credentials or query, got {value!r}")
    elif https_only and parts.scheme != "https" and not is_loopback_host(parts.hostname):
        reader.problems.append(f"{name}: must be an https URL in production (http only on the loopback), got {value!r}")
    return value


def _resend_secrets(reader: _Reader) -> tuple[str, ...]:
    secrets = reader.items("RESEND_WEBHOOK_SECRETS")
    for secret in secrets:
        if not re.fullmatch(r"whsec_[A-Za-z0-9+/]+={0,2}", secret):
            reader.problems.append("RESEND_WEBHOOK_SECRETS: each entry must be a signing secret, whsec_<base64>")
            break
    return tuple(secrets)


def _console_users(reader: _Reader) -> tuple[tuple[str, str], ...]:
    """`name:hash` entries; hashes are what `relay console hash-password` prints (they hold colons too)."""
    users = []
    for item in reader.items("RELAY_CONSOLE_USERS"):
        name, sep, password_hash = item.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", name) or "$" not in password_hash:
            reader.problems.append(
                "RELAY_CONSOLE_USERS: each entry must be name:hash, the hash from `relay console hash-password`"
            )
            continue
        if name.lower() == "api-token":
            # The name sign-ins with RELAY_API_TOKEN are recorded under: an account of that name
            # would make the audit trail ambiguous.
            reader.problems.append("RELAY_CONSOLE_USERS: the name api-token is kept for RELAY_API_TOKEN")
            continue
        users.append((name, password_hash))
    return tuple(users)


def _reply_tag_secrets(reader: _Reader) -> tuple[str, ...]:
    secrets = tuple(reader.items("RELAY_REPLY_TAG_SECRET"))
    if any(len(secret) < 16 for secret in secrets):
        reader.problems.append("RELAY_REPLY_TAG_SECRET: each secret must have at least 16 characters")
    return secrets


def _reply_mailbox(reader: _Reader) -> str | None:
    mailbox = reader.text("RELAY_REPLY_MAILBOX")
    if mailbox is None:
        return None
    local, at, domain = mailbox.rpartition("@")
    if not (at and local and domain) or "+" in local or any(c.isspace() for c in mailbox):
        reader.problems.append(f"RELAY_REPLY_MAILBOX: {mailbox!r} is not a mailbox address without a + tag")
    return mailbox.lower()


def _spam_policy(reader: _Reader) -> str:
    policy = (reader.text("RELAY_SPAM_POLICY") or IGNORE).lower()
    if policy not in SPAM_POLICIES:
        reader.problems.append(f"RELAY_SPAM_POLICY: must be one of {', '.join(SPAM_POLICIES)}, got {policy!r}")
    return policy


def _sender_auth_mode(reader: _Reader) -> str:
    mode = (reader.text("RELAY_SENDER_AUTH") or ENFORCE).lower()
    if mode not in MODES:
        reader.problems.append(f"RELAY_SENDER_AUTH: must be one of {', '.join(MODES)}, got {mode!r}")
        return ENFORCE
    return mode


def load_settings(env: Mapping[str, str] | None = None, *, needs_knock: bool = True) -> Settings:
    """Build Settings from the environment or raise ConfigError listing every problem.

    `needs_knock=False` is for operator commands that only read and write Redis: they run
    beside a deployment without its Knock credentials.
    """
    env = os.environ if env is None else env
    read = _Reader(env)

    secrets_dir = read.text("RELAY_SECRETS_DIR")
    if secrets_dir and not os.path.isdir(secrets_dir):
        read.problems.append(f"RELAY_SECRETS_DIR: {secrets_dir!r} is not a folder")
    environment = (read.text("RELAY_ENV") or PRODUCTION).lower()
    if environment not in (PRODUCTION, DEVELOPMENT):
        read.problems.append(f"RELAY_ENV: must be {PRODUCTION} or {DEVELOPMENT}, got {environment!r}")
    local = environment == DEVELOPMENT

    redis_url = read.url(
        "REDIS_URL",
        read.text("REDIS_URL") or "redis://localhost:6379/0",
        ("redis", "rediss", "unix"),
    )
    knock_base_url = read.text("KNOCK_BASE_URL") or (DEV_KNOCK_BASE_URL if local or not needs_knock else None)
    if knock_base_url is None:
        read.problems.append("KNOCK_BASE_URL: required (set RELAY_ENV=development to use the local sandbox)")
        knock_base_url = ""
    else:
        knock_base_url = read.url("KNOCK_BASE_URL", knock_base_url.rstrip("/"), ("http", "https"))
    knock_api_key = read.text("KNOCK_API_KEY") or (DEV_KNOCK_API_KEY if local or not needs_knock else None)
    if knock_api_key is None:
        read.problems.append("KNOCK_API_KEY: required (set RELAY_ENV=development to use the local sandbox)")
        knock_api_key = ""

    public_url = read.text("RELAY_PUBLIC_URL")
    min_backoff = read.number("RELAY_RETRY_MIN_BACKOFF_SECONDS", 15.0, minimum=0.01)
    max_backoff = read.number("RELAY_RETRY_MAX_BACKOFF_SECONDS", 3600.0, minimum=0.01)
    if max_backoff < min_backoff:
        read.problems.append("RELAY_RETRY_MAX_BACKOFF_SECONDS: must not be below RELAY_RETRY_MIN_BACKOFF_SECONDS")

    settings = Settings(
        environment=environment,
        redis_url=redis_url,
        redis_sentinels=_sentinels(read),
        redis_sentinel_master=read.text("REDIS_SENTINEL_MASTER"),
        redis_sentinel_password=read.text("REDIS_SENTINEL_PASSWORD"),
        redis_sentinel_tls=read.flag("REDIS_SENTINEL_TLS", False),
        knock_base_url=knock_base_url,
        knock_api_key=knock_api_key,
        knock_default_agent_username=read.text("KNOCK_DEFAULT_AGENT_USERNAME"),
        api_token=read.text("RELAY_API_TOKEN"),
        webhook_basic_auth=_basic_auth_pairs(read),
        mailgun_webhook_signing_keys=tuple(read.items("MAILGUN_WEBHOOK_SIGNING_KEY")),
        mailgun_api_key=read.text("MAILGUN_API_KEY"),
        mailgun_storage_origins=_origins(read, "RELAY_MAILGUN_STORAGE_ORIGINS", ("https://*.mailgun.net",)),
        mailbox_domains=_mailbox_domains(read),
        automated_senders=_automated_senders(read),
        reply_tag_prefix=read.text("RELAY_REPLY_TAG_PREFIX") or "prospect-",
        reply_tag_secrets=_reply_tag_secrets(read),
        accept_unsigned_reply_tags=read.flag("RELAY_ACCEPT_UNSIGNED_REPLY_TAGS", False),
        reply_mailbox=_reply_mailbox(read),
        learn_thread_addresses=read.flag("RELAY_LEARN_THREAD_ADDRESSES", False),
        spam_policy=_spam_policy(read),
        spam_score_threshold=read.number("RELAY_SPAM_SCORE_THRESHOLD", 5.0, minimum=-1000, maximum=1000),
        knock_logged_domains=frozenset(item.lower().lstrip("@") for item in read.items("RELAY_KNOCK_LOGGED_DOMAINS")),
        dedup_ttl_seconds=read.number("RELAY_DEDUP_TTL_SECONDS", 2592000, minimum=1, integer=True),
        record_ttl_seconds=read.number("RELAY_RECORD_TTL_SECONDS", 2592000, minimum=1, integer=True),
        sent_body_ttl_seconds=read.number("RELAY_SENT_BODY_TTL_SECONDS", 86400, integer=True),
        retry_min_backoff_seconds=min_backoff,
        retry_max_backoff_seconds=max_backoff,
        retry_max_age_seconds=read.number("RELAY_RETRY_MAX_AGE_SECONDS", 259200.0, minimum=1),
        knock_timeout_seconds=read.number("RELAY_KNOCK_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        knock_rate_limit=read.number("RELAY_KNOCK_RATE_LIMIT", 0, integer=True),
        knock_circuit_failures=read.number("RELAY_KNOCK_CIRCUIT_FAILURES", 5, minimum=1, integer=True),
        knock_probe_seconds=read.number("RELAY_KNOCK_PROBE_SECONDS", 30.0, minimum=0.1),
        max_request_bytes=read.number("RELAY_MAX_REQUEST_BYTES", 31457280, minimum=1024, integer=True),
        redis_min_replicas=read.number("RELAY_REDIS_MIN_REPLICAS", 0, integer=True),
        redis_replica_timeout_ms=read.number("RELAY_REDIS_REPLICA_TIMEOUT_MS", 500, minimum=1, integer=True),
        signature_max_age_seconds=read.number("RELAY_SIGNATURE_MAX_AGE_SECONDS", 86400, minimum=1, integer=True),
        ignore_auto_replies=read.flag("RELAY_IGNORE_AUTO_REPLIES", True),
        insecure_webhooks=read.flag("RELAY_INSECURE_WEBHOOKS", False),
        worker_heartbeat_timeout_seconds=read.number("RELAY_WORKER_HEARTBEAT_TIMEOUT_SECONDS", 60.0, minimum=1),
        worker_port=read.number("RELAY_WORKER_PORT", 8001, maximum=65535, integer=True),
        requeue_after_seconds=read.number("RELAY_REQUEUE_AFTER_SECONDS", 300.0, minimum=1),
        require_durable_redis=read.flag("RELAY_REQUIRE_DURABLE_REDIS", False),
        max_addresses=read.number("RELAY_MAX_ADDRESSES", 1000, minimum=1, integer=True),
        max_mime_parts=read.number("RELAY_MAX_MIME_PARTS", 500, minimum=1, integer=True),
        max_mime_depth=read.number("RELAY_MAX_MIME_DEPTH", 20, minimum=1, integer=True),
        max_html_depth=read.number("RELAY_MAX_HTML_DEPTH", 256, minimum=8, maximum=512, integer=True),
        max_html_chars=read.number("RELAY_MAX_HTML_CHARS", 1048576, minimum=1024, maximum=8388608, integer=True),
        sender_auth=_sender_auth_mode(read),
        trusted_authserv_ids=tuple(item.lower() for item in read.items("RELAY_TRUSTED_AUTHSERV_IDS")),
        public_url=read.url("RELAY_PUBLIC_URL", public_url, ("http", "https")).rstrip("/") if public_url else None,
        sparkpost_webhook_tokens=tuple(read.items("RELAY_SPARKPOST_WEBHOOK_TOKENS")),
        mailersend_signing_secrets=tuple(read.items("RELAY_MAILERSEND_SIGNING_SECRETS")),
        mandrill_webhook_keys=tuple(read.items("RELAY_MANDRILL_WEBHOOK_KEYS")),
        mandrill_api_key=read.text("MANDRILL_API_KEY"),
        mandrill_api_url=_api_url(
            read, "RELAY_MANDRILL_API_URL", "https://mandrillapp.com/api/1.0", https_only=not local
        ),
        brevo_webhook_tokens=tuple(read.items("RELAY_BREVO_WEBHOOK_TOKENS")),
        brevo_api_key=read.text("BREVO_API_KEY"),
        brevo_api_url=_api_url(read, "RELAY_BREVO_API_URL", "https://api.brevo.com", https_only=not local),
        resend_webhook_secrets=_resend_secrets(read),
        resend_api_key=read.text("RESEND_API_KEY"),
        resend_api_url=_api_url(read, "RELAY_RESEND_API_URL", "https://api.resend.com", https_only=not local),
        postmark_server_token=read.text("POSTMARK_SERVER_TOKEN"),
        postmark_api_url=_api_url(read, "RELAY_POSTMARK_API_URL", "https://api.postmarkapp.com", https_only=not local),
        ses_topic_arns=tuple(read.items("RELAY_SES_TOPIC_ARNS")),
        ses_s3_buckets=tuple(read.items("RELAY_SES_S3_BUCKETS")),
        ses_s3_endpoint_url=_api_url(read, "RELAY_SES_S3_ENDPOINT_URL", "", https_only=not local)
        if read.text("RELAY_SES_S3_ENDPOINT_URL")
        else None,
        sns_certificate_origins=_origins(read, "RELAY_SNS_CERTIFICATE_ORIGINS", https_only=True),
        console_users=_console_users(read),
        console_secret_key=read.text("RELAY_CONSOLE_SECRET_KEY"),
        trusted_proxies=read.number("RELAY_TRUSTED_PROXIES", 0, maximum=10, integer=True),
    )
    # Process settings read by gunicorn.conf.py and the worker: checked here so that a bad value
    # is one line of `config check` and of start-up, not a traceback.
    read.number("PORT", 8000, minimum=1, maximum=65535, integer=True)
    read.number("WEB_CONCURRENCY", 2, minimum=1, integer=True)
    read.number("RELAY_WEB_THREADS", 4, minimum=1, integer=True)
    read.number("RELAY_WORKER_THREADS", 4, minimum=1, integer=True)
    if read.problems:
        raise ConfigError(read.problems)
    if settings.insecure_webhooks:
        log.warning("RELAY_INSECURE_WEBHOOKS is on: webhooks without configured authentication accept anyone")
    if settings.reply_tag_secrets and settings.accept_unsigned_reply_tags:
        log.warning("RELAY_ACCEPT_UNSIGNED_REPLY_TAGS is on: an unsigned reply tag still routes to its prospect")
    return settings


def whole_number_or(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    """A positive whole number from the environment, else `default`: for gunicorn's settings and the
    worker's options, read before the settings check, which then reports a bad value in its one line."""
    value = _Reader(os.environ if env is None else env).text(name) or ""  # a mounted file counts too
    return int(value) if value.isdigit() and int(value) > 0 else default


def production_warnings(settings: Settings, *, role: str = "web") -> list[str]:
    """Settings that are valid but leave a production relay unable to do its job. The worker
    (`role="worker"`) serves no webhook and no API: their credentials are not its concern."""
    if settings.environment != PRODUCTION:
        return []
    warnings = []
    if settings.redis_sentinels and not settings.redis_min_replicas:
        warnings.append(
            "RELAY_REDIS_MIN_REPLICAS: 0 with Sentinel, so a failover can lose emails already answered 200 (use 1)"
        )
    if role == "worker":
        return warnings
    if not settings.api_token:
        warnings.append("RELAY_API_TOKEN: not set, so the /v1 API answers 404")
    credentials = (
        settings.webhook_basic_auth,
        settings.mailgun_webhook_signing_keys,
        settings.sparkpost_webhook_tokens,
        settings.mailersend_signing_secrets,
        settings.mandrill_webhook_keys,
        settings.brevo_webhook_tokens,
        settings.resend_webhook_secrets,
        settings.ses_topic_arns,
    )
    if not any(credentials) and not settings.insecure_webhooks:
        warnings.append(
            "webhook credentials: none is set (RELAY_WEBHOOK_BASIC_AUTH, MAILGUN_WEBHOOK_SIGNING_KEY, …), "
            "so every webhook answers 401"
        )
    if not settings.mailbox_domains:
        warnings.append("RELAY_MAILBOX_DOMAINS: not set, so no sender is on the leasing side (all mail is inbound)")
    return warnings
