"""End-to-end encrypted channels (docs/protocol.md §5.3, §2.5, §9.3) on an in-process relay.

The official Python SDK, configured with `encryption_master_key_base64`, signs subscriptions (its auth
reply carries the `shared_secret`) and encrypts published events. The server authorises like a private
channel, relays the SDK's `{nonce, ciphertext}` string unchanged and refuses client events. pusher-js
decryption is covered by tests/clients/test_js_encrypted.py.
"""

from __future__ import annotations

import base64
from typing import Any

import nacl.secret
import orjson
import pytest

from tests.integration.wire import Api, Client, auth_sdk, private_auth
from tests.support.inprocess import APP, RelayServer

MASTER_KEY = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
CHANNEL = "private-encrypted-vault"


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret, encryption_master_key_base64=MASTER_KEY)


@pytest.fixture
def encrypting_sdk(api: Api) -> Any:
    return api.sdk(APP.id, APP.key, APP.secret, encryption_master_key_base64=MASTER_KEY)


async def join(server: RelayServer, signer: Any) -> tuple[Client, bytes]:
    """A subscribed client and the channel's shared secret from the SDK's auth reply."""
    client = await server.connect()
    reply = signer.authenticate(channel=CHANNEL, socket_id=client.socket_id)
    assert "shared_secret" in reply
    await client.subscribed(CHANNEL, reply["auth"])
    return client, base64.b64decode(reply["shared_secret"])


async def publish(api: Api, sdk: Any, event: str, data: Any) -> str:
    """Publish through the SDK's own encrypting trigger; returns the `data` string it put on the wire."""
    request = sdk._pusher_client.trigger.make_request([CHANNEL], event, data)
    sent = orjson.loads(request.body)["data"]
    response = await api.send(request)
    assert response.status == 200, response
    assert isinstance(sent, str)
    return sent


def decrypt(shared_secret: bytes, data: str) -> Any:
    payload = orjson.loads(data)
    box = nacl.secret.SecretBox(shared_secret)
    plain = box.decrypt(base64.b64decode(payload["ciphertext"]), base64.b64decode(payload["nonce"]))
    return orjson.loads(plain)


async def test_ciphertext_is_relayed_unchanged(server: RelayServer, signer: Any, api: Api, encrypting_sdk: Any) -> None:
    alice, secret = await join(server, signer)
    bob, _ = await join(server, signer)
    message = {"msg": "hi", "text": 'Grüße — ünïcode / "quotes" \\ \u2028'}
    sent = await publish(api, encrypting_sdk, "secret-event", message)
    assert set(orjson.loads(sent)) == {"nonce", "ciphertext"}
    for client in (alice, bob):
        raw = await client.recv_text()
        frame = orjson.loads(raw)
        assert frame == {"event": "secret-event", "channel": CHANNEL, "data": sent}
        assert frame["data"] == sent  # the very string the SDK sent, byte for byte
        assert decrypt(secret, frame["data"]) == message


async def test_every_event_gets_its_own_ciphertext_relayed_as_is(
    server: RelayServer, signer: Any, api: Api, encrypting_sdk: Any
) -> None:
    client, secret = await join(server, signer)
    sent = [await publish(api, encrypting_sdk, f"e{n}", {"n": n}) for n in range(5)]
    assert len(set(sent)) == 5  # fresh nonces
    for n, data in enumerate(sent):
        frame = await client.expect(f"e{n}", CHANNEL)
        assert frame["data"] == data
        assert decrypt(secret, frame["data"]) == {"n": n}


async def test_ciphertext_not_delivered_to_unauthorised_socket(
    server: RelayServer, signer: Any, api: Api, encrypting_sdk: Any
) -> None:
    member, _ = await join(server, signer)
    intruder = await server.connect()
    await intruder.subscribe(CHANNEL, private_auth(signer, member.socket_id, CHANNEL))
    frame = await intruder.expect("pusher:subscription_error", CHANNEL)
    assert frame["data"]["type"] == "AuthError" and frame["data"]["status"] == 401
    await publish(api, encrypting_sdk, "secret-event", {"x": 1})
    await member.expect("secret-event", CHANNEL)
    await intruder.expect_silence()
    # The intruder's socket still works with its own signature.
    await intruder.subscribed(CHANNEL, private_auth(signer, intruder.socket_id, CHANNEL))


async def test_client_events_are_refused_with_4301(server: RelayServer, signer: Any) -> None:
    sender, _ = await join(server, signer)
    other, _ = await join(server, signer)
    payload = {"nonce": "AQEBAQEBAQEBAQEBAQEBAQEBAQEB", "ciphertext": "yPCCPjeS1H3UDKniTq+B7u7xZjDRCyp612g/GQ=="}
    await sender.send({"event": "client-typing", "data": payload, "channel": CHANNEL})
    frame = await sender.expect("pusher:error")
    data = frame["data"] if isinstance(frame["data"], dict) else orjson.loads(frame["data"])
    assert data["code"] == 4301, frame
    assert "encrypted" in data["message"], frame
    assert frame.get("channel") == CHANNEL
    await other.expect_silence()
    await sender.expect_silence()  # an error frame only: the connection stays open


async def test_encrypted_cache_channel_client_events_refused_too(server: RelayServer, signer: Any) -> None:
    channel = "private-encrypted-cache-vault"
    client = await server.connect()
    await client.subscribed(channel, private_auth(signer, client.socket_id, channel))
    await client.expect("pusher:cache_miss", channel)
    await client.send({"event": "client-x", "data": {}, "channel": channel})
    frame = await client.expect("pusher:error")
    assert frame["data"]["code"] == 4301
