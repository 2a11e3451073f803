"""relay.alerts against a real HTTP receiver standing in for Slack's incoming webhooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from relay.alerts import AlertKind, Alerts
from tests.support.http import local_http_server


@dataclass
class FakeSlack:
    url: str
    broken_url: str
    texts: list[str] = field(default_factory=list)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[str]:
        async with asyncio.timeout(timeout):
            while len(self.texts) < count:
                await asyncio.sleep(0.01)
        return self.texts


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    texts: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        assert request.content_type == "application/json"
        texts.append(body["text"])
        return web.Response(text="ok")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="no")

    app = web.Application()
    app.router.add_post("/services/T0/B0/hook", hook)
    app.router.add_post("/broken", broken)
    async with local_http_server(app) as base:
        yield FakeSlack(f"{base}/services/T0/B0/hook", f"{base}/broken", texts)


async def test_one_message_then_a_summary_of_suppressed_repeats(slack: FakeSlack) -> None:
    alerts = Alerts([slack.url], min_interval=0.5, source="node-a")
    alerts.start()
    try:
        for _ in range(3):
            alerts.raise_alert(AlertKind.REDIS_LOST, "Redis connection lost")
        texts = await slack.wait_for(1)
        assert texts == ["relay node-a: Redis connection lost"]
        await asyncio.sleep(0.2)
        assert len(slack.texts) == 1  # the repeats are held back within the interval

        texts = await slack.wait_for(2)
        assert "2 more redis_lost alerts" in texts[1]
        assert alerts.counts.suppressed == 2
    finally:
        await alerts.close()


async def test_kinds_are_limited_separately(slack: FakeSlack) -> None:
    alerts = Alerts([slack.url], min_interval=60, source="node-a")
    alerts.start()
    try:
        alerts.raise_alert(AlertKind.REDIS_LOST, "Redis connection lost")
        alerts.raise_alert(AlertKind.REDIS_RECOVERED, "Redis is back after 3.2 s")
        texts = await slack.wait_for(2)
        assert texts == ["relay node-a: Redis connection lost", "relay node-a: Redis is back after 3.2 s"]
    finally:
        await alerts.close()


async def test_a_failing_url_is_counted_and_does_not_stop_the_others(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = Alerts([slack.broken_url, slack.url], min_interval=0, source="node-a")
    alerts.start()
    try:
        alerts.raise_alert(AlertKind.WEBHOOK_FAILING, "webhook target example.com failing")
        await slack.wait_for(1)
        await asyncio.sleep(0.05)
        assert alerts.counts.failed == 1
        assert alerts.counts.posted == 1
        # The hook URL is a credential: only its host is logged.
        assert "alert not delivered to 127.0.0.1: HTTP 500" in caplog.text
        assert "/broken" not in caplog.text
    finally:
        await alerts.close()


async def test_unreachable_url_never_blocks_the_caller(slack: FakeSlack) -> None:
    # A port nobody listens on: raise_alert returns at once; the post fails in the background.
    alerts = Alerts(["http://127.0.0.1:9/hook"], min_interval=0, source="node-a")
    alerts.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(1000):
            alerts.raise_alert(AlertKind.SLOW_CONSUMERS, "slow consumers")
        assert loop.time() - started < 0.5
        async with asyncio.timeout(5):
            while alerts.counts.failed == 0:
                await asyncio.sleep(0.01)
        assert alerts.counts.dropped > 0  # the bounded queue held at most QUEUE_LIMIT of the 1000
    finally:
        await alerts.close(flush_timeout=0)


def test_disabled_without_urls() -> None:
    alerts = Alerts([], min_interval=0)
    alerts.raise_alert(AlertKind.NODE_PRESUMED_DEAD, "node gone")
    assert not alerts.enabled
    assert alerts.counts.by_kind == {}
