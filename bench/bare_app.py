"""The ceiling: a bare Flask app that reads the body and answers, under the relay's gunicorn settings."""

from __future__ import annotations

from flask import Flask, request

app = Flask(__name__)


@app.post("/<path:anything>")
def read_body(anything: str) -> tuple[str, int]:
    request.get_data()
    return '{"status": "ok"}', 200
