"""Notification feed backend: users log in for a JWT; notifications live in SQLite and are
published to the owner's `private-user.<id>` channel as `notification.created`; reading one
publishes `notification.read` and `unread_count.updated`; an admin broadcasts a maintenance
alert to every user. Run it with ./start (relay and this server together).

    PORT=8000 DATABASE=notifications.db PUSHER_HOST=127.0.0.1 PUSHER_PORT=8080 \
        python -m examples.notifications.server
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from examples.accounts import User, all_users, json_error, read_json
from examples.page_app import DB, RELAY, create_page_app, current_user, refuse
from examples.relay_link import Publisher

STATIC = Path(__file__).resolve().parent / "static"
LATEST = 20  # what the page shows, and what it refetches after a reconnect
DEMO_USERS = [("alice", False, 1), ("bob", False, 1), ("admin", True, 1)]

SCHEMA = """
create table if not exists notifications (
    id integer primary key,
    user_id integer not null references users(id),
    kind text not null,               -- 'message' or 'maintenance'
    title text not null,
    body text not null default '',
    created_at real not null,
    read_at real
);
create index if not exists notifications_by_user on notifications (user_id, id);
"""

PUBLISHER = web.AppKey("publisher", Publisher)


def user_channel(user_id: int) -> str:
    return f"private-user.{user_id}"


def notification_json(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "title": row["title"],
        "body": row["body"],
        "created_at": row["created_at"],
        "read": row["read_at"] is not None,
    }


def unread_count(db: sqlite3.Connection, user_id: int) -> int:
    row = db.execute("select count(*) from notifications where user_id = ? and read_at is null", (user_id,)).fetchone()
    return int(row[0])


def channel_policy(user: User, channel: str) -> None:
    """A user may subscribe to their own private-user channel only."""
    if channel != user_channel(user.id):
        raise refuse(user, channel)


async def users(request: web.Request) -> web.Response:
    current_user(request)
    return web.json_response({"users": [u.as_json() for u in all_users(request.app[DB])]})


async def latest(request: web.Request) -> web.Response:
    """The latest notifications and the unread count: the page's state on every (re)connect."""
    user = current_user(request)
    db = request.app[DB]
    rows = db.execute(
        "select * from notifications where user_id = ? order by id desc limit ?", (user.id, LATEST)
    ).fetchall()
    return web.json_response(
        {"notifications": [notification_json(r) for r in rows], "unread_count": unread_count(db, user.id)}
    )


async def create(request: web.Request) -> web.Response:
    """Send a notification to one user (`{"user_id", "title", "body"}`)."""
    sender = current_user(request)
    body = await read_json(request)
    user_id, title = body.get("user_id"), body.get("title")
    text = body.get("body", "")
    if not isinstance(user_id, int) or not isinstance(title, str) or not title.strip() or not isinstance(text, str):
        raise json_error(400, 'send {"user_id": <int>, "title": <non-empty string>, "body": <string>}')
    db = request.app[DB]
    if db.execute("select 1 from users where id = ?", (user_id,)).fetchone() is None:
        raise json_error(404, f"no user {user_id}")
    created = await store_and_publish(request.app, [user_id], "message", title.strip(), text or f"from {sender.name}")
    return web.json_response(created[0], status=201)


async def broadcast_maintenance(request: web.Request) -> web.Response:
    """An admin's maintenance alert, stored for and published to every user."""
    if not current_user(request).is_admin:
        raise json_error(403, "only an admin can broadcast")
    body = await read_json(request)
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise json_error(400, 'send {"message": <non-empty string>}')
    recipients = [u.id for u in all_users(request.app[DB])]
    created = await store_and_publish(request.app, recipients, "maintenance", "Maintenance", message.strip())
    return web.json_response({"sent": len(created)}, status=201)


async def mark_read(request: web.Request) -> web.Response:
    user = current_user(request)
    db = request.app[DB]
    try:
        notification_id = int(request.match_info["id"])
    except ValueError:
        raise json_error(400, "notification id must be a number") from None
    row = db.execute("select * from notifications where id = ? and user_id = ?", (notification_id, user.id)).fetchone()
    if row is None:
        raise json_error(404, f"no notification {notification_id} for {user.name}")
    if row["read_at"] is None:
        db.execute("update notifications set read_at = ? where id = ?", (time.time(), notification_id))
        db.commit()
    count = unread_count(db, user.id)
    channel = user_channel(user.id)
    await request.app[PUBLISHER].trigger_batch(
        [
            {"channel": channel, "name": "notification.read", "data": {"id": notification_id}},
            {"channel": channel, "name": "unread_count.updated", "data": {"unread_count": count}},
        ]
    )
    return web.json_response({"id": notification_id, "unread_count": count})


async def store_and_publish(
    app: web.Application, user_ids: list[int], kind: str, title: str, text: str
) -> list[dict[str, Any]]:
    """Store one notification per user, commit, then publish: a page that refetches after its own
    reconnect reads the row even when it missed the event."""
    db = app[DB]
    now = time.time()
    created: list[tuple[int, dict[str, Any]]] = []
    for user_id in user_ids:
        cursor = db.execute(
            "insert into notifications (user_id, kind, title, body, created_at) values (?, ?, ?, ?, ?)",
            (user_id, kind, title, text, now),
        )
        row = db.execute("select * from notifications where id = ?", (cursor.lastrowid,)).fetchone()
        created.append((user_id, notification_json(row)))
    db.commit()
    events: list[dict[str, Any]] = []
    for user_id, notification in created:
        channel = user_channel(user_id)
        events.append({"channel": channel, "name": "notification.created", "data": notification})
        events.append(
            {"channel": channel, "name": "unread_count.updated", "data": {"unread_count": unread_count(db, user_id)}}
        )
    await app[PUBLISHER].trigger_batch(events)
    return [notification for _, notification in created]


def create_app(db_path: str) -> web.Application:
    app = create_page_app(
        static=STATIC, db_path=db_path, demo_users=DEMO_USERS, schema=SCHEMA, channel_policy=channel_policy
    )
    app[PUBLISHER] = Publisher(app[RELAY].client())
    app.router.add_get("/api/users", users)
    app.router.add_get("/api/notifications", latest)
    app.router.add_post("/api/notifications", create)
    app.router.add_post("/api/notifications/{id}/read", mark_read)
    app.router.add_post("/api/maintenance", broadcast_maintenance)
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    port = int(os.environ.get("PORT", "8000"))
    web.run_app(create_app(os.environ.get("DATABASE", "notifications.db")), host="127.0.0.1", port=port)
