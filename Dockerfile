# relay: a Pusher Channels protocol 7 WebSocket server (drop-in for Laravel Reverb and soketi).
#   docker build -t relay .
#   docker run -p 8080:8080 -e RELAY_APP_ID=1001 -e RELAY_APP_KEY=... -e RELAY_APP_SECRET=... \
#       --stop-timeout 30 relay
# or with a config file:
#   docker run -p 8080:8080 -v "$PWD/relay.toml:/etc/relay.toml:ro" --stop-timeout 30 relay \
#       relay serve --config /etc/relay.toml
# Without any app configured it serves an in-memory dev app and prints its credentials.
#
# Configuration is by environment: RELAY_* (RELAY_PORT, RELAY_REDIS_URL, RELAY_APP_ID, ...) or
# Reverb's REVERB_* names; see README.md ("Configuration") and docs/deploy.md.
#
# Stopping: relay drains on SIGTERM (readiness turns 503, then connections are closed over the
# drain window, webhooks flushed). Give it longer than that before the engine sends SIGKILL:
# `docker run --stop-timeout 30`, `docker stop -t 30`, or compose's `stop_grace_period: 30s`.
# Docker's default of 10 s is not enough.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip install .
# A system user with no home and no shell: relay needs no privileges and writes no files.
RUN useradd --system --no-create-home --shell /usr/sbin/nologin relay

USER relay
EXPOSE 8080
STOPSIGNAL SIGTERM

# The image has no curl: ask GET /up with Python itself. It follows RELAY_PORT (then Reverb's
# REVERB_SERVER_PORT) as relay does; urlopen raises on anything but a 2xx answer, so a refused
# connection, a timeout or an error status all exit non-zero.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RELAY_PORT') or os.environ.get('REVERB_SERVER_PORT') or '8080'; urllib.request.urlopen(f'http://127.0.0.1:{port}/up', timeout=2)"]

CMD ["relay", "serve"]
