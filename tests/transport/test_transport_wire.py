"""Both WebSocket transports (lean and aiohttp) at the byte level: handshake, framing rules, close codes,
plain HTTP on the same port, slow consumers and clean-up. Every test runs once per transport."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from relay.protocol import errors
from tests.integration.wire import (
    PUSHER_JS_QUERY,
    Api,
    auth_sdk,
    build_request,
    inner,
    presence_auth,
    wait_until,
)
from tests.support.inprocess import APP, RelayServer, RelayServerFactory
from tests.transport.rawws import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    RawSocket,
    close_payload,
    expected_accept,
    frame,
    open_websocket,
    upgrade_request,
)

APP_PATH = f"/app/{APP.key}?{PUSHER_JS_QUERY}"


def subscribe_frame(channel: str, **data: Any) -> bytes:
    return orjson.dumps({"event": "pusher:subscribe", "data": {"channel": channel, **data}})


async def established(sock: RawSocket) -> str:
    message = orjson.loads(await sock.read_text())
    assert message["event"] == "pusher:connection_established", message
    socket_id: str = inner(message)["socket_id"]
    return socket_id


async def expect_event(sock: RawSocket, event: str) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await sock.read_text())
    assert message["event"] == event, message
    return message


async def expect_close(sock: RawSocket, code: int) -> None:
    """The next frame is a close frame with `code`; once answered, the server ends the TCP connection."""
    received = await sock.read_frame()
    assert received.opcode == CLOSE, received
    assert received.close_code == code, received
    if not sock.writer.is_closing():
        sock.writer.write(frame(CLOSE, received.payload[:2]))  # aiohttp waits for this reply
    await sock.read_eof()


async def connected(server: RelayServer) -> tuple[RawSocket, str]:
    sock = await open_websocket(server.port)
    return sock, await established(sock)


# Handshake -----------------------------------------------------------------------------------------


async def test_handshake_answers_101_with_accept_key(server: RelayServer) -> None:
    sock = await RawSocket.open(server.port)
    key = base64.b64encode(os.urandom(16))
    await sock.write(upgrade_request(APP_PATH, key))
    status, headers = await sock.read_head()
    assert status == 101
    assert headers["upgrade"].lower() == "websocket"
    assert headers["connection"].lower() == "upgrade"
    assert headers["sec-websocket-accept"] == expected_accept(key).decode()
    assert "sec-websocket-extensions" not in headers
    socket_id = await established(sock)
    await wait_until(lambda: socket_id in server.node.connections)
    sock.close()


async def test_request_and_frames_split_into_single_bytes(server: RelayServer) -> None:
    """Every boundary: the request head and the frames arrive one byte per write."""
    sock = await RawSocket.open(server.port)
    sock.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    for byte in upgrade_request(APP_PATH, key):
        await sock.write(bytes((byte,)))
        await asyncio.sleep(0.001)
    status, headers = await sock.read_head()
    assert status == 101
    assert headers["sec-websocket-accept"] == expected_accept(key).decode()
    await established(sock)
    data = frame(TEXT, subscribe_frame("split"), fin=False) + frame(CONTINUATION, b"") + frame(PING, b"hey")
    for byte in data:
        await sock.write(bytes((byte,)))
        await asyncio.sleep(0.001)
    await expect_event(sock, "pusher_internal:subscription_succeeded")
    pong = await sock.read_frame()
    assert (pong.opcode, pong.payload) == (PONG, b"hey")
    sock.close()


async def test_frames_sent_with_the_request_are_handled_in_order(server: RelayServer) -> None:
    """A client that does not wait for the 101: the subscribe, ping and second subscribe come in one write."""
    sock = await RawSocket.open(server.port)
    key = base64.b64encode(os.urandom(16))
    ping = orjson.dumps({"event": "pusher:ping", "data": {}})
    await sock.write(
        upgrade_request(APP_PATH, key)
        + frame(TEXT, subscribe_frame("first"))
        + frame(TEXT, ping)
        + frame(TEXT, subscribe_frame("second"))
    )
    status, _ = await sock.read_head()
    assert status == 101
    await established(sock)
    assert (await expect_event(sock, "pusher_internal:subscription_succeeded"))["channel"] == "first"
    await expect_event(sock, "pusher:pong")
    assert (await expect_event(sock, "pusher_internal:subscription_succeeded"))["channel"] == "second"
    sock.close()


async def test_hundreds_of_subscribes_in_one_write_are_answered_in_order(server: RelayServer) -> None:
    """More frames than the lean transport queues behind a pending join: reading pauses, nothing is lost."""
    sock, _ = await connected(server)
    await sock.write(b"".join(frame(TEXT, subscribe_frame(f"c{number}")) for number in range(300)))
    for number in range(300):
        assert (await expect_event(sock, "pusher_internal:subscription_succeeded"))["channel"] == f"c{number}"
    await sock.write(frame(PING, b"end"))
    assert (await sock.read_frame()).payload == b"end"
    sock.close()


async def test_refusals_send_error_then_close(relay_server: RelayServerFactory) -> None:
    server = await relay_server(APP, replace(APP, id="2", key="off", enabled=False))
    cases = {
        "/app/nope?protocol=7": errors.APP_DOES_NOT_EXIST,
        "/app/off?protocol=7": errors.APP_DISABLED,
        "/app/app-key?protocol=x": errors.INVALID_VERSION_FORMAT,
        "/app/app-key?protocol=99": errors.UNSUPPORTED_PROTOCOL_VERSION,
        "/app/app-key": errors.NO_PROTOCOL_VERSION,
        "/elsewhere": errors.PATH_NOT_FOUND,
        "/app/app-key/extra?protocol=7": errors.PATH_NOT_FOUND,
    }
    for path, code in cases.items():
        sock = await open_websocket(server.port, path)
        message = await expect_event(sock, "pusher:error")
        data = message["data"] if isinstance(message["data"], dict) else inner(message)
        assert data["code"] == code, (path, message)
        await expect_close(sock, code)
    assert not server.node.connections


async def test_bare_line_feed_in_upgrade_head_is_refused_by_aiohttp_parser(server: RelayServer) -> None:
    sock = await RawSocket.open(server.port)
    key = base64.b64encode(os.urandom(16))
    await sock.write(upgrade_request(APP_PATH, key).replace(b"\r\n\r\n", b"\r\nX-Odd: a\nb: c\r\n\r\n"))
    status, _, _ = await sock.read_response()
    assert status == 400
    assert not server.node.connections


async def test_origin_refused_4009(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, allowed_origins=("good.example",)))
    sock = await RawSocket.open(server.port)
    key = base64.b64encode(os.urandom(16))
    request = upgrade_request(APP_PATH, key).replace(b"\r\n\r\n", b"\r\nOrigin: https://evil.example\r\n\r\n")
    await sock.write(request)
    assert (await sock.read_head())[0] == 101
    await expect_event(sock, "pusher:error")
    await expect_close(sock, errors.CONNECTION_UNAUTHORIZED)


async def test_shutting_down_refuses_new_sockets_4100(server: RelayServer) -> None:
    server.node.accepting = False
    sock = await open_websocket(server.port)
    await expect_event(sock, "pusher:error")
    await expect_close(sock, errors.OVER_CAPACITY)


# Frames --------------------------------------------------------------------------------------------


async def test_fragmented_message_is_reassembled_around_a_ping(server: RelayServer) -> None:
    sock, _ = await connected(server)
    payload = subscribe_frame("pieces")
    await sock.write(frame(TEXT, payload[:5], fin=False))
    await sock.write(frame(PING, b"mid"))  # control frames may come between fragments
    await sock.write(frame(CONTINUATION, payload[5:20], fin=False))
    await sock.write(frame(CONTINUATION, payload[20:]))
    pong = await sock.read_frame()
    assert (pong.opcode, pong.payload) == (PONG, b"mid")
    assert (await expect_event(sock, "pusher_internal:subscription_succeeded"))["channel"] == "pieces"
    sock.close()


async def test_message_in_thousands_of_fragments(server: RelayServer) -> None:
    sock, _ = await connected(server)
    payload = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "tiny", "pad": "p" * 3000}})
    pieces = [frame(TEXT, payload[:1], fin=False)]
    pieces += [frame(CONTINUATION, payload[i : i + 1], fin=False) for i in range(1, len(payload) - 1)]
    pieces.append(frame(CONTINUATION, payload[-1:]))
    await sock.write(b"".join(pieces))
    assert (await expect_event(sock, "pusher_internal:subscription_succeeded"))["channel"] == "tiny"
    sock.close()


async def test_ping_gets_pong_with_same_payload(server: RelayServer) -> None:
    sock, _ = await connected(server)
    for payload in (b"", b"x", bytes(range(125))):
        await sock.write(frame(PING, payload))
        pong = await sock.read_frame()
        assert (pong.fin, pong.opcode, pong.payload) == (True, PONG, payload)
    await sock.write(frame(PONG, b"unsolicited"))  # ignored
    await sock.write(frame(TEXT, orjson.dumps({"event": "pusher:ping", "data": {}})))
    await expect_event(sock, "pusher:pong")
    sock.close()


@pytest.mark.parametrize("transport", ["lean"])  # aiohttp's reader accepts unmasked frames
async def test_unmasked_client_frame_closes_1002(server: RelayServer) -> None:
    sock, socket_id = await connected(server)
    await sock.write(frame(TEXT, b'{"event":"pusher:ping","data":{}}', mask=False))
    await expect_close(sock, 1002)
    await wait_until(lambda: socket_id not in server.node.connections)


async def test_framing_errors_close_1002(server: RelayServer) -> None:
    bad_frames = [
        frame(CONTINUATION, b"x"),  # nothing to continue
        frame(TEXT, b"{", fin=False) + frame(TEXT, b"}"),  # new message inside a fragmented one
        frame(PING, b"x", fin=False),  # fragmented control frame
        frame(PING, b"x" * 126),  # control frame too long
        bytes((0xC1, 0x80)) + os.urandom(4),  # RSV1 without an extension
        frame(0x3, b""),  # reserved opcode
        frame(CLOSE, b"\x03"),  # one-byte close payload
        frame(CLOSE, close_payload(1005)),  # a code that must not be sent
    ]
    for bad in bad_frames:
        sock, _ = await connected(server)
        await sock.write(bad)
        await expect_close(sock, 1002)
    await wait_until(lambda: not server.node.connections)


async def test_invalid_utf8_closes_1007(server: RelayServer) -> None:
    for bad in (frame(TEXT, b'{"event":"\xff"}'), frame(TEXT, b"\xe2\x82", fin=False) + frame(CONTINUATION, b"\x28")):
        sock, _ = await connected(server)
        await sock.write(bad)
        await expect_close(sock, 1007)


async def test_utf8_character_split_between_fragments_is_valid(server: RelayServer) -> None:
    sock, _ = await connected(server)
    payload = orjson.dumps({"event": "pusher:subscribe", "data": {"channel": "euro", "x": "€"}})
    cut = payload.index("€".encode()) + 1
    await sock.write(frame(TEXT, payload[:cut], fin=False) + frame(CONTINUATION, payload[cut:]))
    assert (await expect_event(sock, "pusher_internal:subscription_succeeded"))["channel"] == "euro"
    sock.close()


async def test_oversized_message_closes_1009_and_smaller_oversize_gets_error(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_message_size=1000))
    sock, _ = await connected(server)
    oversize = orjson.dumps({"event": "pusher:ping", "data": {"pad": "x" * 1500}})
    await sock.write(frame(TEXT, oversize))
    message = await expect_event(sock, "pusher:error")
    assert message["data"]["code"] == errors.CLIENT_EVENT_REJECTED
    await sock.write(frame(TEXT, orjson.dumps({"event": "pusher:ping", "data": {}})))
    await expect_event(sock, "pusher:pong")  # still open
    await sock.write(frame(TEXT, b"x" * 9000))  # over the hard limit (8x max_message_size)
    await expect_close(sock, 1009)

    sock, _ = await connected(server)  # the same limit holds for a message sent in fragments
    await sock.write(b"".join(frame(TEXT if i == 0 else CONTINUATION, b"x" * 1000, fin=False) for i in range(10)))
    await expect_close(sock, 1009)


async def test_binary_message_gets_error_and_connection_stays(server: RelayServer) -> None:
    sock, _ = await connected(server)
    await sock.write(frame(BINARY, b"\x00\x01"))
    message = await expect_event(sock, "pusher:error")
    data = message["data"] if isinstance(message["data"], dict) else inner(message)
    assert data["code"] == errors.INVALID_MESSAGE_FORMAT
    await sock.write(frame(PING, b"p"))
    assert (await sock.read_frame()).opcode == PONG
    sock.close()


async def test_close_handshake_is_echoed(server: RelayServer, transport: str) -> None:
    sock, socket_id = await connected(server)
    await sock.write(frame(CLOSE, close_payload(1000, b"bye")))
    await expect_close(sock, 1000)
    await wait_until(lambda: socket_id not in server.node.connections)

    sock, socket_id = await connected(server)
    await sock.write(frame(CLOSE, b""))
    received = await sock.read_frame()
    # RFC 6455 §5.5.1 echoes the status code, and there is none; aiohttp answers 1000 instead.
    assert (received.opcode, received.payload) == (CLOSE, b"" if transport == "lean" else close_payload(1000))
    await sock.read_eof()
    await wait_until(lambda: socket_id not in server.node.connections)


# Plain HTTP on the same port -------------------------------------------------------------------------


def raw_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_http_api_health_and_metrics_share_one_keep_alive_connection(server: RelayServer, sdk: Any) -> None:
    listener, _ = await connected(server)
    await listener.write(frame(TEXT, subscribe_frame("kept")))
    await expect_event(listener, "pusher_internal:subscription_succeeded")

    http = await RawSocket.open(server.port)
    for _ in range(2):
        await http.write(raw_request("GET", "/up"))
        status, _, body = await http.read_response()
        assert (status, body) == (200, b'{"health":"OK"}')
    for number in range(3):
        request = build_request(
            sdk, "POST", f"/apps/{APP.id}/events", {"name": "e", "channels": ["kept"], "data": str(number)}
        )
        path = f"{request.path}?{urlencode(request.query_params)}"
        await http.write(raw_request("POST", path, request.body, {"Content-Type": "application/json"}))
        status, _, body = await http.read_response()
        assert status == 200, body
        assert inner(await expect_event(listener, "e")) == number
    await http.write(raw_request("GET", "/metrics"))
    status, _, body = await http.read_response()
    assert status == 200 and b"connections" in body
    await http.write(raw_request("GET", "/ready"))
    status, _, body = await http.read_response()
    assert (status, orjson.loads(body)) == (200, {"ready": True})
    http.close()
    listener.close()


async def test_pipelined_and_split_http_requests(server: RelayServer) -> None:
    http = await RawSocket.open(server.port)
    await http.write(b"GE")  # too short to tell an upgrade from plain HTTP yet
    await asyncio.sleep(0.01)
    await http.write(b"T /up HTTP/1.1\r\nHost: x\r\n\r\n" + raw_request("GET", "/up") + raw_request("GET", "/nowhere"))
    assert (await http.read_response())[0] == 200
    assert (await http.read_response())[0] == 200
    status, _, body = await http.read_response()
    assert status == 404, body
    http.close()


async def test_app_path_without_upgrade_headers_is_plain_http(server: RelayServer) -> None:
    http = await RawSocket.open(server.port)
    await http.write(raw_request("GET", APP_PATH))
    status, _, _ = await http.read_response()
    assert 400 <= status < 500
    http.close()


async def test_wrong_path_upgrade_4005_and_api_still_answers(server: RelayServer, api: Api) -> None:
    sock = await open_websocket(server.port, "/apps/app-key?protocol=7")
    message = await expect_event(sock, "pusher:error")
    assert message["data"]["code"] == errors.PATH_NOT_FOUND
    await expect_close(sock, errors.PATH_NOT_FOUND)
    assert (await api.raw("GET", "/up")).status == 200


# Resources -------------------------------------------------------------------------------------------


async def stalled_subscriber(server: RelayServer, channel: str) -> tuple[RawSocket, asyncio.StreamWriter]:
    """A client with a tiny receive window, subscribed to `channel`, that stops reading."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", server.port))
    reader, writer = await asyncio.open_connection(sock=raw, limit=1024)
    stalled = RawSocket(reader, writer)
    await stalled.write(upgrade_request(APP_PATH, base64.b64encode(os.urandom(16))))
    assert (await stalled.read_head())[0] == 101
    await established(stalled)
    await stalled.write(frame(TEXT, subscribe_frame(channel)))
    await expect_event(stalled, "pusher_internal:subscription_succeeded")
    writer.transport.pause_reading()
    return stalled, writer


