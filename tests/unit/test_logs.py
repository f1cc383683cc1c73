import io
import json

import structlog

from sluice.logs import configure_logging


def test_secret_looking_fields_are_masked_in_both_formats() -> None:
    for fmt in ("text", "json"):
        stream = io.StringIO()
        configure_logging("info", fmt, stream=stream)
        structlog.get_logger().info(
            "connect", url="http://h:8123", password="hunter2", api_token="t0k"
        )
        line = stream.getvalue()
        assert "hunter2" not in line and "t0k" not in line
        assert "http://h:8123" in line
    assert json.loads(line)["password"] == "***"


def test_text_lines_are_key_value() -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    structlog.get_logger().warning("sink.write.retrying", error="connection refused", attempt=2)
    line = stream.getvalue().strip()
    assert " warning sink.write.retrying " in line
    assert 'error="connection refused" attempt=2' in line


def test_a_closed_log_stream_does_not_raise() -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    stream.close()
    structlog.get_logger().info("still.fine")
