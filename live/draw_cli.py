"""``live draw verify``: read a closed draw's JSON (a file, stdin, or the HTTP API on this
machine: the staff's draw or anyone's ``.../verification``) and check it with
interact/draw_verify.py: the seed hashes to the commitment and the winners are the
recomputation. Exit 0 verified, 1 a mismatch (one line each), 2 unreadable."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from interact.draw_verify import problems
from live.errors import UsageError

#: Host names a URL may name: this machine only (the draw is read with the caller's token).
LOOPBACK_NAMES = frozenset({"localhost"})
URL_TIMEOUT_S = 10


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_source(source: str, token: str | None) -> str:
    """The text of the draw: from stdin ('-'), a loopback http(s) URL, or a file."""
    if source == "-":
        return sys.stdin.read()
    if source.startswith(("http://", "https://")):
        url = urllib.parse.urlsplit(source)
        if not _is_loopback(url.hostname or ""):
            raise UsageError(f"{source}: only a URL on this machine (127.0.0.1, ::1, localhost) is read")
        request = urllib.request.Request(source)
        token = token or os.environ.get("LIVE_TOKEN")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
                body: bytes = response.read()
                return body.decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise UsageError(f"{source}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise UsageError(f"{source}: cannot read it: {exc}") from exc
    try:
        with open(source, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {source}: {exc}") from exc


def verify(source: str, token: str | None, commitment: str | None) -> int:
    try:
        draw: Any = json.loads(read_source(source, token))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not JSON: {exc}") from exc
    if not isinstance(draw, dict):
        raise UsageError(f"{source}: not a draw object")
    found = problems(draw, commitment)
    name = draw.get("id") or draw.get("draw_id") or "?"  # the draw, or its verification read
    if found:
        for problem in found:
            print(f"mismatch: draw {name}: {problem}")
        return 1
    winners = draw.get("winner_ids") or []
    print(
        f"ok: draw {name}: the seed matches the commitment and the {len(winners)} winners are the "
        f"recomputation from it and the {len(draw.get('eligible') or [])} eligible users"
    )
    return 0
