"""Presence channels through Laravel Echo's join(): here, joining, leaving."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.harness import Clients, echo_subscribe
from tests.support import RelayProcess, scaled

pytestmark = [pytest.mark.auth_features, pytest.mark.timeout(scaled(60))]

# As Laravel's presence channel callbacks return them: user_id a string, info the user's fields.
ANN: dict[str, Any] = {"user_id": "1", "user_info": {"id": 1, "name": "Ann"}}
BOB: dict[str, Any] = {"user_id": "2", "user_info": {"id": 2, "name": "Bob"}}


def by_id(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(members, key=lambda member: member["id"])


async def test_echo_join_lists_members_in_here_and_announces_newcomers(relay: RelayProcess, clients: Clients) -> None:
    ann = await clients.echo(relay.port, name="ann", user=ANN)
    await echo_subscribe(ann, "presence", "room.5")
    ann_here = await ann.expect(type="here", name="room.5")
    assert ann_here["members"] == [ANN["user_info"]]

    bob = await clients.echo(relay.port, name="bob", user=BOB)
    await echo_subscribe(bob, "presence", "room.5")

    bob_here = await bob.expect(type="here", name="room.5")
    assert by_id(bob_here["members"]) == [ANN["user_info"], BOB["user_info"]]
    joining = await ann.expect(type="joining", name="room.5")
    assert joining["member"] == BOB["user_info"]
    # Nobody is announced to themselves.
    assert [line for line in bob.seen if line["type"] == "joining"] == []


async def test_echo_leaving_fires_when_a_member_disconnects(relay: RelayProcess, clients: Clients) -> None:
    ann = await clients.echo(relay.port, name="ann", user=ANN)
    bob = await clients.echo(relay.port, name="bob", user=BOB)
    await echo_subscribe(ann, "presence", "room.5")
    await echo_subscribe(bob, "presence", "room.5")
    await ann.expect(type="joining", name="room.5")

    await bob.send({"op": "disconnect"})

    leaving = await ann.expect(type="leaving", name="room.5")
    assert leaving["member"] == BOB["user_info"]
