"""Durable storage on SQLite through aiosqlite: state.db (tickets, outbox, command log, noise
state; one object per role) and telemetry.db (raw samples and waveforms, local only). The only
package that imports aiosqlite.
"""

from gateway.store.state import StateDatabase, StateStatistics
from gateway.store.telemetry import TelemetryStatistics, TelemetryStore

__all__ = ["StateDatabase", "StateStatistics", "TelemetryStatistics", "TelemetryStore"]
