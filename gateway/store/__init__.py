"""Durable storage on SQLite through aiosqlite: state.db (tickets, events, outbox) and
telemetry.db (raw samples and waveforms, local only). The only package that imports aiosqlite.
"""

from gateway.store.state import StateStore, StateStoreStatistics
from gateway.store.telemetry import TelemetryStatistics, TelemetryStore

__all__ = ["StateStore", "StateStoreStatistics", "TelemetryStatistics", "TelemetryStore"]
