"""The room's interaction tools, as Redis state and Lua: lucky draws (with verifiable winners),
live auctions (with anti-sniping), polls, and Q&A. No sockets, no money, no store of record:
``live/`` wires them to the gateway, the payments, the ledger and the store (see
docs/architecture.md). Every key of one room's tools carries the room's hash tag, so a tool's
script may also read the room's ban list and mutes (their names given by the caller)."""
