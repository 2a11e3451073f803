"""relay.logs: JSON lines parse and carry the context fields; text lines append them."""

from __future__ import annotations

import logging

import orjson
import pytest

from relay.logs import JsonFormatter, TextFormatter


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("relay.test")
    record = logger.makeRecord("relay.test", logging.WARNING, __file__, 1, "refused %s", ("conn",), None, extra=extra)
    return record


def test_json_line_has_time_level_logger_message_and_context() -> None:
    line = orjson.loads(JsonFormatter().format(_record(app_id="1001", socket_id="1.2", code=4004, secret_thing="x")))
    assert line["level"] == "warning"
    assert line["logger"] == "relay.test"
    assert line["message"] == "refused conn"
    assert line["app_id"] == "1001" and line["socket_id"] == "1.2" and line["code"] == 4004
    assert line["time"].endswith("Z")
    assert "secret_thing" not in line  # only the declared context fields are written


def test_json_line_carries_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.getLogger("relay.test").makeRecord(
            "relay.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = orjson.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in line["exc_info"]


@pytest.mark.parametrize("extra", [{}, {"channel": "private-a", "code": 4009}])
def test_text_line_appends_context(extra: dict[str, object]) -> None:
    text = TextFormatter().format(_record(**extra))
    assert "WARNING relay.test: refused conn" in text
    for name, value in extra.items():
        assert f"{name}={value}" in text
