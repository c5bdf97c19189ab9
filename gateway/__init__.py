"""gateway: WebSocket rooms and fan-out. Knows nothing of sales; `live/` wires it to the rest."""
