# relay: a Pusher Channels protocol 7 WebSocket server (drop-in for Laravel Reverb and soketi).
#   docker build -t relay .
#   docker run -p 8080:8080 -v "$PWD/relay.toml:/etc/relay.toml:ro" relay relay serve --config /etc/relay.toml
# Without --config it serves an in-memory dev app and prints its credentials.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip install . \
    && useradd --system --no-create-home --shell /usr/sbin/nologin relay

USER relay
EXPOSE 8080
CMD ["relay", "serve"]
