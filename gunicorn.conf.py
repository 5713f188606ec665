"""gunicorn settings; PORT and WEB_CONCURRENCY are honoured."""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("RELAY_WEB_THREADS", "4"))
worker_class = "gthread"
# Webhooks answer after Redis, never after Knock; a slow client upload is the long pole.
timeout = 60
graceful_timeout = 30
keepalive = 5
accesslog = None  # the app logs one JSON line per request
errorlog = "-"
# Settings are read and checked once in the master, so a bad setting fails start-up with its lines.
preload_app = True
