"""Settings: frozen dataclasses and load_config(), the only code that reads os.environ or a config file.

Sources, weakest first: defaults here, the TOML file (`--config`), Reverb's variables (`REVERB_*`),
relay's variables (`RELAY_*`), command-line flags. Every default lives in this module; the server
settings' names in every source are declared in relay/settings.py.

Over 400 lines on purpose: the coercion of loosely typed sources (TOML, environment strings) into the
frozen dataclasses and the cross-field validation belong with the dataclasses they build; the names of
each setting live in relay/settings.py.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from relay.admission import parse_networks
from relay.jwt.settings import JwtSettings, settings_problem
from relay.protocol.ids import AppId
from relay.protocol.webhook_events import WEBHOOK_EVENT_NAMES
from relay.settings import SETTINGS, Setting

WEBHOOK_EVENT_TYPES: Final = WEBHOOK_EVENT_NAMES
DEV_APP_ID: Final = AppId("1001")
DEV_APP_KEY: Final = "relay-key"
DEV_APP_SECRET: Final = "relay-secret"
DEFAULT_SIGNIN_TIMEOUT: Final = 30.0
# A drain longer than this would hold a deploy for too long (and outlast most orchestrators' stop grace).
MAX_DRAIN_WINDOW: Final = 300.0


class ConfigError(ValueError):
    """An invalid setting; the message names the field and says why."""


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    # Which of WEBHOOK_EVENT_TYPES to send; empty means all of them.
    event_types: tuple[str, ...] = ()
    # Only channels whose name starts with this prefix ("" for every channel).
    channel_prefix: str = ""
    # Extra request headers, e.g. an authorization token for the receiver.
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AppConfig:
    id: AppId
    key: str
    secret: str
    enabled: bool = True
    # Whisper / client-* events between subscribers of private and presence channels.
    enable_client_events: bool = True
    # Connections per app, counted across the cluster; 0 means no limit.
    max_connections: int = 0
    # Largest WebSocket message accepted from a client, in bytes.
    max_message_size: int = 10_000
    # Largest `data` of an event published through the HTTP API, in bytes.
    max_event_size: int = 10_240
    # Seconds of client silence before the server pings; sent to clients in connection_established.
    activity_timeout: int = 30
    # Seconds to wait for any frame after a server ping before closing with 4201.
    pong_timeout: float = 30.0
    # Origins allowed to open WebSockets; "*" or host patterns such as "*.example.com".
    allowed_origins: tuple[str, ...] = ("*",)
    max_presence_members: int = 100
    # Largest presence user_info, in bytes of JSON.
    max_presence_member_size: int = 1024
    # Client events per second per connection; 0 means no limit.
    client_event_rate: float = 10.0
    # Seconds a cache channel keeps its last event.
    cache_ttl: float = 1800.0
    # Require `pusher:signin` (soketi's enableUserAuthentication): a connection that has not signed in
    # within user_authentication_timeout seconds is closed with 4009.
    enable_user_authentication: bool = False
    # Seconds allowed for sign-in; a value > 0 also turns the requirement on by itself.
    user_authentication_timeout: float = 0.0
    # HTTP API requests per second for this app, per node; 0 means no limit. Over it: 429 + Retry-After.
    api_rate_limit: float = 0.0
    # Channels one connection may be subscribed to at once; 0 means no limit. Over it: subscription_error.
    max_channels_per_connection: int = 1000
    webhooks: tuple[WebhookConfig, ...] = ()
    # Missed-message recovery (docs/recovery.md): a signed-in or presence user who resubscribes within
    # recovery_window seconds gets the events its previous connection missed, or a relay:gap event.
    recovery: bool = False
    recovery_window: float = 120.0
    # Channel name prefixes that recover; none means every channel of the app.
    recovery_channels: tuple[str, ...] = ()
    # Per channel history bounds: events and bytes kept (events older than recovery_window go too).
    recovery_max_events: int = 1000
    recovery_max_bytes: int = 1_048_576
    # `[apps.jwt]`: relay authorises channels and sign-ins with the app's own JWTs (relay.jwt).
    jwt: JwtSettings | None = None


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    # Prefix of every Redis key and pub/sub channel, so several clusters can share one Redis.
    prefix: str = "relay"
    # Seconds after which a silent node is presumed dead and its presence members removed.
    node_timeout: float = 15.0


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    # Events are collected for this long (seconds) or up to batch_size, then sent in one request.
    batch_window: float = 0.25
    batch_size: int = 20
    # A delivery that takes longer than this (seconds) counts as failed and is retried.
    request_timeout: float = 4.0
    # Failed deliveries are retried with exponential backoff for this long (seconds), then dead-lettered.
    retry_for: float = 300.0
    # channel_vacated and member_removed wait this long (seconds) and are dropped if the channel or
    # member is back, so a page reload does not fire a leave/join pair.
    leave_delay: float = 3.0
    # Events waiting to be sent, per node; beyond this new events are dropped and counted.
    queue_limit: int = 10_000
    # On graceful shutdown, queued webhooks get at most this long (seconds) to be sent.
    shutdown_deadline: float = 5.0


@dataclass(frozen=True, slots=True)
class AlertSettings:
    # Slack-compatible incoming-webhook URLs (Slack, Mattermost, Rocket.Chat); none means no alerts.
    urls: tuple[str, ...] = ()
    # Seconds between two alerts of one kind; repeats in between are summed up in one later message.
    min_interval: float = 300.0


@dataclass(frozen=True, slots=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 8080
    # Prefix before /app/<key> and /apps/<id>, like Reverb's REVERB_SERVER_PATH.
    path: str = ""
    apps: tuple[AppConfig, ...] = ()
    redis: RedisConfig | None = None
    workers: int = 1
    log_level: str = "info"
    # "text" for people, "json" for log collectors (one object per line).
    log_format: str = "text"
    # Largest HTTP API request body, in bytes.
    max_request_size: int = 1_048_576
    # Bytes queued for a connection that stops reading before it is closed with 4100.
    max_outbound_buffer: int = 4_194_304
    # Seconds to drain connections and flush webhooks on SIGTERM.
    shutdown_timeout: float = 10.0
    # Seconds /ready answers 503 on SIGTERM before the port closes, so load balancers stop routing here first.
    shutdown_grace: float = 1.0
    # "lean": WebSocket frames on the raw transport (about 2 KB per idle connection); "aiohttp": its
    # WebSocketResponse. HTTP is served by aiohttp either way.
    transport: str = "lean"
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    # Seconds over which SIGTERM closes the connections, at random moments (paced drain); 0 closes all at once.
    drain_window: float = 10.0
    # New connections per second per client address (0: no limit); over it, pusher-js gets 4100 and backs off.
    connect_rate_per_ip: float = 0.0
    # New connections per second to this node (0: no limit), e.g. to spread a reconnect storm.
    connect_rate_per_node: float = 0.0
    # Peers whose X-Forwarded-For names the client (addresses or CIDR blocks): the proxy in front of relay.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Admin token of the live console at {path}/console; empty: no console.
    console_token: str = ""
    # Serve the console over plain HTTP to other machines too (the token then crosses the network in clear).
    console_allow_insecure: bool = False
    # Set by `--workers` for its workers (RELAY_METRICS_DIR): where they share their /metrics figures.
    metrics_dir: str = ""
    # True when no app was configured and the development app was generated.
    dev_app: bool = False


# Typed construction from loosely typed sources --------------------------------------------------


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Turn a TOML value or an environment string into `annotation`, or raise ConfigError naming `where`."""
    if isinstance(annotation, typing.NewType):  # AppId: coerced as the str it is
        return _coerce(value, annotation.__supertype__, where)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(value, options[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if number < 0:
            raise ConfigError(f"{where}: must not be negative, got {number}")
        return number
    if annotation is float:
        try:
            number_f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if number_f < 0:
            raise ConfigError(f"{where}: must not be negative, got {number_f}")
        return number_f
    if annotation is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # TOML `id = 1001`
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        return _coerce_tuple(value, typing.get_args(annotation), where)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return build(annotation, value, where)
    raise ConfigError(f"{where}: unsupported setting type")  # pragma: no cover


def _coerce_tuple(value: Any, args: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    item_type = args[0]
    if typing.get_origin(item_type) is tuple:  # headers: tuple[tuple[str, str], ...]
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table of names to values")
        return tuple((str(name), _coerce(text, str, f"{where}.{name}")) for name, text in value.items())
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, Mapping) or not isinstance(value, list | tuple):
        value = [value]
    return tuple(_coerce(item, item_type, f"{where}[{index}]") for index, item in enumerate(value))


def build(cls: Any, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass `cls` from `values`; unknown names and missing required ones are errors."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting" if where else f"{unknown[0]}: unknown setting")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        label = f"{where}.{f.name}" if where else f.name
        if f.name in values:
            kwargs[f.name] = _coerce(values[f.name], hints[f.name], label)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{label}: required")
    return cls(**kwargs)


# Sources ----------------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config: {path} is not valid TOML: {error}") from None


_REVERB_APP: Final = {
    "REVERB_APP_ID": "id",
    "REVERB_APP_KEY": "key",
    "REVERB_APP_SECRET": "secret",
    "REVERB_APP_ACTIVITY_TIMEOUT": "activity_timeout",
    "REVERB_APP_MAX_CONNECTIONS": "max_connections",
    "REVERB_APP_MAX_MESSAGE_SIZE": "max_message_size",
}
_TABLES: Final[dict[str, type]] = {
    "": Config,
    "redis": RedisConfig,
    "webhook": WebhookSettings,
    "alerts": AlertSettings,
}


def _env_settings(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Server settings from the environment, by TOML table ("" for top level); RELAY_* over Reverb's names."""
    values: dict[str, dict[str, Any]] = {table: {} for table in _TABLES}
    for setting in SETTINGS:
        if not setting.generic_env:
            continue
        for name in (*setting.reverb_env, setting.env):
            if env.get(name, "") != "":
                values[setting.table][setting.name] = env[name]
    return values


def setting_default(setting: Setting) -> object:
    """The default of a declared setting, read from its dataclass field."""
    if setting.key == "redis_url":
        return None  # no Redis unless asked for
    (field_,) = [f for f in dataclasses.fields(_TABLES[setting.table]) if f.name == setting.name]
    if field_.default_factory is not dataclasses.MISSING:
        return field_.default_factory()
    return field_.default


def setting_type(setting: Setting) -> type:
    """The Python type a flag's value is parsed as (str for redis_url, which has no field of its own)."""
    if setting.key == "redis_url":
        return str
    annotation = typing.get_type_hints(_TABLES[setting.table])[setting.name]
    return annotation if isinstance(annotation, type) else str


def _env_app(env: Mapping[str, str]) -> dict[str, Any]:
    """One app from REVERB_APP_* and RELAY_APP_<FIELD> (every AppConfig field has a RELAY_APP_ name)."""
    values: dict[str, Any] = {}
    for name, setting in _REVERB_APP.items():
        if env.get(name, "") != "":
            values[setting] = env[name]
    accept_from = env.get("REVERB_APP_ACCEPT_CLIENT_EVENTS_FROM", "")
    if accept_from:
        values["enable_client_events"] = accept_from.strip().lower() != "none"
    for f in dataclasses.fields(AppConfig):
        name = f"RELAY_APP_{f.name.upper()}"
        if f.name not in ("webhooks", "jwt") and env.get(name, "") != "":
            values[f.name] = env[name]
    jwt = _env_app_jwt(env)
    if jwt:
        values["jwt"] = jwt
    if env.get("RELAY_WEBHOOK_URL", ""):
        webhook: dict[str, Any] = {"url": env["RELAY_WEBHOOK_URL"]}
        if env.get("RELAY_WEBHOOK_EVENT_TYPES", ""):
            webhook["event_types"] = env["RELAY_WEBHOOK_EVENT_TYPES"]
        if env.get("RELAY_WEBHOOK_CHANNEL_PREFIX", ""):
            webhook["channel_prefix"] = env["RELAY_WEBHOOK_CHANNEL_PREFIX"]
        values["webhooks"] = [webhook]
    return values


def _env_app_jwt(env: Mapping[str, str]) -> dict[str, str]:
    """The environment app's `[apps.jwt]` table from RELAY_APP_JWT_<FIELD>."""
    return {
        f.name: env[name]
        for f in dataclasses.fields(JwtSettings)
        if env.get(name := f"RELAY_APP_JWT_{f.name.upper()}", "") != ""
    }


def _redis_url_from_env(env: Mapping[str, str]) -> str:
    """RELAY_REDIS_URL, or Reverb's REVERB_SCALING_ENABLED with its REDIS_* variables."""
    if env.get("RELAY_REDIS_URL", ""):
        return env["RELAY_REDIS_URL"]
    if env.get("REVERB_SCALING_ENABLED", "").strip().lower() not in ("1", "true", "yes", "on"):
        return ""
    if env.get("REDIS_URL", ""):
        return env["REDIS_URL"]
    host = env.get("REDIS_HOST", "127.0.0.1")
    port = env.get("REDIS_PORT", "6379")
    user = env.get("REDIS_USERNAME", "")
    password = env.get("REDIS_PASSWORD", "")
    credentials = f"{user}:{password}@" if password else ""
    return f"redis://{credentials}{host}:{port}/{env.get('REDIS_DB', '0')}"


def load_config(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge every source into a validated Config. Raises ConfigError with one clear message."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = _read_toml(Path(config_file)) if config_file else {}
    toml_apps = raw.pop("apps", [])
    if not isinstance(toml_apps, list):
        raise ConfigError("apps: expected [[apps]] tables")
    raw_redis = raw.pop("redis", None)
    env_values = _env_settings(env)
    raw.update(env_values[""])
    raw.update({name: value for name, value in (overrides or {}).items() if value is not None})

    redis_values: dict[str, Any] = dict(raw_redis) if isinstance(raw_redis, Mapping) else {}
    redis_url = str(raw.pop("redis_url", "") or "") or _redis_url_from_env(env)
    if redis_url:
        redis_values["url"] = redis_url
    redis_values.update(env_values["redis"])
    redis = build(RedisConfig, redis_values, "redis") if "url" in redis_values else None

    apps = [build(AppConfig, app, f"apps[{index}]") for index, app in enumerate(toml_apps)]
    env_app = _env_app(env)
    if env_app:
        apps.append(build(AppConfig, env_app, "environment app (REVERB_APP_* / RELAY_APP_*)"))
    dev_app = not apps
    if dev_app:
        apps.append(AppConfig(id=DEV_APP_ID, key=DEV_APP_KEY, secret=DEV_APP_SECRET))

    raw["apps"] = ()
    raw["dev_app"] = dev_app
    if "webhook" in raw and not isinstance(raw["webhook"], Mapping):
        raise ConfigError("webhook: expected a [webhook] table")
    if env_values["webhook"]:
        raw["webhook"] = {**raw.get("webhook", {}), **env_values["webhook"]}
    if "alerts" in raw and not isinstance(raw["alerts"], Mapping):
        raise ConfigError("alerts: expected an [alerts] table")
    if env_values["alerts"]:
        raw["alerts"] = {**raw.get("alerts", {}), **env_values["alerts"]}
    config: Config = build(Config, raw, "")
    config = dataclasses.replace(config, apps=tuple(apps), redis=redis)
    validate(config)
    return config


def validate(config: Config) -> None:
    """Rules that span fields; one ConfigError naming the first problem."""
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port: must be between 0 and 65535, got {config.port}")
    if config.workers < 1:
        raise ConfigError("workers: must be at least 1")
    if config.workers > 1 and config.redis is None:
        raise ConfigError("workers: more than one worker needs Redis (--redis-url) to share state")
    if config.path and (not config.path.startswith("/") or config.path.endswith("/")):
        raise ConfigError(f"path: must start with / and not end with /, got {config.path!r}")
    if config.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(f"log_level: unknown level {config.log_level!r}")
    if not 0 <= config.shutdown_grace <= config.shutdown_timeout:
        raise ConfigError(f"shutdown_grace: must be between 0 and shutdown_timeout, got {config.shutdown_grace}")
    if config.drain_window > MAX_DRAIN_WINDOW:
        raise ConfigError(f"drain_window: at most {MAX_DRAIN_WINDOW:g} seconds, got {config.drain_window:g}")
    try:
        parse_networks(config.trusted_proxies)
    except ValueError as error:
        raise ConfigError(f"trusted_proxies: {error}") from None
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"log_format: expected text or json, got {config.log_format!r}")
    for index, url in enumerate(config.alerts.urls):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"alerts.urls[{index}]: must be an http:// or https:// URL")
    if config.console_token and len(config.console_token) < 16:
        raise ConfigError("console_token: must be at least 16 characters (e.g. `openssl rand -hex 24`)")
    if config.transport not in ("lean", "aiohttp"):
        raise ConfigError(f"transport: expected lean or aiohttp, got {config.transport!r}")
    seen_ids: set[str] = set()
    seen_keys: set[str] = set()
    for index, app in enumerate(config.apps):
        where = f"apps[{index}]"
        for name in ("id", "key", "secret"):
            if not getattr(app, name):
                raise ConfigError(f"{where}.{name}: must not be empty")
        if app.id in seen_ids:
            raise ConfigError(f"{where}.id: duplicate app id {app.id!r}")
        if app.key in seen_keys:
            raise ConfigError(f"{where}.key: duplicate app key {app.key!r}")
        seen_ids.add(app.id)
        seen_keys.add(app.key)
        if app.activity_timeout < 1:
            raise ConfigError(f"{where}.activity_timeout: must be at least 1 second")
        if app.max_message_size < 100:
            raise ConfigError(f"{where}.max_message_size: must be at least 100 bytes")
        if app.recovery_window < 1:
            raise ConfigError(f"{where}.recovery_window: must be at least 1 second")
        if app.recovery_max_events < 1 or app.recovery_max_bytes < 1:
            raise ConfigError(f"{where}.recovery_max_events and recovery_max_bytes: must be at least 1")
        if app.jwt is not None and (problem := settings_problem(app.jwt)):
            raise ConfigError(f"{where}.jwt.{problem}")
        for hook_index, webhook in enumerate(app.webhooks):
            hook_where = f"{where}.webhooks[{hook_index}]"
            if not webhook.url.startswith(("http://", "https://")):
                raise ConfigError(f"{hook_where}.url: must be an http:// or https:// URL, got {webhook.url!r}")
            for event_type in webhook.event_types:
                if event_type not in WEBHOOK_EVENT_TYPES:
                    raise ConfigError(
                        f"{hook_where}.event_types: unknown event type {event_type!r}; "
                        f"choose from {', '.join(WEBHOOK_EVENT_TYPES)}"
                    )
