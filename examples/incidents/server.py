"""Incident board backend: users log in for a JWT and join the presence channel `presence-duty`
(who is on duty); browsers raise incidents to each other as `client-incident` client events.
relay's webhooks come back here: every incident is stored in SQLite, `member_added` and
`member_removed` are logged, and high and medium urgency incidents are posted to a
Slack-compatible incoming-webhook URL. Run it with ./start (relay and this server together).

    PORT=8000 DATABASE=incidents.db SLACK_WEBHOOK_URL=https://hooks.slack.com/services/… \
        python -m examples.incidents.server
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pusher
from aiohttp import web

from examples.accounts import User, json_error
from examples.page_app import DB, RELAY, create_page_app, current_user, refuse

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
DUTY_CHANNEL = "presence-duty"
INCIDENT_EVENT = "client-incident"
URGENCIES = ("low", "medium", "high")
POSTED_TO_SLACK = ("medium", "high")
DEMO_USERS = [("alice", False, 1), ("bob", False, 1), ("carol", False, 1)]

SCHEMA = """
create table if not exists incidents (
    id text primary key,              -- chosen by the raising page, so a retried webhook stores it once
    type text not null,
    location text not null,
    description text not null,
    urgency text not null,
    user_id text,
    socket_id text,
    raised_at_ms integer not null,
    slack text not null               -- 'sent', 'failed', or 'not sent' (low urgency or no URL)
);
create table if not exists duty_log (
    id integer primary key,
    user_id text not null,
    event text not null,              -- 'member_added' or 'member_removed'
    time_ms integer not null
);
create table if not exists deliveries (
    id text primary key               -- X-Relay-Delivery-Id: a retried delivery is processed once
);
"""

SLACK_URL = web.AppKey("slack_url", str)
HTTP = web.AppKey("http", aiohttp.ClientSession)


def channel_policy(user: User, channel: str) -> dict[str, object]:
    """Everyone may join the duty roster, with their name as user_info; no other channel exists."""
    if channel != DUTY_CHANNEL:
        raise refuse(user, channel)
    return {"user_id": str(user.id), "user_info": {"name": user.name}}


async def incidents(request: web.Request) -> web.Response:
    """Stored incidents, newest first: what a page shows when it (re)connects."""
    current_user(request)
    rows = request.app[DB].execute("select * from incidents order by raised_at_ms desc limit 50").fetchall()
    return web.json_response({"incidents": [incident_json(r) for r in rows]})


def incident_json(row: sqlite3.Row) -> dict[str, Any]:
    keys = ("id", "type", "location", "description", "urgency", "user_id", "raised_at_ms", "slack")
    return {key: row[key] for key in keys}


async def relay_webhook(request: web.Request) -> web.Response:
    """relay's webhooks: checked with the `pusher` SDK's validate_webhook (key and HMAC signature)."""
    body = await request.read()
    client: pusher.Pusher = request.app[RELAY].client()
    try:
        payload = client.validate_webhook(
            request.headers.get("X-Pusher-Key", ""), request.headers.get("X-Pusher-Signature", ""), body
        )
    except (ValueError, TypeError):
        payload = None
    if payload is None:
        raise json_error(401, "webhook signature or key is not valid")
    db = request.app[DB]
    delivery_id = request.headers.get("X-Relay-Delivery-Id")
    if delivery_id is not None:
        if db.execute("select 1 from deliveries where id = ?", (delivery_id,)).fetchone() is not None:
            return web.json_response({"duplicate": delivery_id})
        db.execute("insert into deliveries (id) values (?)", (delivery_id,))
    stored = []
    for event in payload.get("events", []):
        name = event.get("name")
        if name in ("member_added", "member_removed") and event.get("channel") == DUTY_CHANNEL:
            db.execute(
                "insert into duty_log (user_id, event, time_ms) values (?, ?, ?)",
                (str(event.get("user_id")), name, int(payload.get("time_ms", 0))),
            )
        elif name == "client_event" and event.get("event") == INCIDENT_EVENT:
            incident = parse_incident(event, int(payload.get("time_ms", 0)))
            if incident is None:
                logger.warning("ignored a malformed incident from socket %s", event.get("socket_id"))
            elif store_incident(db, incident):
                stored.append(incident)
    db.commit()
    for incident in stored:
        await notify_slack(request.app, incident)
    return web.json_response({"stored": len(stored)})


def parse_incident(event: dict[str, Any], time_ms: int) -> dict[str, Any] | None:
    """The incident in a client_event webhook (its `data` is a JSON string), or None when malformed."""
    try:
        data = json.loads(event.get("data") or "")
    except (TypeError, ValueError):
        return None
    fields = ("id", "type", "location", "description", "urgency")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        return None
    if data["urgency"] not in URGENCIES or not data["id"]:
        return None
    incident = {f: data[f][:500] for f in fields}
    incident |= {"user_id": event.get("user_id"), "socket_id": event.get("socket_id"), "raised_at_ms": time_ms}
    return incident


def store_incident(db: sqlite3.Connection, incident: dict[str, Any]) -> bool:
    """Insert unless an incident with this id is stored already; True when inserted."""
    cursor = db.execute(
        "insert or ignore into incidents (id, type, location, description, urgency, user_id, socket_id,"
        " raised_at_ms, slack) values (:id, :type, :location, :description, :urgency, :user_id, :socket_id,"
        " :raised_at_ms, 'pending')",
        incident,
    )
    return cursor.rowcount == 1


async def notify_slack(app: web.Application, incident: dict[str, Any]) -> None:
    """Post medium and high urgency incidents as `{"text": …}`, the incoming-webhook format, and
    record the outcome on the incident."""
    url = app[SLACK_URL]
    outcome = "not sent"
    if url and incident["urgency"] in POSTED_TO_SLACK:
        text = (
            f"[{incident['urgency'].upper()}] {incident['type']} at {incident['location']}: {incident['description']}"
        )
        try:
            async with app[HTTP].post(url, json={"text": text}) as response:
                outcome = "sent" if response.status < 300 else "failed"
        except (aiohttp.ClientError, TimeoutError):
            outcome = "failed"
        if outcome == "failed":
            logger.warning("posting incident %s to Slack failed", incident["id"])
    app[DB].execute("update incidents set slack = ? where id = ?", (outcome, incident["id"]))
    app[DB].commit()


async def http_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        app[HTTP] = session
        yield


def create_app(db_path: str) -> web.Application:
    app = create_page_app(
        static=STATIC,
        db_path=db_path,
        demo_users=DEMO_USERS,
        schema=SCHEMA,
        channel_policy=channel_policy,
        page_config={"channel": DUTY_CHANNEL},
    )
    app[SLACK_URL] = os.environ.get("SLACK_WEBHOOK_URL", "")
    app.cleanup_ctx.append(http_client)
    app.router.add_get("/api/incidents", incidents)
    app.router.add_post("/webhooks/relay", relay_webhook)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if not os.environ.get("SLACK_WEBHOOK_URL"):
        logger.info("SLACK_WEBHOOK_URL is not set: high and medium incidents are stored but not posted")
    port = int(os.environ.get("PORT", "8000"))
    web.run_app(create_app(os.environ.get("DATABASE", "incidents.db")), host="127.0.0.1", port=port)
