import io
import json
import logging

import pytest

from live.logs import configure, scrub

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /ws/rooms/a?token={TOKEN}",
        f"Authorization: Bearer {TOKEN}",
        f"raw {TOKEN} in a message",
        "redis://user:hunter2@10.0.0.1:6379/0",
        "/ws?token=opaque-token-value&x=1",
    ],
)
def test_secrets_are_scrubbed(text: str) -> None:
    clean = scrub(text)
    assert TOKEN not in clean and "hunter2" not in clean and "opaque-token-value" not in clean
    assert "[redacted]" in clean


@pytest.fixture
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_fields_and_no_tokens() -> None:
    out = io.StringIO()
    configure("info", "json", out)
    logging.getLogger("live.test").info("joined", extra={"room": "直播", "token": TOKEN})
    logging.getLogger("live.test").debug("hidden below the level")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "joined" and event["room"] == "直播" and event["level"] == "info"
    assert TOKEN not in lines[0]


@pytest.mark.usefixtures("restore_logging")
def test_text_lines() -> None:
    out = io.StringIO()
    configure("debug", "text", out)
    logging.getLogger("live.test").warning("slow", extra={"ms": 12, "note": "two words"})
    line = out.getvalue().strip()
    assert line.endswith('WARNING live.test slow ms=12 note="two words"')
