"""HMAC signatures the generator needs: HTTP API requests (docs/protocol.md §6.3) and channel auth (5.1).

Written here rather than imported from relay so the bench can target any server, even when relay
is not installed or is broken.
"""

import hashlib
import hmac
import time


def sign_query(method: str, path: str, body: bytes, key: str, secret: str, timestamp: int = 0) -> str:
    """Return the signed query string (auth_key, auth_timestamp, auth_version, body_md5, auth_signature)."""
    ts = timestamp or int(time.time())
    params = f"auth_key={key}&auth_timestamp={ts}&auth_version=1.0"
    if body:
        params += "&body_md5=" + hashlib.md5(body).hexdigest()
    # Keys are already lower case and in sorted order, so this is the canonical string to sign.
    to_sign = f"{method}\n{path}\n{params}"
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return params + "&auth_signature=" + signature


def channel_auth(key: str, secret: str, socket_id: str, channel: str, channel_data: str = "") -> str:
    """`key:hex(HMAC-SHA256(secret, socket_id:channel[:channel_data]))` as a private/presence subscribe needs."""
    to_sign = f"{socket_id}:{channel}:{channel_data}" if channel_data else f"{socket_id}:{channel}"
    return key + ":" + hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
