# syntax=docker/dockerfile:1
# Knock Email Relay: one image for every role; the command picks the role.
#   web (default): docker run -p 8000:8000 --env-file .env IMAGE
#   worker:        docker run --env-file .env IMAGE python -m relay worker
#   sandbox:       docker run -p 8081:8081 IMAGE python -m relay sandbox
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
FROM ${PYTHON_IMAGE} AS dependencies
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/relay
COPY requirements.txt /tmp/requirements.txt
RUN /opt/relay/bin/pip install --no-cache-dir --require-virtualenv -r /tmp/requirements.txt

# The relay package on top (it brings the `relay` command); its dependencies are already there.
FROM dependencies AS build
COPY pyproject.toml README.md /src/
COPY relay /src/relay
RUN /opt/relay/bin/pip install --no-cache-dir --no-deps /src

# Runtime: the virtualenv and two small files; no compilers, no pip cache, no source tree.
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/relay/bin:$PATH \
    PORT=8000 \
    RELAY_WORKER_PORT=8001 \
    RELAY_SANDBOX_HOST=0.0.0.0
RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --home-dir /app --no-create-home --shell /usr/sbin/nologin relay
COPY --from=build /opt/relay /opt/relay
WORKDIR /app
COPY wsgi.py gunicorn.conf.py ./
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000 8001
# Answers for whichever role runs: web on PORT, worker on RELAY_WORKER_PORT, sandbox on 8081.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["relay", "healthcheck"]
CMD ["gunicorn", "wsgi:app"]
