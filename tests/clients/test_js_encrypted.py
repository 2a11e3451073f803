"""End-to-end encrypted channels: the Node SDK encrypts, relay forwards, pusher-js decrypts."""

from __future__ import annotations

import pytest

from tests.clients.harness import ENCRYPTION_MASTER_KEY_BASE64, Clients, subscribe
from tests.support import RelayProcess, scaled

pytestmark = [pytest.mark.auth_features, pytest.mark.timeout(scaled(60))]


async def test_pusher_js_decrypts_event_encrypted_by_node_sdk(relay: RelayProcess, clients: Clients) -> None:
    client = await clients.pusher_js(relay.port, encryption_master_key_base64=ENCRYPTION_MASTER_KEY_BASE64)
    await subscribe(client, "private-encrypted-vault")

    result = await clients.node_trigger(
        relay.port,
        encryption_master_key_base64=ENCRYPTION_MASTER_KEY_BASE64,
        channel="private-encrypted-vault",
        event="secret-event",
        data={"msg": "hi", "n": 1},
    )
    assert result["type"] == "response" and result["status"] == 200, result

    event = await client.expect(type="event", channel="private-encrypted-vault", event="secret-event")
    assert event["data"] == {"msg": "hi", "n": 1}
    # On the wire it was ciphertext: relay forwarded the SDK's envelope untouched.
    frame = await client.expect(type="message", event="secret-event")
    assert sorted(frame["data"]) == ["ciphertext", "nonce"]
