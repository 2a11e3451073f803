"""The server settings, each declared once: its TOML key, environment variables, CLI flag and README row.

config.py reads the TOML keys and variables from here and holds the defaults (the dataclass fields);
cli.py makes the flags from here; the README's server settings table is render_table()'s output,
kept in step by tests/unit/test_settings_table.py. A new setting is a field in config.py plus one
Setting below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

README_START: Final = "<!-- server settings: generated from relay/settings.py -->"
README_END: Final = "<!-- end of server settings -->"


@dataclass(frozen=True, slots=True)
class Setting:
    # TOML key; "redis.prefix" is `prefix` in the [redis] table, "webhook.*" in [webhook].
    key: str
    # The README's "Meaning" cell.
    meaning: str
    # Reverb's variables for the same setting, read too; RELAY_* wins over them.
    reverb_env: tuple[str, ...] = ()
    # True: `relay serve --<name>` sets it (flags win over every other source).
    flag: bool = False
    choices: tuple[str, ...] = ()
    # False when config.py reads the variables itself (redis_url, with Reverb's REDIS_* form).
    generic_env: bool = True
    # The README's "Environment" cell when the variable names alone do not say it.
    env_doc: str = ""
    # The RELAY_* name when it is not derived from the key (a name deployments already rely on).
    env_name: str = ""

    @property
    def table(self) -> str:
        """ "" for a top-level setting, else the TOML table it lives in."""
        return self.key.rpartition(".")[0]

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]

    @property
    def env(self) -> str:
        return self.env_name or "RELAY_" + self.key.replace(".", "_").upper()

    @property
    def flag_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def toml_doc(self) -> str:
        return f"`[{self.table}] {self.name}`" if self.table else f"`{self.name}`"


SETTINGS: Final = (
    Setting("host", "address to bind", ("REVERB_SERVER_HOST",), flag=True),
    Setting("port", "port to bind (WebSocket and HTTP API on the same port)", ("REVERB_SERVER_PORT",), flag=True),
    Setting("path", "prefix before `/app/<key>` and `/apps/<id>`", ("REVERB_SERVER_PATH",), flag=True),
    Setting(
        "redis_url",
        "Redis URL: turns on the Redis adapter, several nodes act as one server; "
        "`redis+cluster://host:port,host:port` for a Redis Cluster (docs/scaling.md)",
        flag=True,
        generic_env=False,
        env_doc="`RELAY_REDIS_URL`; `REVERB_SCALING_ENABLED=true` with `REDIS_URL` or "
        "`REDIS_HOST`/`REDIS_PORT`/`REDIS_USERNAME`/`REDIS_PASSWORD`/`REDIS_DB`",
    ),
    Setting("redis.prefix", "prefix of every Redis key and pub/sub channel", ("REVERB_SCALING_CHANNEL",)),
    Setting(
        "redis.node_timeout",
        "a node silent this long (seconds) is presumed dead; its presence members are removed (with "
        "`member_removed`) within 2/3 to 4/3 of it, so within 20 s by default",
    ),
    Setting("workers", "processes sharing the port with SO_REUSEPORT (needs Redis)", flag=True),
    Setting("log_level", "`debug`, `info`, `warning`, `error`", flag=True),
    Setting(
        "log_format",
        "`text`, or `json`: one object per line (`time`, `level`, `logger`, `message`, `app_id`, `socket_id`, "
        "`channel`, `code`, ...)",
        flag=True,
        choices=("text", "json"),
    ),
    Setting("max_request_size", "largest HTTP API body, bytes (413 above)", ("REVERB_MAX_REQUEST_SIZE",)),
    Setting("max_outbound_buffer", "bytes queued for a client that stops reading before it is dropped"),
    Setting("shutdown_timeout", "seconds to drain on SIGTERM"),
    Setting(
        "shutdown_grace",
        "seconds `/ready` answers 503 on SIGTERM before the port closes (at most `shutdown_timeout`)",
    ),
    Setting(
        "transport",
        "WebSocket implementation: `lean` (frames on the raw socket, ~2 KB per idle connection) or "
        "`aiohttp` (its `WebSocketResponse`); HTTP is served by aiohttp either way",
        flag=True,
        choices=("lean", "aiohttp"),
    ),
    Setting("webhook.batch_window", "seconds events are collected before a webhook request, see [Webhooks](#webhooks)"),
    Setting("webhook.batch_size", "most events in one webhook request"),
    Setting("webhook.request_timeout", "seconds a webhook receiver has to answer 2XX"),
    Setting("webhook.retry_for", "seconds a failed webhook is retried (exponential back-off), then dead-lettered"),
    Setting("webhook.leave_delay", "seconds `channel_vacated` / `member_removed` are held back"),
    Setting("webhook.queue_limit", "webhook events queued per node; beyond it new ones are dropped"),
    Setting("webhook.shutdown_deadline", "seconds queued webhooks get to be sent on SIGTERM"),
    Setting(
        "alerts.urls",
        "Slack-compatible incoming-webhook URLs for operational alerts, see [docs/monitoring.md](docs/monitoring.md)",
        env_name="RELAY_ALERT_URLS",
        env_doc="`RELAY_ALERT_URLS` (comma-separated)",
    ),
    Setting(
        "alerts.min_interval", "seconds between two alerts of one kind; repeats are summed up in one later message"
    ),
    Setting(
        "drain_window",
        "seconds over which SIGTERM closes the connections, each at a random moment, with 4200 (pusher-js "
        "reconnects, to another node); at most 300; `0` closes all at once. Give the process at least "
        "`shutdown_grace` + `drain_window` + `shutdown_timeout` before a SIGKILL",
    ),
    Setting(
        "connect_rate_per_ip",
        "new connections per second per client address (burst: twice that), `0` = no limit; over it pusher-js "
        "gets 4100 and retries later. The address is the peer's, or from `X-Forwarded-For` when the peer is a "
        "trusted proxy. 20 suits most public sites",
    ),
    Setting("connect_rate_per_node", "new connections per second to this node (burst: twice that), `0` = no limit"),
    Setting(
        "trusted_proxies",
        "addresses or CIDR blocks whose `X-Forwarded-For` is believed (the proxy in front of relay)",
    ),
    Setting(
        "console_token",
        "admin token of the live debug console at `{path}/console`, at least 16 characters; "
        "empty: no console, see [Debug console](#debug-console)",
    ),
    Setting(
        "console_allow_insecure",
        "`true`: the console also answers plain HTTP from other machines (the token crosses the network in clear)",
    ),
    Setting(
        "metrics_dir",
        "set by `--workers` for its workers (where they share their `/metrics` figures); not an operator setting",
    ),
)


def _default_cell(value: object) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"  # as written in TOML
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`" if value != "" else '`""`'


def render_table(default: Callable[[Setting], object]) -> str:
    """The README's server settings table; `default(setting)` comes from config.py's dataclasses."""
    rows = [
        "| TOML | Environment | Flag | Default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for setting in SETTINGS:
        env = setting.env_doc or ", ".join(f"`{name}`" for name in (setting.env, *setting.reverb_env))
        flag = f"`{setting.flag_name}`" if setting.flag else ""
        rows.append(f"| {setting.toml_doc} | {env} | {flag} | {_default_cell(default(setting))} | {setting.meaning} |")
    return "\n".join(rows) + "\n"
