"""Publish an event to a running relay with the official `pusher` SDK (pip install pusher).

    .venv/bin/python examples/publish.py [news] [news.published] ['{"title": "hello"}']
"""

from __future__ import annotations

import json
import os
import sys

import pusher

client = pusher.Pusher(
    app_id=os.environ.get("RELAY_APP_ID", "1001"),
    key=os.environ.get("RELAY_APP_KEY", "relay-key"),
    secret=os.environ.get("RELAY_APP_SECRET", "relay-secret"),
    host=os.environ.get("RELAY_HOST", "127.0.0.1"),
    port=int(os.environ.get("RELAY_PORT", "8080")),
    ssl=False,
)
arguments = sys.argv[1:]
channel = arguments[0] if arguments else "news"
event = arguments[1] if len(arguments) > 1 else "news.published"
data = json.loads(arguments[2]) if len(arguments) > 2 else {"title": "hello"}
print(client.trigger([channel], event, data))
