"""WSGI entry point: `gunicorn wsgi:app` (settings in gunicorn.conf.py)."""

import os
import sys

from relay.app import create_app
from relay.config import ConfigError
from relay.logs import configure_logging

configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
try:
    app = create_app()
except ConfigError as error:
    for problem in error.problems:
        print(f"configuration error: {problem}", file=sys.stderr)
    sys.exit(1)
