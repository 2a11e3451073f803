"""relay/settings.py declares every server setting once; the README, the environment and the flags follow it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from relay.cli import _parser
from relay.config import AlertSettings, Config, RedisConfig, WebhookSettings, load_config, setting_default
from relay.settings import README_END, README_START, SETTINGS, Setting, render_table

README = Path(__file__).resolve().parents[2] / "README.md"
# Config fields that are not server settings of their own: tables, the apps, and what load_config derives.
NOT_SETTINGS = {"apps", "redis", "webhook", "alerts", "dev_app", "redis.url"}


def test_readme_server_settings_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(README_START) == 1 and text.count(README_END) == 1, "README lost its table markers"
    current = text[text.index(README_START) + len(README_START) : text.index(README_END)].strip("\n")
    expected = render_table(setting_default).strip("\n")
    assert current == expected, (
        "README.md's server settings table is out of step with relay/settings.py; replace the lines between "
        f"its markers with:\n{expected}"
    )


def test_every_config_field_is_declared_once() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    fields |= {f"redis.{f.name}" for f in dataclasses.fields(RedisConfig)}
    fields |= {f"webhook.{f.name}" for f in dataclasses.fields(WebhookSettings)}
    fields |= {f"alerts.{f.name}" for f in dataclasses.fields(AlertSettings)}
    declared = [setting.key for setting in SETTINGS]
    assert len(declared) == len(set(declared))
    assert set(declared) - {"redis_url"} == fields - NOT_SETTINGS


def _sample(setting: Setting) -> tuple[str, object]:
    """A valid non-default value for `setting`, as an environment string and as the value it becomes."""
    samples: dict[str, tuple[str, object]] = {
        "host": ("127.0.0.2", "127.0.0.2"),
        "path": ("/relay", "/relay"),
        "log_level": ("debug", "debug"),
        "log_format": ("json", "json"),
        "metrics_dir": ("/tmp/relay-metrics", "/tmp/relay-metrics"),
        "alerts.urls": ("http://127.0.0.1:9/hook", ("http://127.0.0.1:9/hook",)),
        "trusted_proxies": ("10.0.0.0/8", ("10.0.0.0/8",)),
        "transport": ("aiohttp", "aiohttp"),
        "redis.prefix": ("other", "other"),
        "redis_url": ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
        "console_token": ("0123456789abcdef-token", "0123456789abcdef-token"),
        "console_allow_insecure": ("true", True),
    }
    if setting.key in samples:
        return samples[setting.key]
    default = setting_default(setting)
    assert isinstance(default, int | float), setting.key
    return "2", type(default)(2)


def _value(config: Config, setting: Setting) -> object:
    if setting.key == "redis_url":
        assert config.redis is not None
        return config.redis.url
    holder = {"": config, "redis": config.redis, "webhook": config.webhook, "alerts": config.alerts}[setting.table]
    return getattr(holder, setting.name)


def test_every_declared_variable_sets_its_setting() -> None:
    env = {setting.env: _sample(setting)[0] for setting in SETTINGS}
    config = load_config(env=env)
    for setting in SETTINGS:
        assert _value(config, setting) == _sample(setting)[1], setting.env


def test_every_declared_toml_key_sets_its_setting(tmp_path: Path) -> None:
    lines: dict[str, list[str]] = {"": [], "redis": [], "webhook": [], "alerts": []}
    for setting in SETTINGS:
        text, value = _sample(setting)
        quoted = isinstance(value, str | tuple)
        if isinstance(value, bool):
            lines[setting.table].append(f"{setting.name} = {text}")
        else:
            lines[setting.table].append(f"{setting.name} = {text!r}" if quoted else f"{setting.name} = 2")
    body = "\n".join(lines[""])
    for table in ("redis", "webhook", "alerts"):
        body += f"\n[{table}]\n" + "\n".join(lines[table])
    path = tmp_path / "relay.toml"
    path.write_text(body.replace("'", '"') + "\n", encoding="utf-8")
    config = load_config(str(path), env={})
    for setting in SETTINGS:
        assert _value(config, setting) == _sample(setting)[1], setting.key


def test_every_declared_flag_exists_and_overrides() -> None:
    flagged = [setting for setting in SETTINGS if setting.flag]
    argv = ["serve"]
    for setting in flagged:
        argv += [setting.flag_name, _sample(setting)[0]]
    options = _parser().parse_args(argv)
    for setting in flagged:
        assert getattr(options, setting.name) == _sample(setting)[1], setting.flag_name
