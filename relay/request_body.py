"""What a request keeps of its body, and letting go of it once it is read: a 30 MB body, the
form or JSON parsed from it and the emails built from those need not all be held at once."""

from __future__ import annotations

from flask import Request

#: Requests at least this large let go of their body as soon as it is read, and give freed memory
#: back to the system when they end.
LARGE_BODY_BYTES = 1024 * 1024


#: Bytes of a body kept once the body itself is let go: what the quarantine keeps of it.
KEPT_BYTES = 1024 * 1024


def forget_body(current: Request) -> None:
    """Drop what the request keeps of its body (werkzeug's bytes, Flask's parsed JSON and form,
    the providers' form), so that its memory can be given back at once rather than when the
    server lets go of the request. Its first KEPT_BYTES stay for `body_start`."""
    data = current.__dict__.get("_cached_data")
    if isinstance(data, bytes) and "relay.body_start" not in current.environ:
        current.environ["relay.body_start"] = data[:KEPT_BYTES]
        current.environ["relay.body_size"] = len(data)
    current.environ.pop("relay.form", None)
    current.environ.pop("relay.json", None)
    for cached in ("_cached_data", "_cached_json", "form", "files"):
        current.__dict__.pop(cached, None)


def body_start(current: Request) -> tuple[bytes, int]:
    """The body's first KEPT_BYTES, and the whole body's length, whether or not it was let go."""
    kept: bytes | None = current.environ.get("relay.body_start")
    if kept is not None:
        return kept, current.environ["relay.body_size"]
    data = current.get_data(cache=True)
    return data[:KEPT_BYTES], len(data)
