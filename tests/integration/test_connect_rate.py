"""Connection rates (relay.admission) on both transports: a burst from one address is refused with 4100,
which pusher-js answers by trying again after a pause, while another address still connects; behind a
trusted proxy each X-Forwarded-For client has its own allowance, and an untrusted peer cannot claim one."""

from __future__ import annotations

from typing import Any

from tests.integration.wire import Client, connect, inner, open_socket
from tests.support.fixtures import RelayServerFactory

RATE = 5  # per second; the burst is twice that


async def refused_or_connected(url: str, **options: Any) -> int | Client:
    """4100 (the refusal, read from its pusher:error and close) or the connected client."""
    client = await open_socket(url, **options)
    frame = await client.recv()
    if frame["event"] == "pusher:connection_established":
        client.socket_id = inner(frame)["socket_id"]
        return client
    assert frame["event"] == "pusher:error", frame
    code = int(frame["data"]["code"])
    assert (await client.closed())[0] == code
    return code


async def test_a_burst_from_one_address_is_refused_while_another_connects(relay_server: RelayServerFactory) -> None:
    server = await relay_server(connect_rate_per_ip=RATE)
    results = [await refused_or_connected(server.ws_url()) for _ in range(RATE * 2 + 3)]
    assert all(isinstance(result, Client) for result in results[: RATE * 2])
    assert results[RATE * 2 :] == [4100, 4100, 4100]
    # Another address (127.0.0.2 is loopback too, but a different client) still gets in.
    other = await refused_or_connected(server.ws_url(), local_addr=("127.0.0.2", 0))
    assert isinstance(other, Client)
    found = server.node.metrics.app("1001").refused_by_reason
    assert found == {"rate_limited_ip": 3}


async def test_forwarded_clients_behind_a_trusted_proxy_each_have_their_own_allowance(
    relay_server: RelayServerFactory,
) -> None:
    server = await relay_server(connect_rate_per_ip=RATE)  # 127.0.0.1 is a trusted proxy by default
    for client in ("198.51.100.1", "198.51.100.2"):
        headers = {"X-Forwarded-For": client}
        results = [await refused_or_connected(server.ws_url(), additional_headers=headers) for _ in range(RATE * 2)]
        assert all(isinstance(result, Client) for result in results), (client, results)
    assert await refused_or_connected(server.ws_url(), additional_headers={"X-Forwarded-For": "198.51.100.1"}) == 4100


async def test_an_untrusted_peer_cannot_claim_another_address(relay_server: RelayServerFactory) -> None:
    server = await relay_server(connect_rate_per_ip=RATE, trusted_proxies=())
    spoofed = [
        await refused_or_connected(server.ws_url(), additional_headers={"X-Forwarded-For": f"198.51.100.{n}"})
        for n in range(RATE * 2 + 1)
    ]
    assert spoofed[-1] == 4100  # all counted against 127.0.0.1, whatever the header says


async def test_no_limit_by_default(relay_server: RelayServerFactory) -> None:
    server = await relay_server()
    for _ in range(60):
        client = await connect(server.ws_url())
        await client.close()
