"""gunicorn settings; PORT, WEB_CONCURRENCY, RELAY_WEB_THREADS and LOG_LEVEL are honoured."""

import glob
import os
import tempfile

# Metrics of every gunicorn process go to files in this folder (prometheus_client's multiprocess
# mode); it must be named before the app, and so prometheus_client, is imported. Files of an
# earlier run are removed: their counts belong to processes that no longer exist.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="relay-metrics-"))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
    os.remove(stale)

from relay.config import whole_number_or  # noqa: E402
from relay.logs import gunicorn_logconfig  # noqa: E402

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{whole_number_or('PORT', 8000)}"
workers = whole_number_or("WEB_CONCURRENCY", 2)
threads = whole_number_or("RELAY_WEB_THREADS", 4)
worker_class = "gthread"
# Webhooks answer after Redis, never after Knock; a slow client upload is the long pole.
# Behind a buffering proxy (the chart's ingress) bodies arrive whole and fast.
timeout = 60
graceful_timeout = 30
# Longer than the upstream keep-alive of the ingress controller (ingress-nginx: 60 s): the proxy
# must be the side that closes an idle connection, or a request it sends as gunicorn closes is a 502.
keepalive = 75
# The app logs one JSON line per request (with its duration); gunicorn's own lines are JSON too.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
logconfig_dict = gunicorn_logconfig(loglevel)
# gunicorn's access line (written because logconfig_dict is set): the path without its query
# string and no Referer, since queries carry addresses (`/v1/prospects?email=…`, console searches).
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s'  # noqa: Q000
# Settings are read and checked once in the master, so a bad setting fails start-up with its lines.
preload_app = True
# The worker heartbeat file lives in memory, which also works on a read-only root filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# No runtime control socket: it would be written under $HOME (absent on a read-only root
# filesystem) and shared by every gunicorn of the same user; scaling is the orchestrator's job.
control_socket_disable = True


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A gunicorn process that exits leaves its live gauges behind; its counters stay counted."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
