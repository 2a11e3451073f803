"""The recovery fields of an app: from TOML and RELAY_APP_*, and the start-up refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, load_config

APP_TOML = '[[apps]]\nid = "1001"\nkey = "k"\nsecret = "s"\n'


def test_fields_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(APP_TOML + 'recovery = true\nrecovery_window = 30\nrecovery_channels = ["private-orders."]\n')
    app = load_config(str(path), env={}).apps[0]
    assert (app.recovery, app.recovery_window, app.recovery_channels) == (True, 30.0, ("private-orders.",))
    assert (app.recovery_max_events, app.recovery_max_bytes) == (1000, 1_048_576)


def test_off_by_default_and_from_the_environment() -> None:
    env = {"RELAY_APP_ID": "1", "RELAY_APP_KEY": "k", "RELAY_APP_SECRET": "s"}
    assert load_config(env=env).apps[0].recovery is False
    env |= {"RELAY_APP_RECOVERY": "true", "RELAY_APP_RECOVERY_CHANNELS": "presence-,private-a."}
    app = load_config(env=env).apps[0]
    assert app.recovery and app.recovery_channels == ("presence-", "private-a.")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("recovery_window = 0.5", "apps[0].recovery_window: must be at least 1 second"),
        ("recovery_max_events = 0", "recovery_max_events and recovery_max_bytes: must be at least 1"),
        ("recovery = 3", "apps[0].recovery: expected true or false"),
        ('recovery_channels = "x"', None),  # one prefix as a string is accepted
    ],
)
def test_bad_values_fail_at_start_up(tmp_path: Path, line: str, message: str | None) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(APP_TOML + line + "\n")
    if message is None:
        assert load_config(str(path), env={}).apps[0].recovery_channels == ("x",)
        return
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(str(path), env={})