async def test_slow_consumer_is_cut_while_others_keep_receiving(relay_server: RelayServerFactory, http: Any) -> None:
    server = await relay_server(replace(APP, max_event_size=200_000), max_outbound_buffer=65_536)
    api = Api(http, server.port)
    sdk = api.sdk(APP.id, APP.key, APP.secret)
    reader, _ = await connected(server)
    await reader.write(frame(TEXT, subscribe_frame("flood")))
    await expect_event(reader, "pusher_internal:subscription_succeeded")

    # A client with a tiny receive window that never reads after subscribing.
    stalled, _ = await stalled_subscriber(server, "flood")

    data = "x" * 100_000
    sent = 0
    while server.node.metrics.app(APP.id).slow_consumer_disconnects == 0:
        assert sent < 400, "the stalled client was never cut"
        body = {"name": "big", "channels": ["flood"], "data": f"{sent}:{data}"}
        response = await api.send(build_request(sdk, "POST", f"/apps/{APP.id}/events", body))
        assert response.status == 200
        sent += 1
        received = await expect_event(reader, "big")  # the reading client gets every event, in order
        assert received["data"].startswith(f"{sent - 1}:")
    assert server.node.metrics.app(APP.id).slow_consumer_disconnects == 1
    await wait_until(lambda: len(server.node.connections) == 1)
    await reader.write(frame(PING, b"alive"))
    assert (await reader.read_frame()).payload == b"alive"
    reader.close()
    stalled.close()


