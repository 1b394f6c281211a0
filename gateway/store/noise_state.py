"""The noise-state role of state.db: what ISA-18.2 noise control must not forget across a
restart (issue 5): shelved conditions, assets in maintenance mode, alarm floods in progress
with their recent arrivals, and chattering conditions. Implements
`gateway.core.interfaces.NoiseStateJournal`.

A shelve or an unshelve that comes with a ticket event is written by the ticket role inside its
transaction (`write_shelving`), so the event and the flag never disagree.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from gateway.core.records import (
    ChatterRecord,
    FloodArrival,
    FloodRecord,
    MaintenanceWindow,
    Shelving,
)
from gateway.store.json_columns import to_json_array
from gateway.store.sqlite import DatabaseRole

_SAVE_SHELVING = """
    INSERT INTO shelved_conditions (key, until, reason, actor, set_at) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET
        until = excluded.until,
        reason = excluded.reason,
        actor = excluded.actor,
        set_at = excluded.set_at
"""
_DELETE_SHELVING = "DELETE FROM shelved_conditions WHERE key = ?"

_SAVE_FLOOD = """
    INSERT INTO area_floods (area, started_at, incident_key, published_members, published_at,
                             members, folded, quieted)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (area) DO UPDATE SET
        started_at = excluded.started_at,
        incident_key = excluded.incident_key,
        published_members = excluded.published_members,
        published_at = excluded.published_at,
        members = excluded.members,
        folded = excluded.folded,
        quieted = excluded.quieted
