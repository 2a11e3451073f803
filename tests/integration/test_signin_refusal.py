"""A refused `pusher:signin` is answered with `pusher:error` 4009 and the connection stays open.

Pusher's protocol: "A pusher:signin event will result in either a pusher:signin_success or a pusher:error
event". pusher-js sends a sign-in signed for its previous socket_id when it reconnects while the user-auth
request is in flight; its fresh sign-in follows. A 4009 close there would stop pusher-js for good (4001-4099
means "do not reconnect"), public channels included.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.test_user_auth import BAD_SIGNIN, error_data, signed_in
from tests.integration.wire import Api, auth_sdk, signin, signin_auth
from tests.support.inprocess import APP, RelayServer


@pytest.fixture
def signer() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret)


@pytest.mark.parametrize("case", list(BAD_SIGNIN))
async def test_bad_signin_signature_is_an_error_frame_and_the_connection_stays(
    server: RelayServer, api: Api, signer: Any, case: str
) -> None:
    bystander = await signed_in(server, signer, "9")
    client = await server.connect()
    await client.subscribed("news")
    auth, user_data = BAD_SIGNIN[case](client.socket_id, signer)
    await signin(client, auth, user_data)
    data = await error_data(client)
    assert data["code"] == 4009
    await client.expect_silence()  # not closed
    assert (APP.id, "1") not in server.node.users
    await bystander.expect_silence()
    # Still subscribed, and a correct sign-in on the same connection succeeds.
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    await asyncio.to_thread(sdk.trigger, ["news"], "still-here", {})
    await client.expect("still-here", "news")
    auth, user_data = signin_auth(signer, client.socket_id, {"id": "1"})
    await signin(client, auth, user_data)
    await client.expect("pusher:signin_success")
    assert server.node.users[(APP.id, "1")] == {client.socket_id}


async def test_stale_signin_after_reconnect_then_fresh_one_signs_in(server: RelayServer, signer: Any) -> None:
    """pusher-js's order after a reconnect during user auth: the old socket's signature, then the new one."""
    old = await server.connect()
    stale_auth, stale_user_data = signin_auth(signer, old.socket_id, {"id": "7"})
    await old.close()
    client = await server.connect()
    await signin(client, stale_auth, stale_user_data)
    fresh_auth, fresh_user_data = signin_auth(signer, client.socket_id, {"id": "7"})
    await signin(client, fresh_auth, fresh_user_data)
    assert (await error_data(client))["code"] == 4009
    await client.expect("pusher:signin_success")
    await client.subscribed("#server-to-user-7")
