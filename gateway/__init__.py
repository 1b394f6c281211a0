"""Factory edge gateway: the daemon, its configuration, pipeline, ticketing and store."""

__version__ = "0.1.0"
