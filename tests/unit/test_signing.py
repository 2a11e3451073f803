"""relay.signing against the worked examples of docs/protocol.md (§5.2, §6.3, §7) and the official `pusher` SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import pusher  # type: ignore[import-untyped]
import pusher.http  # type: ignore[import-untyped]
import pytest

from relay import signing

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET_ID = "1234.1234"


def sdk(app_id: str = "3") -> Any:
    return pusher.Pusher(app_id=app_id, key=KEY, secret=SECRET, host="127.0.0.1", port=1, ssl=False)


# §5.2 worked examples ---------------------------------------------------------------------------

CHANNEL_EXAMPLES = [
    ("private-foobar", None, "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"),
    (
        "presence-foobar",
        '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}',
        "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c",
    ),
    (
        "presence-foobar",
        '{"user_id":"10","user_info":{"name":"Mr. Pusher"}}',
        "48dac51d2d7569e1e9c0f48c227d4b26f238fa68e5c0bb04222c966909c4f7c4",
    ),
    (
        "presence-foobar",
        '{"user_id": "10", "user_info": {"name": "Mr. Pusher"}}',
        "9a2ffff4fc1c53a755e465766cfea46b61a4131c6ed7b20f49864a9df0986227",
    ),
    (
        "presence-chat",
        '{"user_id":"1","user_info":{"id":1,"name":"Taylor"}}',
        "8dbecd4ad447e1e0a3b86bc9f2f969e8ebf7f71614c331bb33cdc8aae9a44986",
    ),
    (
        "presence-foobar",
        '{"user_id":10,"user_info":{"name":"Mr. Channels"}}',
        "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80",
    ),
    ("private-orders.1", None, "af8269fdab4543b06f969c9c6f1aa331ab0bcab3fa6898ce498df194cb093c5b"),
    ("private-encrypted-foobar", None, "e6a18892d037c5d5e76a2265df4f086ffc38631605530dfd214aa5bff495f533"),
]


@pytest.mark.parametrize(("channel", "channel_data", "digest"), CHANNEL_EXAMPLES)
def test_channel_auth_worked_examples(channel: str, channel_data: str | None, digest: str) -> None:
    auth = f"{KEY}:{digest}"
    assert signing.channel_auth(KEY, SECRET, SOCKET_ID, channel, channel_data) == auth
    assert signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, channel, auth, channel_data)


def test_user_auth_worked_example() -> None:
    auth = f"{KEY}:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    assert signing.user_auth(KEY, SECRET, SOCKET_ID, '{"id":"12345"}') == auth
    assert signing.verify_user_auth(KEY, SECRET, SOCKET_ID, '{"id":"12345"}', auth)


def test_channel_auth_is_bound_to_exact_bytes_socket_and_key() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Pusher"}}'
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "presence-foobar", data)
    ok = signing.verify_channel_auth
    assert ok(KEY, SECRET, SOCKET_ID, "presence-foobar", auth, data)
    # The same object serialised with other spacing is other bytes: refused (never re-serialise).
    assert not ok(KEY, SECRET, SOCKET_ID, "presence-foobar", auth, json.dumps(json.loads(data)))
    assert not ok(KEY, SECRET, "1234.1235", "presence-foobar", auth, data)
    assert not ok(KEY, SECRET, SOCKET_ID, "presence-foobaz", auth, data)
    assert not ok(KEY, SECRET, SOCKET_ID, "presence-foobar", auth, None)
    assert not ok(KEY, "other-secret", SOCKET_ID, "presence-foobar", auth, data)
    # The whole key:signature string is compared, key included.
    assert not ok(KEY, SECRET, SOCKET_ID, "presence-foobar", "other" + auth[len(KEY) :], data)
    assert not ok(KEY, SECRET, SOCKET_ID, "presence-foobar", auth.split(":", 1)[1], data)
    assert not ok(KEY, SECRET, SOCKET_ID, "presence-foobar", "", data)


def test_user_auth_refuses_other_user_data() -> None:
    auth = signing.user_auth(KEY, SECRET, SOCKET_ID, '{"id":"12345"}')
    assert not signing.verify_user_auth(KEY, SECRET, SOCKET_ID, '{"id":"12346"}', auth)
    assert not signing.verify_user_auth(KEY, SECRET, "1.1", '{"id":"12345"}', auth)


# §6.3 request signing ---------------------------------------------------------------------------


def test_request_worked_example_post() -> None:
    body = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    assert signing.body_md5(body) == "ec365a775a4cd0599faeb73354201b6f"
    params = [
        ("auth_key", KEY),
        ("auth_timestamp", "1353088179"),
        ("auth_version", "1.0"),
        ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
    ]
    expected = (
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
    )
    assert signing.request_string_to_sign("POST", "/apps/3/events", params) == expected
    signature = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    assert signing.sign_request(SECRET, "POST", "/apps/3/events", params) == signature
    assert signing.verify_request_signature(SECRET, "POST", "/apps/3/events", params, signature)


def test_request_worked_example_get_sorts_and_ignores_auth_signature() -> None:
    signature = "5142c71a4248ef5f3ec45e8793d8997773f1d19ce69ee6f6b1d75131d8aa0a6a"
    # Wire order, auth_signature included: it must be left out, the rest sorted.
    params = [
        ("info", "user_count"),
        ("auth_key", KEY),
        ("filter_by_prefix", "presence-"),
        ("auth_signature", signature),
        ("auth_version", "1.0"),
        ("auth_timestamp", "1700000000"),
    ]
    assert signing.verify_request_signature(SECRET, "GET", "/apps/3/channels", params, signature)
    assert not signing.verify_request_signature(SECRET, "GET", "/apps/3/channel", params, signature)
    assert not signing.verify_request_signature(SECRET, "POST", "/apps/3/channels", params, signature)
    tampered = [(k, "presence-x" if k == "filter_by_prefix" else v) for k, v in params]
    assert not signing.verify_request_signature(SECRET, "GET", "/apps/3/channels", tampered, signature)


def test_request_keys_are_lowercased() -> None:
    lower = signing.request_string_to_sign("get", "/p", [("b", "2"), ("a", "1")])
    assert lower == signing.request_string_to_sign("GET", "/p", [("A", "1"), ("B", "2")])
    assert lower == "GET\n/p\na=1&b=2"


def test_body_md5_references() -> None:
    assert signing.body_md5(b"{}") == "99914b932bd37a50b983c5e7c90ae93b"
    assert signing.body_md5(b"") == "d41d8cd98f00b204e9800998ecf8427e"


# §7 webhooks ------------------------------------------------------------------------------------


def test_webhook_worked_example() -> None:
    body = b'{"time_ms":1700000000000,"events":[{"name":"channel_occupied","channel":"my-channel"}]}'
    assert signing.sign_webhook(SECRET, body) == "cb2683f8aaa9de8cdbc72838077bd6ac7c3e64c57fe83fb7b13812a1bd5df142"


# Cross-checks with the official Python SDK -------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "custom_data"),
    [
        ("private-foobar", None),
        ("private-encrypted-foobar", None),
        ("presence-room", {"user_id": "7", "user_info": {"name": "Zoë", "tags": ["a/b"]}}),
        ("presence-room", {"user_id": 10}),
    ],
)
def test_sdk_channel_auth_verifies(channel: str, custom_data: dict[str, Any] | None) -> None:
    client = pusher.Pusher(
        app_id="3",
        key=KEY,
        secret=SECRET,
        encryption_master_key_base64="MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=",
    )
    reply = client.authenticate(channel, "123.456", custom_data)
    channel_data = reply.get("channel_data")
    assert signing.verify_channel_auth(KEY, SECRET, "123.456", channel, reply["auth"], channel_data)
    assert signing.channel_auth(KEY, SECRET, "123.456", channel, channel_data) == reply["auth"]
    verifier = signing.AppVerifier(KEY, SECRET)
    assert verifier.channel_auth_ok("123.456", channel, reply["auth"], channel_data)
    assert not verifier.channel_auth_ok("123.457", channel, reply["auth"], channel_data)


def test_sdk_user_auth_verifies() -> None:
    reply = sdk().authenticate_user("123.456", {"id": "12345", "user_info": {"name": "Ann"}})
    assert signing.verify_user_auth(KEY, SECRET, "123.456", reply["user_data"], reply["auth"])
    assert signing.AppVerifier(KEY, SECRET).signin_ok("123.456", reply["user_data"], reply["auth"])


def test_sdk_request_signature_verifies() -> None:
    client = sdk()
    request = client._pusher_client.trigger.make_request(["a", "b"], "ev", {"x": 1}, "1.2")
    params = list(request.query_params.items())
    assert request.query_params["body_md5"] == signing.body_md5(request.body)
    signature = request.query_params["auth_signature"]
    assert signing.verify_request_signature(SECRET, "POST", request.path, params, signature)
    get = pusher.http.Request(client._pusher_client, "GET", "/apps/3/channels", {"info": "subscription_count"})
    params = list(get.query_params.items())
    assert signing.verify_request_signature(SECRET, "GET", "/apps/3/channels", params, params[-1][1])


def test_sdk_accepts_relay_webhook_signature() -> None:
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": [{"name": "channel_occupied", "channel": "c"}]})
    signature = signing.sign_webhook(SECRET, body.encode())
    assert sdk().validate_webhook(KEY, signature, body) is not None
    assert sdk().validate_webhook(KEY, signature, body + " ") is None


def test_hmac_hex_matches_sdk_sign() -> None:
    assert signing.hmac_hex(SECRET, "any string ✓") == pusher.signature.sign(SECRET, "any string ✓")


NODE_AUTH = [("auth_key", KEY), ("auth_timestamp", "1700000000"), ("auth_version", "1.0")]


@pytest.mark.parametrize(
    ("method", "path", "body", "md5", "signature"),
    [
        (
            "POST",
            "/apps/3/events",
            b'{"name":"my-event","data":"{\\"hello\\":\\"world\\"}","channels":["my-channel","other-channel"],'
            b'"socket_id":"123.456","info":"subscription_count"}',
            "aa6165250d8435d7c189c9283dcce1be",
            "2626a6a8be53d2da923188c99c4523f79189f916320a08285f0b7d76fd2f6653",
        ),
        (
            "POST",
            "/apps/3/batch_events",
            b'{"batch":[{"channel":"my-channel","name":"e1","data":"{\\"a\\":1}"},'
            b'{"channel":"presence-room","name":"e2","data":"plain","info":"user_count"}]}',
            "17da57e4c2043cb13d869a6a69c0bdb6",
            "be4c1031d42cb3c0a940e2f069cd786860983135e6f1504f7dd0e577df06579a",
        ),
        (
            "GET",
            "/apps/3/channels/presence-room/users",
            b"",
            None,
            "57993b520f77018d5c04e3873f82d31f7a8cf5dacd07389686fdeee97e96875c",
        ),
        (
            "POST",
            "/apps/3/users/42/terminate_connections",
            b"{}",
            "99914b932bd37a50b983c5e7c90ae93b",
            "1aaa870f66697b14779b4f5d36bbea0e4d9f2190a17bd7b16fc46b6bd373690e",
        ),
    ],
    ids=["events", "batch", "users", "terminate"],
)
def test_node_sdk_wire_requests(method: str, path: str, body: bytes, md5: str | None, signature: str) -> None:
    """Requests as the node SDK sends them (timestamp frozen at 1700000000)."""
    params = list(NODE_AUTH)
    if md5 is not None:
        assert signing.body_md5(body) == md5
        params.append(("body_md5", md5))
    assert signing.verify_request_signature(SECRET, method, path, params, signature)
    assert not signing.verify_request_signature(SECRET, method, path + "x", params, signature)
