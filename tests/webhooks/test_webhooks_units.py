"""The pure parts of webhooks: body and signature, records, targets, backoff, held leaves in memory, config."""

from __future__ import annotations

import time
from pathlib import Path

import pusher
import pytest

from relay.config import ConfigError, WebhookConfig, WebhookSettings, load_config
from relay.webhooks.model import Cancel, DeadLetter, Delivery, Hold, hold_key
from relay.webhooks.sender import webhook_body, webhook_headers
from relay.webhooks.store import MemoryStore
from relay.webhooks.targets import ALL_EVENTS, Batch, Target, backoff, first_backoff, interest, wanted


def test_signature_matches_the_worked_example_of_protocol_section_7() -> None:
    delivery = Delivery("id", "1001", "http://127.0.0.1/", ({"name": "channel_occupied", "channel": "my-channel"},), 0)
    body = webhook_body(delivery, 1700000000000)
    assert body == b'{"time_ms":1700000000000,"events":[{"name":"channel_occupied","channel":"my-channel"}]}'
    headers = webhook_headers("key", "7ad3773142a6692b25b8", body, "id")
    assert headers["X-Pusher-Signature"] == "cb2683f8aaa9de8cdbc72838077bd6ac7c3e64c57fe83fb7b13812a1bd5df142"


def test_configured_headers_cannot_replace_the_signed_ones() -> None:
    extra = [("Authorization", "Bearer t"), ("Content-Type", "text/plain"), ("X-Pusher-Key", "forged")]
    headers = webhook_headers("key", "secret", b"{}", "delivery-1", extra)
    assert headers == {
        "Authorization": "Bearer t",
        "Content-Type": "application/json",
        "X-Pusher-Key": "key",
        "X-Pusher-Signature": headers["X-Pusher-Signature"],
        "X-Relay-Delivery-Id": "delivery-1",
    }


def test_a_fresh_body_is_accepted_by_the_python_sdk() -> None:
    delivery = Delivery("id", "1001", "u", ({"name": "member_added", "channel": "presence-a", "user_id": "1"},), 0)
    body = webhook_body(delivery, int(time.time() * 1000))
    headers = webhook_headers("key", "secret", body, "id")
    client = pusher.Pusher(app_id="1001", key="key", secret="secret")
    payload = client.validate_webhook(key="key", signature=headers["X-Pusher-Signature"], body=body.decode())
    assert payload is not None and payload["events"] == list(delivery.events)


def test_records_round_trip_and_replay_keeps_the_id() -> None:
    event = {"name": "client_event", "channel": "private-a", "event": "client-x", "data": "{}", "socket_id": "1.2"}
    delivery = Delivery("abc", "1001", "http://h/", (event,), 5, first_attempt_ms=7, attempts=3)
    assert Delivery.decode(delivery.encode()) == delivery
    letter = DeadLetter(delivery, 9, "HTTP 500")
    assert DeadLetter.decode(letter.encode()) == letter
    assert delivery.replayed() == Delivery("abc", "1001", "http://h/", (event,), 5)


def test_hold_keys_tell_channels_and_members_apart() -> None:
    vacated = hold_key("1", {"name": "channel_vacated", "channel": "presence-a"})
    assert vacated == hold_key("1", {"name": "channel_occupied", "channel": "presence-a"})
    removed = hold_key("1", {"name": "member_removed", "channel": "presence-a", "user_id": 'a","b'})
    assert removed == hold_key("1", {"name": "member_added", "channel": "presence-a", "user_id": 'a","b'})
    assert len({vacated, removed, hold_key("2", {"name": "channel_vacated", "channel": "presence-a"})}) == 3


def test_interest_adds_the_partner_of_a_held_pair() -> None:
    only_joins = (Target("u", frozenset({"channel_occupied", "client_event"}), "", ()),)
    assert interest(only_joins, leaves_held=True) == {"channel_occupied", "channel_vacated", "client_event"}
    assert interest(only_joins, leaves_held=False) == {"channel_occupied", "client_event"}
    assert interest((Target("u", frozenset(), "", ()),), leaves_held=True) == {ALL_EVENTS}


def test_target_filters_by_type_and_prefix() -> None:
    target = Target.from_config(WebhookConfig("u", ("member_added",), "presence-"))
    assert target.wants({"name": "member_added", "channel": "presence-a", "user_id": "1"})
    assert not target.wants({"name": "member_added", "channel": "private-a"})
    assert not target.wants({"name": "channel_occupied", "channel": "presence-a"})


