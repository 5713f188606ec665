"""JSON from outside the relay: a parse that fails as ValueError whatever the input.

`json.loads` raises RecursionError on deeply nested input (a hundred thousand `[`), which is
not a ValueError and would escape every `except ValueError` meant for bad input.
"""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider


def loads(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


class UntrustedJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with request bodies parsed by `loads` above (so get_json(silent=True) holds)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc
