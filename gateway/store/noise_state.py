"""The noise-state role of state.db: what ISA-18.2 noise control must not forget across a
restart: shelved conditions, assets in maintenance mode, alarm floods in progress
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

import aiosqlite

from gateway.core.records import (
    ChatterRecord,
    FloodArrival,
    FloodRecord,
    GroupRecord,
    MaintenanceWindow,
    Shelving,
    StormMemberRecord,
)
from gateway.store.json_columns import to_json, to_json_array
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

# Members live in `storm_members` (one row each, so a new one costs a row); the arrays stay empty.
_SAVE_FLOOD = """
    INSERT INTO area_floods (area, started_at, incident_key, published_members, published_at,
                             members, folded, quieted)
    VALUES (?, ?, ?, ?, ?, '[]', '[]', '[]')
    ON CONFLICT (area) DO UPDATE SET
        started_at = excluded.started_at,
        incident_key = excluded.incident_key,
        published_members = excluded.published_members,
        published_at = excluded.published_at
"""
_SAVE_MEMBER = """
    INSERT INTO storm_members (scope, key, asset, fault_code, area, first_seen, arrivals,
                               member, folded, quieted, linked, held, finding)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (scope, key) DO UPDATE SET
        asset = excluded.asset,
        fault_code = excluded.fault_code,
        area = excluded.area,
        first_seen = excluded.first_seen,
        arrivals = excluded.arrivals,
        member = excluded.member,
        folded = excluded.folded,
        quieted = excluded.quieted,
        linked = excluded.linked,
        held = excluded.held,
        finding = excluded.finding