def test_subscription_count_is_opt_in() -> None:
    everything = Target("u", frozenset(), "", ())
    counts = Target("v", frozenset({"subscription_count"}), "", ())
    count = {"name": "subscription_count", "channel": "news", "subscription_count": 2}
    assert not everything.wants(count), "an empty event_types list means every type but subscription_count"
    assert everything.wants({"name": "cache_miss", "channel": "cache-a"})
    assert counts.wants(count)
    assert not wanted(interest((everything,), leaves_held=True), "subscription_count")
    both = interest((everything, counts), leaves_held=True)
    assert wanted(both, "subscription_count") and wanted(both, "member_removed")


def test_batch_keeps_the_newest_subscription_count_and_one_cache_miss() -> None:
    batch = Batch(0.0)
    assert batch.add({"name": "subscription_count", "channel": "a", "subscription_count": 1})
    assert batch.add({"name": "cache_miss", "channel": "cache-a"})
    assert not batch.add({"name": "subscription_count", "channel": "a", "subscription_count": 2})
    assert not batch.add({"name": "cache_miss", "channel": "cache-a"})
    assert batch.events == [
        {"name": "subscription_count", "channel": "a", "subscription_count": 2},
        {"name": "cache_miss", "channel": "cache-a"},
    ]


def test_backoff_doubles_up_to_a_cap_within_pushers_five_minutes() -> None:
    settings = WebhookSettings()
    assert first_backoff(settings) == 1.0
    delays = [backoff(settings, attempts) for attempts in range(1, 12)]
    assert 0.8 <= delays[0] <= 1.2
    assert all(delay <= 60.0 * 1.2 for delay in delays)
    nominal = 1 + 2 + 4 + 8 + 16 + 32 + 60 * 5  # doubling, then the 60 s cap
    assert 0.8 * nominal <= sum(delays) <= 1.2 * nominal  # about ten attempts fit in Pusher's 5 minutes


async def test_memory_store_cancel_drops_only_the_pending_hold() -> None:
    store = MemoryStore(10)
    vacated = {"name": "channel_vacated", "channel": "news"}
    occupied = {"name": "channel_occupied", "channel": "news"}
    first = Hold("1", vacated, "t1", 100)
    assert await store.settle([first, Cancel("1", occupied)]) == [True, True]
    assert await store.settle([Cancel("1", occupied)]) == [False]
    second = Hold("1", vacated, "t2", 200)
    assert await store.settle([second]) == [True]
    assert await store.release_due(150) == [], "the cancelled hold's entry is stale and must not fire the new one"
    assert await store.release_due(250) == [second]
    assert store.local_events == 0


def test_webhook_targets_from_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        """
[webhook]
batch_window = 0.1
leave_delay = 1
[[apps]]
id = "1"
key = "k"
secret = "s"
[[apps.webhooks]]
url = "http://127.0.0.1:9/a"
event_types = ["channel_occupied"]
channel_prefix = "private-"
headers = { Authorization = "Bearer x" }
"""
    )
    config = load_config(str(path), env={})
    assert (config.webhook.batch_window, config.webhook.leave_delay) == (0.1, 1.0)
    assert config.apps[0].webhooks == (
        WebhookConfig("http://127.0.0.1:9/a", ("channel_occupied",), "private-", (("Authorization", "Bearer x"),)),
    )
    env = {
        "RELAY_APP_ID": "2",
        "RELAY_APP_KEY": "k",
        "RELAY_APP_SECRET": "s",
        "RELAY_WEBHOOK_URL": "http://127.0.0.1:9/h",
        "RELAY_WEBHOOK_EVENT_TYPES": "member_added, member_removed",
        "RELAY_WEBHOOK_CHANNEL_PREFIX": "presence-",
    }
    assert load_config(None, env=env).apps[0].webhooks == (
        WebhookConfig("http://127.0.0.1:9/h", ("member_added", "member_removed"), "presence-"),
    )


def test_webhook_settings_from_relay_variables_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text("[webhook]\nbatch_window = 0.1\nleave_delay = 1\n")
    env = {"RELAY_WEBHOOK_LEAVE_DELAY": "0.5", "RELAY_WEBHOOK_RETRY_FOR": "60", "RELAY_WEBHOOK_QUEUE_LIMIT": "7"}
    settings = load_config(str(path), env=env).webhook
    assert (settings.batch_window, settings.leave_delay, settings.retry_for, settings.queue_limit) == (0.1, 0.5, 60, 7)
    with pytest.raises(ConfigError, match="retry_for"):
        load_config(None, env={"RELAY_WEBHOOK_RETRY_FOR": "soon"})
