"""The web application factory."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import random
import time
from collections.abc import Callable

import redis
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import BaseConverter

from relay.config import PRODUCTION, ConfigError, Settings, load_settings, production_warnings
from relay.errors import PayloadTooLarge, RelayError, StoreUnavailable
from relay.logs import request_id
from relay.request_body import LARGE_BODY_BYTES, forget_body
from relay.services import Services
from relay.untrusted_json import UntrustedJSONProvider
from relay.web import current_request

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0), or nothing where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


release_free_memory = _malloc_trim()


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    if settings.trusted_proxies:
        # The client's address, scheme and host as the trusted proxies in front saw them (the
        # console's sign-in limit counts per client address; behind an ingress every request
        # would otherwise come from the ingress).
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json = UntrustedJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    services = Services(settings)
    for warning in production_warnings(settings):
        log.warning("configuration: %s", warning)
    refusals = services.persistence.check_at_start()
    if refusals:
        raise ConfigError(refusals)
    app.extensions["relay"] = services
    app.url_map.converters["delivery_id"] = DeliveryIdConverter

    from relay.console import init_console
    from relay.web.api import api
    from relay.web.ops import ops
    from relay.web.webhooks import webhooks

    app.register_blueprint(ops)
    app.register_blueprint(webhooks)
    app.register_blueprint(api)
    register_error_handlers(app)
    init_console(app, settings)

    @app.before_request
    def start_request() -> None:
        current = current_request()
        # Not a secret: `random` (reseeded in every forked process) spares a system call per request.
        rid = current.headers.get("X-Request-Id", "")[:64] or f"{random.getrandbits(128):032x}"
        g.request_id = rid
        g.started = time.perf_counter()
        request_id.set(rid)
        # Refuse oversized bodies before anything reads them (chunked bodies are cut while read).
        length = current.content_length
        if length is not None and length > settings.max_request_bytes:
            raise PayloadTooLarge(f"request larger than {settings.max_request_bytes} bytes")
        if length is None and current.method in ("POST", "PUT"):
            # Werkzeug stops a length-less (chunked) body at the cap without complaint; one more
            # byte tells a body that fits from one that was cut, which must not be read as complete.
            if len(current.get_data(cache=True)) >= settings.max_request_bytes and current.stream.read(1):
                raise PayloadTooLarge(f"request larger than {settings.max_request_bytes} bytes")

    hsts = settings.environment == PRODUCTION

    @app.teardown_request
    def give_back_memory(_error: BaseException | None) -> None:
        # A large body (and the parser's and sanitiser's copies of it) is freed by now, but the C
        # allocator keeps freed pages for reuse; hand them back so one big email does not leave
        # the process that much larger.
        if (request.content_length or 0) >= LARGE_BODY_BYTES:
            forget_body(request)
            release_free_memory()

    @app.after_request
    def tag_response(response: Response) -> Response:
        headers = response.headers
        headers["X-Request-Id"] = g.get("request_id", "")
        headers["X-Content-Type-Options"] = "nosniff"
        if hsts:
            headers["Strict-Transport-Security"] = "max-age=31536000"
        if log.isEnabledFor(logging.INFO) and request.path.startswith(("/webhooks/", "/v1/", "/healthz", "/readyz")):
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1),
                },
            )
        return response

    return app


class DeliveryIdConverter(BaseConverter):
    """Delivery ids are 32 hex digits, so `/v1/deliveries/replay` is never read as one."""

    regex = "[0-9a-f]{32}"


def register_error_handlers(app: Flask) -> None:
    """Every error the relay answers with, mapped to HTTP in one place."""

    def answer(error: RelayError) -> tuple[Response, int, dict[str, str]]:
        status = error.status
        if status == 503:  # a retry could fix it: in the status the caller retries
            from relay.web.webhooks import retry_status_for

            status = retry_status_for(request.path)
        return jsonify(error.body()), status, error.headers()

    @app.errorhandler(RelayError)
    def relay_error(error: RelayError) -> tuple[Response, int, dict[str, str]]:
        return answer(error)

    @app.errorhandler(redis.RedisError)
    def store_unavailable(error: redis.RedisError) -> tuple[Response, int, dict[str, str]]:
        log.warning("redis unavailable", extra={"error": type(error).__name__})
        return answer(StoreUnavailable())

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> tuple[Response, int, dict[str, str]]:
        return answer(PayloadTooLarge())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int, list[tuple[str, str]]]:
        status = error.code or 400
        # Keep what werkzeug says the status needs (e.g. `Allow` on a 405), in a JSON body.
        kept = [(k, v) for k, v in error.get_headers() if k.lower() not in ("content-type", "content-length")]
        return jsonify({"error": (error.description or error.name)}), status, kept

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        log.exception("unexpected error")
        return jsonify({"error": "internal error"}), 500
