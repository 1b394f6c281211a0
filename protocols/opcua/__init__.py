"""OPC UA driver: subscriptions by default, polling per node as a fallback."""
