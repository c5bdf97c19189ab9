"""live: the application that wires the gateway, the inventory and the ledger into one server."""

__version__ = "0.1.0"
