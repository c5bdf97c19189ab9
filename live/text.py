"""Text at the boundaries: what UTF-8 can carry."""

from __future__ import annotations


def is_text(value: str) -> bool:
    """Whether ``value`` can be encoded as UTF-8. A Python string can hold lone surrogates
    (JSON's ``"\\ud800"`` decodes to one), which Redis, SQLite and every reply cannot carry."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
