"""What an operator sees (docs/monitoring.md): /metrics after real traffic from pusher-js and the `pusher`
SDK, read with prometheus-client's parser; JSON log lines; alerts to a Slack stand-in during a Redis
outage; and the shipped dashboard and alert rules naming only metrics relay exports."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web

from tests.clients.harness import APP_ID, APP_KEY, Clients, app_config, python_trigger, subscribe
from tests.integration.wire import connect
from tests.support import RelayProcess, scaled
from tests.support.fixtures import RelayFactory
from tests.support.http import local_http_server
from tests.support.metrics import family_names, scrape_samples, total
from tests.support.redis import RedisProcess

pytestmark = pytest.mark.timeout(scaled(90))

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"


async def scrape(relay: RelayProcess, accept: str = "") -> str:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as http, http.get(f"{relay.http_url}/metrics", headers=headers) as response:
        assert response.status == 200
        return await response.text()


async def test_metrics_count_what_clients_and_the_sdk_did(relay: RelayProcess, clients: Clients) -> None:
    staying = await clients.pusher_js(relay.port, name="staying")
    leaving = await clients.pusher_js(relay.port, name="leaving")
    for client in (staying, leaving):
        await subscribe(client, "news")
    await subscribe(staying, "private-orders.1")
    await leaving.send({"op": "disconnect"})
    for n in range(3):
        await python_trigger(relay.port, "news", "news.published", {"n": n})
    for _ in range(3):
        await staying.expect(type="event", channel="news", event="news.published")
    with pytest.raises(Exception):  # noqa: B017 - any refusal: the key is unknown
        await connect(relay.ws_url("no-such-key"))

    app = {"app_id": APP_ID}

    async def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        for _ in range(100):
            found = scrape_samples(await scrape(relay))
            if total(found, "relay_connections", **app) == 1:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError("the disconnected client is still counted")

    found = await settled()
    assert total(found, "relay_connections_opened_total", **app) == 2
    assert total(found, "relay_connections_closed_total", **app) == 1
    assert total(found, "relay_connections_refused_total", app_id="", reason="unknown_app") == 1
    assert total(found, "relay_api_events_total", **app) == 3
    # Three events to the one remaining subscriber of "news".
    assert total(found, "relay_messages_sent_total", **app) == 3
    assert total(found, "relay_http_requests_total", endpoint="events", status="200", **app) == 3
    assert total(found, "relay_http_request_duration_seconds_count", endpoint="events") == 3
    assert total(found, "relay_publish_to_write_seconds_count") == 3
    assert total(found, "relay_subscriptions", kind="public", **app) == 1
    assert total(found, "relay_subscriptions", kind="private", **app) == 1
    assert total(found, "relay_channels", **app) == 2
    assert total(found, "relay_messages_received_total", **app) >= 3  # three subscribes, at least
    assert total(found, "relay_ready") == 1


async def test_openmetrics_output_parses(relay: RelayProcess) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    text = await scrape(relay, "application/openmetrics-text; version=1.0.0")
    assert text.rstrip().endswith("# EOF")
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"relay_connections", "relay_connections_opened", "relay_http_request_duration_seconds"} <= names


@dataclass
class FakeSlack:
    url: str
    texts: list[str] = field(default_factory=list)

    async def wait_for(self, pattern: str, timeout: float) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for text in self.texts:
                    if re.search(pattern, text):
                        return text
                await asyncio.sleep(0.05)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    texts: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        texts.append((await request.json())["text"])
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/services/T0/B0/secret-token", hook)
    async with local_http_server(app) as base:
        yield FakeSlack(f"{base}/services/T0/B0/secret-token", texts)


async def test_redis_outage_gives_one_alert_when_lost_and_one_when_back(
    relay_factory: RelayFactory, redis_process: RedisProcess, slack: FakeSlack
) -> None:
    config = {
        **app_config(),
        "redis_url": redis_process.url,
        "redis": {"node_timeout": 3},
        "alerts": {"urls": [slack.url], "min_interval": 60},
    }
    relay = relay_factory(config, extra_args=["--log-format", "json"])
    redis_process.kill()
    lost = await slack.wait_for("lost Redis", scaled(15))
    await asyncio.sleep(1.0)  # the reconnect attempts fail meanwhile: no second "lost" message
    redis_process.restart()
    back = await slack.wait_for(r"is back after \d+\.\d s", scaled(20))
    assert [text for text in slack.texts if "Redis" in text] == [lost, back]
    assert "secret-token" not in relay.log_text()

    found = scrape_samples(await scrape(relay))
    assert total(found, "relay_redis_outages_total") == 1
    assert total(found, "relay_redis_reconnects_total") == 1
    assert total(found, "relay_redis_connected") == 1
    assert total(found, "relay_alerts_posted_total") == 2

    # --log-format json: every log line is one JSON object with the fields the docs promise.
    lines = [line for line in relay.log_text().splitlines() if line.startswith("{")]
    records = [orjson.loads(line) for line in lines]
    assert records, relay.log_text()
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
    messages = [record["message"] for record in records]
    assert any(message.startswith("apps: ") for message in messages)
    assert any("lost Redis" in message for message in messages)


def _expressions() -> list[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [variable["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return expressions


async def test_dashboard_and_alert_rules_name_only_exported_metrics(
    relay_factory: RelayFactory, redis_process: RedisProcess
) -> None:
    # With Redis and a webhook, so every family relay can export is there.
    config = app_config(webhooks=[{"url": "http://127.0.0.1:9/hook"}])
    relay = relay_factory({**config, "redis_url": redis_process.url})
    exported = family_names(await scrape(relay))
    suffixes = ("_total", "_bucket", "_sum", "_count")
    named = {name for expression in _expressions() for name in re.findall(r"\brelay_[a-z_]+", expression)}
    assert len(named) > 15
    missing = sorted(
        name for name in named if name not in exported and not any(name.removesuffix(s) in exported for s in suffixes)
    )
    assert missing == []
    assert APP_KEY  # the app under test is the harness's
