"""The ``live`` command.

Exit codes: 0 done, 1 the server could not run (port, data dir, Redis), 2 a usage error
(flags, settings). Errors are one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from live import __version__
from live.auth import AuthError, Role
from live.errors import StartupError, UsageError
from live.logs import configure as configure_logging
from live.settings import LOG_FORMATS, LOG_LEVELS, Settings

MAIN_EXAMPLES = """\
examples:
  live serve                                  run everything (embedded Redis, ./live-data)
  live serve --port 9000 --redis-url redis://127.0.0.1:6379/0
  live token --room '*' --role host           a host token for every room
  live token --room shop1 --role viewer --user alice --ttl 600
  live reconcile                              check every sale against the ledger

Settings come from defaults < a TOML file (--config) < LIVE_* variables < flags;
see README.md for the table.
"""

SERVE_EXAMPLES = """\
examples:
  live serve
  live serve --data-dir /var/lib/live --host 0.0.0.0 --port 8080
  live serve --redis-url unix:///run/redis/redis.sock --log-format json
  LIVE_SECRET=... live serve --config /etc/live.toml
"""

TOKEN_EXAMPLES = """\
examples:
  live token --room '*' --role host
  live token --room shop1 --role moderator --user mod7 --ttl 3600
  curl -H "Authorization: Bearer $(live token --room '*' --role host)" \\
       http://127.0.0.1:8080/api/rooms
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    common.add_argument("--data-dir", type=Path, metavar="DIR", help="default ./live-data")
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    parser = _Parser(
        prog="live",
        description="Real-time livestream-commerce server.",
        epilog=MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"live {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the server",
        description="Run the server: HTTP API, WebSocket rooms, and Redis (embedded unless "
        "--redis-url is given).",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--redis-url", metavar="URL", help="use this Redis (redis://, rediss://, unix://)")
    serve.add_argument(
        "--database-url",
        metavar="URL",
        help="the store of record the nodes share (postgresql://...; default SQLite in the data dir)",
    )
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="default text")
    serve.add_argument(
        "--workers", type=int, metavar="N", help="worker processes sharing the port (default 1)"
    )
    serve.add_argument(
        "--node-name",
        metavar="NAME",
        help="this node's unique name among the nodes sharing the Redis (default <hostname>-<pid>)",
    )
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    token = sub.add_parser(
        "token",
        parents=[common],
        help="mint a room-scoped token",
        description="Print a signed token for a room and role (HS256 with the server's secret, "
        "or RS256/ES256 with --private-key).",
        epilog=TOKEN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--room", required=True, help="room id, or '*' for every room")
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--user", help="user id (default: the role's name)")
    token.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime (default 86400)")
    token.add_argument("--private-key", type=Path, metavar="PEM", help="signing key for RS256/ES256")

    reconcile = sub.add_parser(
        "reconcile",
        parents=[common],
        help="check flash sales against the order ledger",
        description="Check each sale's invariant in Redis (total = available + held + sold) and that "
        "every order Redis counts as sold is in the ledger exactly once, and vice versa. "
        "Runs beside a live server or on its own. Exit status 3 when a sale does not reconcile.",
        epilog=RECONCILE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reconcile.add_argument("--sale", metavar="ID", help="only this sale (default: every sale)")
    reconcile.add_argument(
        "--repair", action="store_true", help="rebuild the sale counters in Redis from the ledger"
    )
    reconcile.add_argument("--redis-url", metavar="URL", help="the Redis the servers use (if not embedded)")
    reconcile.add_argument(
        "--database-url",
        metavar="URL",
        help="the PostgreSQL the servers use (default: SQLite in the data dir); from any node",
    )

    draw = sub.add_parser(
        "draw",
        help="lucky draws: verify a closed draw's winners",
        description="Lucky draws (docs/draws.md).",
    )
    draw_sub = draw.add_subparsers(dest="draw_command", metavar="ACTION")
    draw_sub.required = True
    verify = draw_sub.add_parser(
        "verify",
        help="recompute a closed draw's winners from its revealed seed",
        description="Check a closed draw: SHA-256 of its seed is its commitment, and its winners are "
        "the documented function of the seed and the eligible list (docs/draws.md). Exit 0 when it "
        "verifies, 1 when it does not (one line per mismatch), 2 when the draw cannot be read.",
        epilog=DRAW_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "source",
        help="a file with the draw's JSON (GET /api/rooms/{room}/draws/{id}, or anyone's "
        "GET .../draws/{id}/verification), '-' for stdin, or that URL on this machine "
        "(http://127.0.0.1:...)",
    )
    verify.add_argument(
        "--token",
        help="a token for a URL (default $LIVE_TOKEN): any token of the room for .../verification, "
        "a host's or moderator's for the draw itself",
    )
    verify.add_argument(
        "--commitment", metavar="HEX", help="the commitment published at the draw's open, to check too"
    )

    sub.add_parser("version", help="print the version", description="Print the version.")
    return parser


DRAW_EXAMPLES = """\
examples:
  live draw verify draw.json
  curl -s -H "Authorization: Bearer $TOKEN" $URL/api/rooms/shop1/draws/d_AbC | live draw verify -
  live draw verify --token "$TOKEN" http://127.0.0.1:8080/api/rooms/shop1/draws/d_AbC
  live draw verify --token "$VIEWER_TOKEN" http://127.0.0.1:8080/api/rooms/shop1/draws/d_AbC/verification
  curl -s -H "Authorization: Bearer $TOKEN" https://live.example/api/rooms/shop1/draws/d_AbC/verification \\
    | live draw verify -
"""


RECONCILE_EXAMPLES = """\
examples:
  live reconcile                       every sale, beside the running server of ./live-data
  live reconcile --sale s_AbC123 --data-dir /var/lib/live
  live reconcile --sale s_AbC123 --repair   after Redis lost writes (docs/inventory.md)
"""


def _settings(args: argparse.Namespace, **flags: Any) -> Settings:
    return Settings.load(flags={"data_dir": args.data_dir, **flags}, config_file=args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from live.server import run

    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        database_url=args.database_url,
        log_level=args.log_level,
        log_format=args.log_format,
        workers=args.workers,
        node_name=args.node_name,
    )
    configure_logging(settings.log_level, settings.log_format, node=settings.node_name)
    run(settings, worker=args.worker)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from live.datadir import DataDir
    from live.server import load_auth

    settings = _settings(args)
    if args.ttl is not None and args.ttl <= 0:
        raise UsageError("--ttl must be a positive number of seconds")
    private_key = None
    if args.private_key is not None:
        try:
            private_key = args.private_key.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --private-key {args.private_key}: {exc.strerror}") from exc
    elif settings.jwt_algorithm != "HS256":
        raise UsageError(f"{settings.jwt_algorithm} tokens need --private-key")
    auth = load_auth(settings, DataDir(settings.data_dir), private_key)
    try:
        token = auth.mint(
            args.user or args.role, args.room, Role(args.role), args.ttl or settings.token_ttl_s
        )
    except (AuthError, ValueError) as exc:
        raise UsageError(f"cannot sign the token: {exc}") from exc
    print(token)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from live import reconcile

    settings = _settings(args, redis_url=args.redis_url, database_url=args.database_url)
    configure_logging("warning", "text")
    return asyncio.run(reconcile.run(settings, args.sale, args.repair))


def cmd_draw(args: argparse.Namespace) -> int:
    from live import draw_cli

    return draw_cli.verify(args.source, args.token, args.commitment)


def cmd_version(args: argparse.Namespace) -> int:
    print(f"live {__version__} (Python {platform.python_version()})")
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "token": cmd_token,
    "reconcile": cmd_reconcile,
    "draw": cmd_draw,
    "version": cmd_version,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        return _fail(2, exc, debug)
    except StartupError as exc:
        return _fail(1, exc, debug)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything unexpected still gets one line, not a traceback
        logging.getLogger("live").debug("unexpected error", exc_info=True)
        return _fail(1, exc, debug, unexpected=True)


def _fail(code: int, exc: BaseException, debug: bool, unexpected: bool = False) -> int:
    if debug:
        traceback.print_exception(exc)
    what = f"{exc.__class__.__name__}: {exc}" if unexpected else str(exc)
    print(f"live: error: {what}", file=sys.stderr)
    return code
