"""Dead-letter endpoints: read and replay webhooks whose retries ran out. Signed like the rest of the HTTP API.

    GET  <path>/apps/<app_id>/webhooks/dead_letters[?limit=N]   -> {"dead_letters": [...]}, oldest first
    POST <path>/apps/<app_id>/webhooks/dead_letters/replay      body {} (all) or {"ids": [...]} -> {"replayed": n}

Replayed deliveries keep their delivery id (X-Relay-Delivery-Id), so a receiver that did process one before
answering an error can recognise it.
"""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web

from relay.http_api import API_ROUTE, HttpApi, http_error, json_response
from relay.webhooks import WebhookDispatcher

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000


class WebhookApi:
    def __init__(self, api: HttpApi, webhooks: WebhookDispatcher, path_prefix: str = "") -> None:
        self._api = api
        self._webhooks = webhooks
        self._prefix = path_prefix

    def add_routes(self, router: web.UrlDispatcher) -> None:
        prefix = self._prefix
        router.add_get(
            f"{prefix}/apps/{{app_id}}/webhooks/dead_letters", self.dead_letters, name=f"{API_ROUTE}dead_letters"
        )
        router.add_post(
            f"{prefix}/apps/{{app_id}}/webhooks/dead_letters/replay",
            self.replay,
            name=f"{API_ROUTE}dead_letters_replay",
        )

    async def dead_letters(self, request: web.Request) -> web.Response:
        signed = await self._api.authenticate(request)
        raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            http_error(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
        letters = await self._webhooks.dead_letters(signed.app.id, int(raw_limit))
        return json_response({"dead_letters": [letter.as_json() for letter in letters]})

    async def replay(self, request: web.Request) -> web.Response:
        signed = await self._api.authenticate(request)
        ids: frozenset[str] | None = None
        if signed.body.strip():
            try:
                payload = orjson.loads(signed.body)
            except orjson.JSONDecodeError:
                http_error(400, "Request body is not valid JSON")
            if not isinstance(payload, dict):
                http_error(400, "Request body must be a JSON object")
            raw_ids = payload.get("ids")
            if raw_ids is not None:
                if not isinstance(raw_ids, list) or not all(isinstance(item, str) for item in raw_ids):
                    http_error(400, "ids must be a list of delivery id strings")
                ids = frozenset(raw_ids)
        replayed = await self._webhooks.replay(signed.app.id, ids)
        return json_response({"replayed": replayed})