async def test_slow_consumer_is_told_that_messages_were_dropped(relay_server: RelayServerFactory, http: Any) -> None:
    """Once cut, a client that reads again finds, after what was queued, a pusher:error saying messages were
    dropped and a 4100 close (pusher-js reconnects after a pause); nothing more is queued for it meanwhile."""
    limit = 65_536
    server = await relay_server(replace(APP, max_event_size=200_000), max_outbound_buffer=limit)
    sdk = Api(http, server.port).sdk(APP.id, APP.key, APP.secret)
    stalled, stalled_writer = await stalled_subscriber(server, "flood")

    data = "x" * 100_000
    sent = 0
    while server.node.metrics.app(APP.id).slow_consumer_disconnects == 0:
        assert sent < 400, "the stalled client was never cut"
        body = {"name": "big", "channels": ["flood"], "data": f"{sent}:{data}"}
        await Api(http, server.port).send(build_request(sdk, "POST", f"/apps/{APP.id}/events", body))
        sent += 1
    for extra in range(20):  # events after the cut are not queued for it
        body = {"name": "big", "channels": ["flood"], "data": f"after-{extra}:{data}"}
        await Api(http, server.port).send(build_request(sdk, "POST", f"/apps/{APP.id}/events", body))
    dropped = server.node.metrics.app(APP.id).slow_consumer_bytes_dropped
    assert 0 < dropped <= limit + 2 * len(data), dropped

    stalled_writer.transport.resume_reading()
    notice = None
    while True:
        received = await stalled.read_frame()
        if received.opcode == CLOSE:
            break
        message = orjson.loads(received.payload)
        assert not str(message.get("data", "")).startswith("after-"), "an event after the cut was queued"
        if message["event"] == "pusher:error":
            notice = message
    assert notice is not None and notice["data"]["code"] == 4100
    assert "dropped" in notice["data"]["message"]
    assert int.from_bytes(received.payload[:2], "big") == 4100
    stalled.close()


