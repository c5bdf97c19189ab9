"""docs/protocol.md against the code, both ways: every server message type, client command (with
its fields and who may send it), error code, handshake refusal and close code (with its reason)
the code has is documented, and everything documented is in the code.

The code side is collected from where each thing is defined: the message constructors
(gateway/messages.py, live/events.py), a live server's command registry, the error classes and
the literal codes they are raised with, gateway/close_codes.py. The doc side is parsed from the
doc's headings, tables and JSON examples.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path

from websockets.frames import CloseCode

import inventory.model
from gateway import messages
from gateway.chat import REFUSALS
from gateway.close_codes import Close
from live import events
from live.auth import AuthError
from live.server import Running

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text()
SOURCES = sorted(
    [*(ROOT / "gateway").glob("*.py"), *(ROOT / "live").glob("*.py"), *(ROOT / "interact").glob("*.py")]
)
#: A refusal in an interaction tool's script: ``refuse('code', ...)`` (interact/lua/lib.lua).
LUA_REFUSAL = re.compile(r"""refuse\(\s*['"]([a-z_]+)['"]""")
NAME = re.compile(r"`([a-z][a-z0-9_]*)`")
#: Inventory refusals only the host API meets (docs/http-api.md documents them).
HOST_ONLY_INVENTORY = {"already_ended", "batch_exists", "inventory_error"}
#: AuthError codes the WebSocket handshake never gives: signing tokens (the CLI), and a role
#: check (the HTTP API's; every role may connect).
NOT_AT_HANDSHAKE = {"cannot_sign", "forbidden"}
#: Close codes websockets itself sends for a frame that breaks the protocol or its size limit.
SENT_BY_WEBSOCKETS = {int(CloseCode.PROTOCOL_ERROR), int(CloseCode.MESSAGE_TOO_BIG)}


# -- the doc ------------------------------------------------------------------------------------


def section(title: str) -> str:
    """The text of the ``## title...`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", DOC, re.M | re.S)
    assert match is not None, f"docs/protocol.md has no section {title!r}"
    return match.group(1)


def tables(text: str) -> Iterator[tuple[list[str], list[list[str]]]]:
    """Each markdown table in ``text``: its header cells and its rows' cells."""
    for block in re.findall(r"(?:^\|.*\|[ \t]*\n?)+", text, re.M):
        lines = [line.strip().strip("|") for line in block.strip().splitlines()]
        rows = [[cell.strip() for cell in line.split("|")] for line in lines]
        yield rows[0], [row for row in rows[2:] if row]


def rows_of(text: str, first_header: str) -> Iterator[list[str]]:
    for header, rows in tables(text):
        if header[0] == first_header:
            yield from rows


def documented_fields(cell: str) -> dict[str, bool]:
    """Field name -> required, from a cell such as "`sale_id`, optional `quantity` (1 to ...)"."""
    cell = re.sub(r"\([^)]*\)", "", cell)  # remarks in brackets name other things
    return {name: not optional for optional, name in re.findall(r"(optional\s+)?`([a-z_]+)`", cell)}


# -- the code -----------------------------------------------------------------------------------


def literals(node: ast.expr, local: dict[str, ast.expr]) -> list[str]:
    """The strings ``node`` can be: a literal, a choice between literals (``a if c else b``),
    or a local variable assigned one."""
    if isinstance(node, ast.Name) and node.id in local:
        node = local[node.id]
    if isinstance(node, ast.IfExp):
        return literals(node.body, local) + literals(node.orelse, local)
    return [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []


def raised_codes(class_name: str) -> set[tuple[int | None, str]]:
    """(status, code) of every ``class_name(...)`` call in gateway/ and live/ whose code is
    literal (see ``literals``); status is the first argument when it is an int."""
    found: set[tuple[int | None, str]] = set()
    for path in SOURCES:
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            local = {
                target.id: node.value
                for node in ast.walk(function)
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                    continue
                if node.func.id != class_name:
                    continue
                args = list(node.args)
                status = None
                first = args[0]
                if isinstance(first, ast.Constant) and type(first.value) is int:
                    status = first.value
                    args.pop(0)
                if args:
                    found |= {(status, code) for code in literals(args[0], local)}
    return found


def interact_codes() -> set[str]:
    """The codes of the interaction tools' refusals: InteractError(...) in Python, refuse(...) in
    their Lua scripts (each answered to a WebSocket command, or to the host API)."""
    codes = {code for _, code in raised_codes("InteractError")}
    for path in (ROOT / "interact" / "lua").glob("*.lua"):
        codes |= set(LUA_REFUSAL.findall(path.read_text()))
    return codes


def inventory_codes() -> set[str]:
    classes = vars(inventory.model).values()
    return {c.code for c in classes if inspect.isclass(c) and issubclass(c, inventory.model.InventoryError)}


# -- the checks ---------------------------------------------------------------------------------


def test_every_server_message_is_documented_and_every_documented_one_is_built() -> None:
    text = section("Server -> client")
    documented = set()
    for heading in re.findall(r"^###.*$", text, re.M):
        documented |= set(NAME.findall(heading))
    documented |= {row[0].strip("`") for row in rows_of(text, "type")}
    documented |= set(re.findall(r'"type": ?"([a-z_]+)"', text))  # the JSON examples
    built = messages.SERVER_TYPES | events.EVENT_TYPES
    assert built - documented == set(), "built but not in docs/protocol.md"
    assert documented - built == set(), "in docs/protocol.md but built nowhere"


async def test_every_command_is_documented_with_its_fields_and_senders(server: Running) -> None:
    commands = server.services.hub.commands  # what a live server routes: the gateway's and the app's
    documented: dict[str, list[str]] = {}
    for row in rows_of(section("Client -> server"), "type"):
        name = row[0].strip("`")
        assert name not in documented, f"{name} is documented twice"
        documented[name] = row
    assert set(commands) - set(documented) == set(), "registered but not in docs/protocol.md"
    assert set(documented) - set(commands) == set(), "in docs/protocol.md but not registered"
    for name, row in documented.items():
        spec = commands[name]
        fields = {field: spec.required for field, spec in spec.fields.items()}
        assert documented_fields(row[1]) == fields, name
        if len(row) > 3:  # the table with a "who" column (buying has its own section)
            assert (row[2] == "anyone") == (spec.roles is None), name
            if spec.roles is not None:
                assert set(re.split(r",\s*", row[2])) == spec.roles, name
        else:
            assert spec.needs_rid, f"{name}: the buying section says each needs a rid"


def test_every_error_code_is_documented_and_every_documented_one_is_raised() -> None:
    documented = set()
    for row in rows_of(section("Error codes"), "code"):
        documented |= set(NAME.findall(row[0]))
    assert inventory_codes() >= HOST_ONLY_INVENTORY
    http_doc = (ROOT / "docs" / "http-api.md").read_text()
    assert all(f"`{code}`" in http_doc for code in HOST_ONLY_INVENTORY - {"inventory_error"})
    raised = {code for _, code in raised_codes("ProtocolError")}
    raised |= set(REFUSALS)  # a comment the bus refuses
    raised |= inventory_codes() - HOST_ONLY_INVENTORY  # a buyer's command the inventory refuses
    raised |= interact_codes()  # a draw, bid, vote or question refused
    assert raised - documented == set(), "raised but not in docs/protocol.md's error codes"
    assert documented - raised == set(), "in docs/protocol.md's error codes but raised nowhere"


def test_every_handshake_refusal_is_documented_with_its_status() -> None:
    documented = set()
    for row in rows_of(section("Connecting"), "status"):
        documented |= {(int(row[0]), code) for code in NAME.findall(row[1])}
    refused = {(status, code) for status, code in raised_codes("Refused") if status is not None}
    auth = {code for _, code in raised_codes("AuthError")} - NOT_AT_HANDSHAKE
    refused |= {(AuthError(code, "").http_status, code) for code in auth}
    assert refused - documented == set(), "refused but not in docs/protocol.md's handshake table"
    assert documented - refused == set(), "in docs/protocol.md's handshake table but never refused"


def test_every_close_code_is_documented_with_its_reason() -> None:
    documented = {int(row[0]): row[1] for row in rows_of(section("Close codes"), "code")}
    sent = {close.code for close in Close} | SENT_BY_WEBSOCKETS
    assert sent - set(documented) == set(), "sent but not in docs/protocol.md's close codes"
    assert set(documented) - sent == set(), "in docs/protocol.md's close codes but never sent"
    for close in Close:
        reason = close.reason()
        if reason.startswith("{"):
            name = json.loads(reason)["code"]
            assert f'"{name}"' in documented[close.code], (close, documented[close.code])
