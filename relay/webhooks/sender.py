"""One webhook request: Pusher's body and headers (docs/protocol.md §7), signed, posted with a timeout.

The body is built and signed again for every attempt: receivers using the Python SDK reject a `time_ms`
more than 5 minutes old, and retries last up to 5 minutes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import aiohttp
import orjson

from relay.signing import sign_webhook
from relay.webhooks.model import Delivery

# Receivers can drop a retry they already processed by this id.
DELIVERY_ID_HEADER: Final = "X-Relay-Delivery-Id"


def webhook_body(delivery: Delivery, time_ms: int) -> bytes:
    return orjson.dumps({"time_ms": time_ms, "events": list(delivery.events)})


def webhook_headers(
    key: str, secret: str, body: bytes, delivery_id: str, extra: Iterable[tuple[str, str]] = ()
) -> dict[str, str]:
    """Configured extra headers first, so they can never replace the signed ones."""
    headers = dict(extra)
    # Exactly `application/json`: the node SDK's WebHook.isValid() refuses anything else, a charset included.
    headers["Content-Type"] = "application/json"
    # This casing: the PHP SDK reads $headers['X-Pusher-Key'] literally.
    headers["X-Pusher-Key"] = key
    headers["X-Pusher-Signature"] = sign_webhook(secret, body)
    headers[DELIVERY_ID_HEADER] = delivery_id
    return headers


async def post_webhook(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> str | None:
    """POST once. None when the receiver answered 2XX within `timeout`, else what went wrong."""
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except aiohttp.ClientError as error:
        return f"{type(error).__name__}: {error}"
