"""Demo accounts for the example backends: users in SQLite, password login that answers a JWT,
and reading that JWT back from an `Authorization: Bearer` header (or a cookie, as Laravel's session)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

import jwt
from aiohttp import web

# Every demo user has this password; the page's login form says so.
DEMO_PASSWORD = "password"
TOKEN_LIFETIME = 12 * 3600  # seconds
_ALGORITHM = "HS256"

SCHEMA = """
create table if not exists users (
    id integer primary key,
    name text not null unique,
    password_hash text not null,
    is_admin integer not null default 0,
    tenant_id integer not null default 1
);
"""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    is_admin: bool
    tenant_id: int

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "is_admin": self.is_admin, "tenant_id": self.tenant_id}


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 100_000)
    return f"{salt.hex()}:{digest.hex()}"


def is_password(password: str, stored: str) -> bool:
    salt_hex, _ = stored.split(":", 1)
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt_hex)), stored)


def seed_users(db: sqlite3.Connection, users: Iterable[tuple[str, bool, int]]) -> None:
    """Create (name, is_admin, tenant_id) users with DEMO_PASSWORD unless they exist."""
    db.executescript(SCHEMA)
    for name, is_admin, tenant_id in users:
        if db.execute("select 1 from users where name = ?", (name,)).fetchone() is None:
            db.execute(
                "insert into users (name, password_hash, is_admin, tenant_id) values (?, ?, ?, ?)",
                (name, hash_password(DEMO_PASSWORD), int(is_admin), tenant_id),
            )
    db.commit()


def find_user(db: sqlite3.Connection, user_id: int) -> User | None:
    row = db.execute("select id, name, is_admin, tenant_id from users where id = ?", (user_id,)).fetchone()
    return None if row is None else User(row[0], row[1], bool(row[2]), row[3])


def all_users(db: sqlite3.Connection) -> list[User]:
    rows = db.execute("select id, name, is_admin, tenant_id from users order by id").fetchall()
    return [User(r[0], r[1], bool(r[2]), r[3]) for r in rows]


def log_in(db: sqlite3.Connection, name: str, password: str) -> User | None:
    row = db.execute("select id, password_hash from users where name = ?", (name,)).fetchone()
    if row is None or not is_password(password, row[1]):
        return None
    return find_user(db, row[0])


class Tokens:
    """Issues and checks the HS256 JWTs the pages carry (`sub` is the user id)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    @classmethod
    def from_env(cls) -> Tokens:
        # A random secret per start is fine for a demo: logging in again after a restart is cheap.
        return cls(os.environ.get("JWT_SECRET") or secrets.token_urlsafe(32))

    def issue(self, user: User) -> str:
        now = int(time.time())
        return jwt.encode({"sub": str(user.id), "iat": now, "exp": now + TOKEN_LIFETIME}, self._secret, _ALGORITHM)

    def user_id(self, token: str) -> int | None:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[_ALGORITHM], options={"require": ["sub", "exp"]})
            return int(claims["sub"])
        except (jwt.PyJWTError, ValueError):
            return None


def json_error(status: int, message: str) -> web.HTTPException:
    """An HTTP error whose body is `{"error": message}`."""
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound}[status]
    return cls(text=json.dumps({"error": message}), content_type="application/json")


def request_user(request: web.Request, db: sqlite3.Connection, tokens: Tokens, cookie: str = "") -> User:
    """The user whose JWT came with the request (bearer header, else cookie `cookie`), or a 401."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if not token and cookie:
        token = request.cookies.get(cookie, "")
    if not token:
        raise json_error(401, "log in first: no bearer token")
    user_id = tokens.user_id(token)
    user = find_user(db, user_id) if user_id is not None else None
    if user is None:
        raise json_error(401, "invalid or expired token: log in again")
    return user


async def read_json(request: web.Request) -> dict[str, object]:
    try:
        body = await request.json()
    except ValueError:
        raise json_error(400, "body must be JSON") from None
    if not isinstance(body, dict):
        raise json_error(400, "body must be a JSON object")
    return body


async def read_login(request: web.Request, db: sqlite3.Connection) -> User:
    """The user named by a `{"name", "password"}` body, or a 400/401."""
    body = await read_json(request)
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        raise json_error(400, 'send {"name": ..., "password": ...}')
    user = log_in(db, name, password)
    if user is None:
        raise json_error(401, "wrong name or password")
    return user