"""
_SAVE_GROUP = """
    INSERT INTO group_storms (group_key, labels, hold_until, incident_key, started_at, root,
                              predecessor, published_members, published_at, published_root)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (group_key) DO UPDATE SET
        labels = excluded.labels,
        hold_until = excluded.hold_until,
        incident_key = excluded.incident_key,
        started_at = excluded.started_at,
        root = excluded.root,
        predecessor = excluded.predecessor,
        published_members = excluded.published_members,
        published_at = excluded.published_at,
        published_root = excluded.published_root
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
        members: Sequence[StormMemberRecord] = (),
        members_gone: Collection[tuple[str, str]] = (),
        groups: Sequence[GroupRecord] = (),
        groups_ended: Collection[str] = (),
        group_arrivals: Sequence[FloodArrival] = (),
        forget_group_arrivals_before: float | None = None,
    ) -> None:
        """In one transaction: save (replace) the given floods, storm members, groups and
        chattering conditions, forget the ended ones (an ended flood or group takes its
        members along), add the new arrivals and drop those older than the `forget_*`
        times. Group arrivals are `FloodArrival`s whose `area` is the group key."""
        flood_rows = [_flood_row(f) for f in floods]
        chatter_rows = [(c.key, to_json_array(list(c.raises), "raise times")) for c in chattering]
        arrival_rows = [(a.area, a.ts, a.key, a.asset, a.fault_code) for a in arrivals]
        ended_scopes = [(f"area:{a}",) for a in floods_ended] + [
            (f"group:{g}",) for g in groups_ended
        ]
        async with self._db.lock, self._db.transaction() as conn:
            await _many(
                conn, "DELETE FROM area_floods WHERE area = ?", [(a,) for a in floods_ended]
            )
            await _many(
                conn, "DELETE FROM group_storms WHERE group_key = ?", [(g,) for g in groups_ended]
            )
            await _many(conn, "DELETE FROM storm_members WHERE scope = ?", ended_scopes)
            await _many(
                conn, "DELETE FROM storm_members WHERE scope = ? AND key = ?", list(members_gone)
            )
            await _many(conn, _SAVE_GROUP, [_group_row(g) for g in groups])
            await _many(conn, _SAVE_MEMBER, [_member_row(m) for m in members])
            await _many(
                conn,
                "INSERT INTO group_arrivals (group_key, ts, key, asset, fault_code)"
                " VALUES (?, ?, ?, ?, ?)",
                [(a.area, a.ts, a.key, a.asset, a.fault_code) for a in group_arrivals],
            )
            if forget_group_arrivals_before is not None:
                await conn.execute(
                    "DELETE FROM group_arrivals WHERE ts < ?", (forget_group_arrivals_before,)
                )
            await _many(conn, _SAVE_FLOOD, flood_rows)
            await _many(
                conn,
                "INSERT INTO flood_arrivals (area, ts, key, asset, fault_code)"
                " VALUES (?, ?, ?, ?, ?)",
                arrival_rows,
            )
            if forget_arrivals_before is not None:
                await conn.execute(
                    "DELETE FROM flood_arrivals WHERE ts < ?", (forget_arrivals_before,)
                )
            await _many(
                conn,
                "DELETE FROM chattering_conditions WHERE key = ?",
                [(k,) for k in chatter_ended],
            )
            await _many(
                conn,
                "INSERT INTO chattering_conditions (key, raises) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET raises = excluded.raises",
                chatter_rows,
            )

    async def load_floods(self) -> list[FloodRecord]:
        """The floods in progress with their members (from `storm_members`)."""
        rows = await self._read(
            "SELECT area, started_at, incident_key, published_members, published_at"
            " FROM area_floods ORDER BY area"
        )
        members: dict[str, list[StormMemberRecord]] = {}
        for member in await self.load_storm_members("area:"):
            members.setdefault(member.scope.removeprefix("area:"), []).append(member)
        floods = []
        for row in rows:
            own = members.get(row["area"], [])
            floods.append(
                FloodRecord(
                    area=row["area"],
                    started_at=row["started_at"],
                    incident_key=row["incident_key"],
                    published_members=row["published_members"],
                    published_at=row["published_at"],
                    members=tuple(
                        {
                            "key": m.key,
                            "asset": m.asset,
                            "fault_code": m.fault_code,
                            "first_seen": m.first_seen,
                            "arrivals": m.arrivals,
                        }
                        for m in own
                        if m.member
                    ),
                    folded=tuple(m.key for m in own if m.folded),
                    quieted=tuple(m.key for m in own if m.quieted),
                )
            )
        return floods

    async def load_storm_members(self, prefix: str) -> list[StormMemberRecord]:
        """The members of every scope starting with `prefix` (`area:` or `group:`)."""
        rows = await self._read(
            "SELECT scope, key, asset, fault_code, area, first_seen, arrivals, member, folded,"
            " quieted, linked, held, finding FROM storm_members WHERE substr(scope, 1, ?) = ?"
            " ORDER BY scope, first_seen, key",
            (len(prefix), prefix),
        )
        return [
            StormMemberRecord(
                scope=row["scope"],
                key=row["key"],
                asset=row["asset"],
                fault_code=row["fault_code"],
                area=row["area"],
                first_seen=row["first_seen"],
                arrivals=row["arrivals"],
                member=bool(row["member"]),
                folded=bool(row["folded"]),
                quieted=bool(row["quieted"]),
                linked=bool(row["linked"]),
                held=bool(row["held"]),
                finding=json.loads(row["finding"]) if row["finding"] is not None else None,
            )
            for row in rows
        ]

    async def load_groups(self) -> list[GroupRecord]:
        rows = await self._read(
            "SELECT group_key, labels, hold_until, incident_key, started_at, root, predecessor,"
            " published_members, published_at, published_root FROM group_storms"
            " ORDER BY group_key"
        )
        return [
            GroupRecord(
                group_key=row["group_key"],
                labels=json.loads(row["labels"]),
                hold_until=row["hold_until"],
                incident_key=row["incident_key"],
                started_at=row["started_at"],
                root=json.loads(row["root"]) if row["root"] is not None else None,
                predecessor=row["predecessor"],
                published_members=row["published_members"],
                published_at=row["published_at"],
                published_root=row["published_root"],
            )
            for row in rows
        ]

    async def load_group_arrivals(self, since: float) -> list[FloodArrival]:
        """The group counts' arrivals at or after `since`, oldest first (`area` = group key)."""
        return await self._load_arrivals("group_arrivals", "group_key", since)

    async def load_flood_arrivals(self, since: float) -> list[FloodArrival]:
        """The arrivals at or after `since`, oldest first."""
        return await self._load_arrivals("flood_arrivals", "area", since)

    async def _load_arrivals(self, table: str, scope: str, since: float) -> list[FloodArrival]:
        # `table` and `scope` are the two literals above, never input.
        rows = await self._read(
            f"SELECT {scope} AS scope, ts, key, asset, fault_code FROM {table}"
            " WHERE ts >= ? ORDER BY ts, id",
            (since,),
        )
        return [
            FloodArrival(
                area=row["scope"],
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


async def _many(conn: aiosqlite.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`executemany` when there is something to write: each call is a round trip to the
    database thread, and a storm's saves mostly carry one or two kinds of row."""
    if rows:
        await conn.executemany(sql, rows)


def _flood_row(f: FloodRecord) -> tuple[Any, ...]:
    return (f.area, f.started_at, f.incident_key, f.published_members, f.published_at)


def _member_row(m: StormMemberRecord) -> tuple[Any, ...]:
    return (
        m.scope,
        m.key,
        m.asset,
        m.fault_code,
        m.area,
        m.first_seen,
        m.arrivals,
        int(m.member),
        int(m.folded),
        int(m.quieted),
        int(m.linked),
        int(m.held),
        to_json(dict(m.finding), "storm finding") if m.finding is not None else None,
    )


def _group_row(g: GroupRecord) -> tuple[Any, ...]:
    return (
        g.group_key,
        to_json(dict(g.labels), "group labels"),
        g.hold_until,
        g.incident_key,
        g.started_at,
        to_json(dict(g.root), "root cause") if g.root is not None else None,
        g.predecessor,
        g.published_members,
        g.published_at,
        g.published_root,
    )


def _shelving_row(s: Shelving) -> tuple[Any, ...]:
    return (s.key, s.until, s.reason, s.by, s.set_at)
