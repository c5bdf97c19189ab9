"""The result file (schema `live-loadtest/1`, docs/loadtest.md): its name, reading one back,
and reading its parts defensively (a file may come from another version, or be edited: any
part may be missing or odd), for the report and `compare`."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = "live-loadtest/1"


class ResultError(ValueError):
    """A file that is not a readable `live-loadtest/1` result."""


def load_result(path: Path) -> dict[str, Any]:
    """Read a result file; `ResultError` with a message fit for a user when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ResultError(f"{path}: not a JSON file (not UTF-8 text)") from exc
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultError(f"{path}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise ResultError(f"{path}: not a live-loadtest result (JSON nested too deeply)") from exc
    if not isinstance(result, dict):
        raise ResultError(f"{path}: not a live-loadtest result (a JSON object is expected)")
    schema = result.get("schema")
    if schema != SCHEMA:
        found = "no schema" if schema is None else f"schema {json.dumps(schema)}"
        raise ResultError(f"{path}: {found}, expected {SCHEMA!r}")
    return result


def as_mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_number(value: Any) -> float | None:
    # bool is an int subclass, but `true` is never a measurement.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond float range: not a measurement either
        return None
    return number if math.isfinite(number) else None


def started(result: dict[str, Any], seconds: bool = False) -> str:
    """When the run's load phase started, as UTC text ("unknown date" if the file does not say)."""
    ms = as_number(result.get("started_at_ms"))
    if ms is None:
        return "unknown date"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime(
            "%Y-%m-%d %H:%M" + (":%S" if seconds else "") + " UTC"
        )
    except (OverflowError, OSError, ValueError):
        return "unknown date"
