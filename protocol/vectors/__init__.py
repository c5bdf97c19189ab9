"""The vectors' language (README.md in this folder), shared by the Python runners: the server's
(tests/test_conformance.py) and the Python client's (clients/python/tests/test_conformance.py).
The JavaScript client's runner speaks it too (clients/js/test/). Standard library only: the
client's tests import nothing of the server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent
FILES = sorted(VECTORS.glob("*.json"))

#: The type patterns: ``"$int"`` matches any integer (not a bool), and so on.
TYPES: dict[str, Callable[[Any], bool]] = {
    "$int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "$str": lambda v: isinstance(v, str),
    "$bool": lambda v: isinstance(v, bool),
    "$list": lambda v: isinstance(v, list),
    "$object": lambda v: isinstance(v, dict),
    "$any": lambda v: True,
}


def load_cases() -> list[tuple[str, dict[str, Any]]]:
    """Every case of every file, named ``file/name``."""
    out = []
    for path in FILES:
        for case in json.loads(path.read_text(encoding="utf-8")):
            out.append((f"{path.stem}/{case['name']}", case))
    return out


def framings(case: dict[str, Any]) -> list[str]:
    """The framings a case runs in (``"both"``: once in each)."""
    framing = case.get("connect", {}).get("framing", "both")
    return ["json", "msgpack"] if framing == "both" else [framing]


def subst(value: Any, names: dict[str, Any]) -> Any:
    """Placeholders in what is sent: a string that is exactly "$name" becomes that value (of any
    type); in a longer string each "$name" is replaced by the value's text."""
    if isinstance(value, str) and value.startswith("$") and value[1:] in names:
        return names[value[1:]]
    if isinstance(value, str):
        return subst_text(value, names)
    if isinstance(value, dict):
        return {k: subst(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [subst(v, names) for v in value]
    return value


def subst_text(text: str, names: dict[str, Any]) -> str:
    """In raw frames every "$name" (letters, digits, _) is replaced by its value."""
    return re.sub(r"\$([a-z_]+)", lambda m: str(names.get(m.group(1), m.group(0))), text)


def mismatch(pattern: Any, actual: Any, names: dict[str, Any], path: str = "") -> str | None:
    """None if ``actual`` matches ``pattern`` (objects: a subset; lists: element-wise), else why."""
    if isinstance(pattern, str) and pattern.startswith("$"):
        if pattern in TYPES:
            return None if TYPES[pattern](actual) else f"{path}: {actual!r} is not {pattern}"
        if pattern.startswith("$contains:"):
            ok = isinstance(actual, str) and pattern[10:] in actual
            return None if ok else f"{path}: {actual!r} lacks {pattern[10:]!r}"
        if pattern[1:] in names:
            expected = names[pattern[1:]]
            return None if actual == expected else f"{path}: {actual!r} != {expected!r} ({pattern})"
        return f"{path}: unknown placeholder {pattern}"
    if isinstance(pattern, dict):
        if not isinstance(actual, dict):
            return f"{path}: {actual!r} is not an object"
        for key, sub in pattern.items():
            if sub == "$absent":
                if key in actual:
                    return f"{path}.{key}: present ({actual[key]!r}), expected absent"
                continue
            if key not in actual:
                return f"{path}.{key}: missing"
            why = mismatch(sub, actual[key], names, f"{path}.{key}")
            if why:
                return why
        return None
    if isinstance(pattern, list):
        if not isinstance(actual, list) or len(actual) != len(pattern):
            return f"{path}: {actual!r} is not a list of {len(pattern)}"
        for i, (p, a) in enumerate(zip(pattern, actual, strict=True)):
            why = mismatch(p, a, names, f"{path}[{i}]")
            if why:
                return why
        return None
    if type(pattern) is not type(actual) or pattern != actual:
        return f"{path}: {actual!r} != {pattern!r}"
    return None


def save(spec: dict[str, str], obj: Any, names: dict[str, Any]) -> None:
    """``{"name": "dotted.path"}``: names[name] = that field of obj."""
    for name, dotted in spec.items():
        value = obj
        for part in dotted.split("."):
            value = value[part]
        names[name] = value