"""


class NoiseStateStore(DatabaseRole):
    # --- shelving ----------------------------------------------------------------------------

    @staticmethod
    def write_shelving(
        conn: sqlite3.Connection, *, shelve: Shelving | None, unshelve: str | None
    ) -> None:
        """Inside the caller's unit (worker thread): forget the shelving of `unshelve`, save
        `shelve`."""
        if unshelve is not None:
            conn.execute(_DELETE_SHELVING, (unshelve,))
        if shelve is not None:
            conn.execute(_SAVE_SHELVING, _shelving_row(shelve))

    async def save_shelving(self, shelving: Shelving) -> None:
        """Save a shelved condition on its own (one whose ticket is not changing)."""
        await self._write(_SAVE_SHELVING, _shelving_row(shelving))

    async def clear_shelving(self, key: str) -> None:
        """Forget the shelving of a dedup key; a no-op when there is none."""
        await self._write(_DELETE_SHELVING, (key,))

    async def load_shelvings(self, now: float) -> list[Shelving]:
        """The shelved conditions still in force at `now`; timed ones that ran out while the
        gateway was down are deleted, not returned. One-shot ones (until NULL) always stay."""
        async with self._db.lock, self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM shelved_conditions WHERE until IS NOT NULL AND until <= ?", (now,)
            )
            rows = await conn.execute_fetchall(
                "SELECT key, until, reason, actor, set_at FROM shelved_conditions ORDER BY key"
            )
        return [
            Shelving(
                key=row["key"],
                until=row["until"],
                reason=row["reason"],
                by=row["actor"],
                set_at=row["set_at"],
            )
            for row in rows
        ]

    # --- maintenance mode --------------------------------------------------------------------

    async def save_maintenance(self, asset: str, until: float, by: str, set_at: float) -> None:
        """Put an asset in maintenance mode until `until`; a second call moves the end."""
        await self._write(
            "INSERT INTO asset_maintenance (asset, until, actor, set_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (asset) DO UPDATE SET until = excluded.until,"
            " actor = excluded.actor, set_at = excluded.set_at",
            (asset, until, by, set_at),
        )

    async def clear_maintenance(self, asset: str) -> None:
        await self._write("DELETE FROM asset_maintenance WHERE asset = ?", (asset,))

    async def load_maintenance(self, now: float) -> list[MaintenanceWindow]:
        """The assets still in maintenance mode at `now`; ended windows are deleted."""
        async with self._db.lock, self._db.transaction() as conn:
            await conn.execute("DELETE FROM asset_maintenance WHERE until <= ?", (now,))
            rows = await conn.execute_fetchall(
                "SELECT asset, until, actor, set_at FROM asset_maintenance ORDER BY asset"
            )
        return [
            MaintenanceWindow(
                asset=row["asset"], until=row["until"], by=row["actor"], set_at=row["set_at"]
            )
            for row in rows
        ]

    # --- floods and chattering ---------------------------------------------------------------

    async def save_noise_state(
        self,
        *,
        floods: Sequence[FloodRecord] = (),
        floods_ended: Collection[str] = (),
        arrivals: Sequence[FloodArrival] = (),
        forget_arrivals_before: float | None = None,
        chattering: Sequence[ChatterRecord] = (),
        chatter_ended: Collection[str] = (),
    ) -> None:
        """In one transaction: save (replace) the given floods and chattering conditions,
        forget the ended ones, add the new arrivals and drop the arrivals older than
        `forget_arrivals_before`."""
        flood_rows = [_flood_row(f) for f in floods]
        chatter_rows = [(c.key, to_json_array(list(c.raises), "raise times")) for c in chattering]
        arrival_rows = [(a.area, a.ts, a.key, a.asset, a.fault_code) for a in arrivals]
        async with self._db.lock, self._db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM area_floods WHERE area = ?", [(a,) for a in floods_ended]
            )
            await conn.executemany(_SAVE_FLOOD, flood_rows)
            await conn.executemany(
                "INSERT INTO flood_arrivals (area, ts, key, asset, fault_code)"
                " VALUES (?, ?, ?, ?, ?)",
                arrival_rows,
            )
            if forget_arrivals_before is not None:
                await conn.execute(
                    "DELETE FROM flood_arrivals WHERE ts < ?", (forget_arrivals_before,)
                )
            await conn.executemany(
                "DELETE FROM chattering_conditions WHERE key = ?", [(k,) for k in chatter_ended]
            )
            await conn.executemany(
                "INSERT INTO chattering_conditions (key, raises) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET raises = excluded.raises",
                chatter_rows,
            )

    async def load_floods(self) -> list[FloodRecord]:
        rows = await self._read(
            "SELECT area, started_at, incident_key, published_members, published_at,"
            " members, folded, quieted FROM area_floods ORDER BY area"
        )
        return [
            FloodRecord(
                area=row["area"],
                started_at=row["started_at"],
                incident_key=row["incident_key"],
                published_members=row["published_members"],
                published_at=row["published_at"],
                members=tuple(json.loads(row["members"])),
                folded=tuple(json.loads(row["folded"])),
                quieted=tuple(json.loads(row["quieted"])),
            )
            for row in rows
        ]

    async def load_flood_arrivals(self, since: float) -> list[FloodArrival]:
        """The arrivals at or after `since`, oldest first."""
        rows = await self._read(
            "SELECT area, ts, key, asset, fault_code FROM flood_arrivals"
            " WHERE ts >= ? ORDER BY ts, id",
            (since,),
        )
        return [
            FloodArrival(
                area=row["area"],
                ts=row["ts"],
                key=row["key"],
                asset=row["asset"],
                fault_code=row["fault_code"],
            )
            for row in rows
        ]

    async def load_chattering(self) -> list[ChatterRecord]:
        rows = await self._read("SELECT key, raises FROM chattering_conditions ORDER BY key")
        return [
            ChatterRecord(key=row["key"], raises=tuple(float(t) for t in json.loads(row["raises"])))
            for row in rows
        ]


def _flood_row(f: FloodRecord) -> tuple[Any, ...]:
    return (
        f.area,
        f.started_at,
        f.incident_key,
        f.published_members,
        f.published_at,
        to_json_array([dict(m) for m in f.members], "flood members"),
        to_json_array(list(f.folded), "folded keys"),
        to_json_array(list(f.quieted), "quieted keys"),
    )


def _shelving_row(s: Shelving) -> tuple[Any, ...]:
    return (s.key, s.until, s.reason, s.by, s.set_at)
