"""inventory: flash-sale stock in Redis and the durable order ledger. Knows nothing of sockets."""