async def test_many_connections_open_and_close_leave_nothing_behind(relay_server: RelayServerFactory) -> None:
    server = await relay_server(replace(APP, max_presence_members=1000))
    sdk = auth_sdk(APP.id, APP.key, APP.secret)

    async def one(number: int) -> None:
        sock, socket_id = await connected(server)
        channel = "presence-crowd"
        auth, channel_data = presence_auth(sdk, socket_id, channel, {"user_id": str(number)})
        await sock.write(frame(TEXT, subscribe_frame(f"public-{number % 7}")))
        await sock.write(frame(TEXT, subscribe_frame(channel, auth=auth, channel_data=channel_data)))
        if number % 3 == 0:
            sock.close()  # gone at once, maybe before the subscribes were handled
            return
        await expect_event(sock, "pusher_internal:subscription_succeeded")
        await expect_event(sock, "pusher_internal:subscription_succeeded")
        if number % 3 == 1:
            await sock.write(frame(CLOSE, close_payload(1000)))
            while (received := await sock.read_frame()).opcode == TEXT:
                pass  # member_added of later members
            assert received.close_code == 1000, received
            await sock.read_eof()
        else:
            sock.writer.transport.abort()

    await asyncio.gather(*(one(number) for number in range(150)))
    node = server.node
    await wait_until(lambda: not node.connections and node.registry.is_empty() and not node.users)
    traffic = node.metrics.app(APP.id)
    assert traffic.connections_opened == sum(traffic.closed_by_code.values()) == 150
    # The presence channel is empty for a new member too: it sees only itself.
    sock, socket_id = await connected(server)
    auth, channel_data = presence_auth(sdk, socket_id, "presence-crowd", {"user_id": "last"})
    await sock.write(frame(TEXT, subscribe_frame("presence-crowd", auth=auth, channel_data=channel_data)))
    succeeded = await expect_event(sock, "pusher_internal:subscription_succeeded")
    assert inner(succeeded)["presence"]["count"] == 1
    sock.close()


async def test_request_head_over_the_limit_is_refused(server: RelayServer, transport: str) -> None:
    http = await RawSocket.open(server.port)
    await http.write(f"GET {APP_PATH} HTTP/1.1\r\nX-Pad: {'x' * 9000}\r\n".encode())
    status, _, body = await http.read_response()
    assert status == (431 if transport == "lean" else 400), body  # aiohttp's parser answers 400
    http.close()
    sock, _ = await connected(server)  # the server is fine
    sock.close()
