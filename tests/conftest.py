"""Shared fixtures for every test folder: real redis-server, relay, Caddy and Node processes."""

pytest_plugins = ["tests.support.fixtures"]
