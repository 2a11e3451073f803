"""`POST /apps/<id>/auth` and `/user-auth` answer exactly what an app's own endpoint answers (compared with
the official `pusher` SDK's answers), and those answers open private, presence and encrypted channels and
sign a connection in on a real relay. Also CORS, preflight, and the request's own faults."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
import pytest

from tests.integration.wire import RawData, auth_sdk, inner
from tests.jwt.conftest import ENCRYPTION_MASTER_KEY_BASE64, JWT_APP, AuthClient, metric_samples
from tests.jwt.tokens import claims, pyjwt_token
from tests.support.inprocess import APP, RelayServer, RelayServerFactory

pytestmark = pytest.mark.timeout(30)


def sdk() -> Any:
    return auth_sdk(APP.id, APP.key, APP.secret, encryption_master_key_base64=ENCRYPTION_MASTER_KEY_BASE64)


async def test_private_channel_answer_is_the_sdk_answer_and_subscribes(server: RelayServer, auth: AuthClient) -> None:
    client = await server.connect()
    status, body = await auth.channel(pyjwt_token(claims()), client.socket_id, "private-user.42")
    assert status == 200
    assert body == sdk().authenticate("private-user.42", client.socket_id)
    await client.subscribed("private-user.42", body["auth"])


async def test_presence_answer_carries_sub_and_user_info_and_joins(server: RelayServer, auth: AuthClient) -> None:
    client = await server.connect()
    status, body = await auth.channel(pyjwt_token(claims()), client.socket_id, "presence-room.7")
    assert status == 200
    assert json.loads(body["channel_data"]) == {"user_id": "42", "user_info": {"name": "Ada"}}
    # The SDK signing the same channel_data string (RawData: verbatim) gives the same answer.
    assert body == sdk().authenticate("presence-room.7", client.socket_id, RawData(body["channel_data"], user_id="42"))
    frame = await client.subscribed("presence-room.7", body["auth"], body["channel_data"])
    assert inner(frame)["presence"]["hash"] == {"42": {"name": "Ada"}}


async def test_integer_sub_becomes_a_string_user_id(server: RelayServer, auth: AuthClient) -> None:
    client = await server.connect()
    status, body = await auth.channel(pyjwt_token(claims(sub=42)), client.socket_id, "presence-room.1")
    assert status == 200
    assert json.loads(body["channel_data"])["user_id"] == "42"


async def test_encrypted_channel_answer_has_the_sdk_shared_secret(server: RelayServer, auth: AuthClient) -> None:
    client = await server.connect()
    status, body = await auth.channel(pyjwt_token(claims()), client.socket_id, "private-encrypted-inbox.42")
    assert status == 200
    expected = sdk().authenticate("private-encrypted-inbox.42", client.socket_id)
    # The Python SDK returns the base64 text as bytes; its JSON answer is that text.
    assert body == {**expected, "shared_secret": expected["shared_secret"].decode()}
    await client.subscribed("private-encrypted-inbox.42", body["auth"])


async def test_user_auth_answer_signs_the_connection_in(server: RelayServer, auth: AuthClient) -> None:
    client = await server.connect()
    status, body = await auth.user(pyjwt_token(claims()), client.socket_id)
    assert status == 200
    assert json.loads(body["user_data"]) == {"id": "42", "user_info": {"name": "Ada"}}
    assert body == sdk().authenticate_user(client.socket_id, RawData(body["user_data"], id="42"))
    await client.send({"event": "pusher:signin", "data": body})
    frame = await client.expect("pusher:signin_success")
    assert inner(frame) == {"user_data": body["user_data"]}


async def test_channel_outside_allow_is_403_channel_not_permitted(server: RelayServer, auth: AuthClient) -> None:
    client = await server.connect()
    status, body = await auth.channel(pyjwt_token(claims()), client.socket_id, "private-user.43")
    assert (status, body["check"]) == (403, "channel_not_permitted")
    status, body = await auth.channel(pyjwt_token(claims(allow=None)), client.socket_id, "private-user.42")
    assert (status, body["check"]) == (403, "channel_not_permitted")


async def test_star_pattern_permits_every_channel(server: RelayServer, auth: AuthClient) -> None:
    client = await server.connect()
    status, _ = await auth.channel(pyjwt_token(claims(allow=["*"])), client.socket_id, "private-anything.at-all")
    assert status == 200


@pytest.mark.parametrize(
    ("form", "check"),
    [
        ({"channel_name": "private-user.42"}, "invalid_socket_id"),
        ({"socket_id": "not-a-socket", "channel_name": "private-user.42"}, "invalid_socket_id"),
        ({"socket_id": "1.2"}, "invalid_channel"),
        ({"socket_id": "1.2", "channel_name": "public-news"}, "channel_needs_no_auth"),
        ({"socket_id": "1.2", "channel_name": "#server-to-user-42"}, "channel_needs_no_auth"),
        ({"socket_id": "1.2", "channel_name": "private-bad name"}, "invalid_channel"),
    ],
)
async def test_bad_request_fields_are_400(auth: AuthClient, form: dict[str, str], check: str) -> None:
    status, body, _ = await auth.post("auth", form, pyjwt_token(claims(allow=["*"])))
    assert (status, body["check"]) == (400, check)
    assert set(body) == {"error", "check"}


async def test_json_body_is_read_like_the_form(server: RelayServer, http: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{server.port}/apps/{APP.id}/auth"
    headers = {"Authorization": f"Bearer {pyjwt_token(claims())}", "Content-Type": "application/json"}
    payload = orjson.dumps({"socket_id": "1.2", "channel_name": "private-user.42"})
    async with http.post(url, data=payload, headers=headers) as response:
        assert response.status == 200
        assert await response.json() == sdk().authenticate("private-user.42", "1.2")


@pytest.mark.parametrize("authorization", [None, "", "Basic abc", "Bearer ", "Bearer"])
async def test_missing_bearer_token_is_401(auth: AuthClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, body, response_headers = await auth.post(
        "auth", {"socket_id": "1.2", "channel_name": "private-user.42"}, None, headers
    )
    assert (status, body["check"]) == (401, "missing_token")
    assert response_headers["WWW-Authenticate"].startswith("Bearer")


async def test_app_without_jwt_settings_or_unknown_app_is_404(server: RelayServer, http: aiohttp.ClientSession) -> None:
    server_without = AuthClient(http, server.port, "9999")
    status, body = await server_without.channel(pyjwt_token(claims()), "1.2", "private-user.42")
    assert (status, body["check"]) == (404, "jwt_not_configured")


async def test_failures_are_counted_by_app_and_check(server: RelayServer, auth: AuthClient) -> None:
    await auth.channel(pyjwt_token(claims(), key="x" * 40), "1.2", "private-user.42")
    await auth.channel(pyjwt_token(claims()), "1.2", "private-user.43")
    await auth.channel(pyjwt_token(claims()), "1.2", "private-user.44")
    assert metric_samples(server, "relay_jwt_auth_failures_total") == {
        (("app_id", APP.id), ("check", "bad_signature")): 1.0,
        (("app_id", APP.id), ("check", "channel_not_permitted")): 2.0,
    }
    requests = metric_samples(server, "relay_http_requests_total")
    assert requests[(("app_id", APP.id), ("endpoint", "auth"), ("status", "403"))] == 2.0


# CORS -------------------------------------------------------------------------------------------


@pytest.fixture
async def cors_server(relay_server: RelayServerFactory) -> RelayServer:
    return await relay_server(replace(JWT_APP, allowed_origins=("app.example.com", "*.example.org")))


async def test_allowed_origin_gets_cors_headers_on_answers_and_errors(
    cors_server: RelayServer, http: aiohttp.ClientSession
) -> None:
    auth = AuthClient(http, cors_server.port)
    origin = {"Origin": "https://app.example.com"}
    form = {"socket_id": "1.2", "channel_name": "private-user.42"}
    status, _, headers = await auth.post("auth", form, pyjwt_token(claims()), origin)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert headers["Vary"] == "Origin"
    status, _, headers = await auth.post("auth", form, pyjwt_token(claims(lifetime=-100)), origin)
    assert status == 401
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_preflight_allows_the_requested_headers(cors_server: RelayServer, http: aiohttp.ClientSession) -> None:
    for endpoint in ("auth", "user-auth"):
        url = f"http://127.0.0.1:{cors_server.port}/apps/{APP.id}/{endpoint}"
        headers = {
            "Origin": "https://a.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-csrf-token",
        }
        async with http.options(url, headers=headers) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == "https://a.example.org"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-csrf-token"


async def test_origin_not_allowed_is_403_without_cors_headers(
    cors_server: RelayServer, http: aiohttp.ClientSession
) -> None:
    url = f"http://127.0.0.1:{cors_server.port}/apps/{APP.id}/auth"
    headers = {"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    async with http.options(url, headers=headers) as response:
        assert response.status == 403
        assert (await response.json())["check"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in response.headers
    auth = AuthClient(http, cors_server.port)
    status, body, _ = await auth.post(
        "auth",
        {"socket_id": "1.2", "channel_name": "private-user.42"},
        pyjwt_token(claims()),
        {"Origin": "https://evil.example.net"},
    )
    assert (status, body["check"]) == (403, "origin_not_allowed")
