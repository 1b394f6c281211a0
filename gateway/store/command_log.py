"""The command-log role of state.db: the reply of every accepted central command by its
`command_id`, so that a repeat (the central system retrying after a lost reply, the broker
redelivering after a restart) gets the first reply back and has no second effect.
Implements `gateway.core.interfaces.CommandLog`.

Bounded: a command is remembered for the idempotency window, `window_s` after it
arrived, and only the newest `max_rows` are kept; older ones are pruned at open and every
`prune_every` new entries. A repeat outside the window counts as a new command
(docs/TICKETS.md, "Commands").
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gateway.core.clock import Clock
from gateway.store.group_commit import GroupCommitter
from gateway.store.json_columns import to_json
from gateway.store.sqlite import Database, DatabaseRole, in_chunks

DEFAULT_WINDOW_S = 24 * 3600.0
DEFAULT_MAX_ROWS = 20_000
PRUNE_EVERY = 200
_REMEMBER = (
    "INSERT INTO commands (command_id, verb, received_at, reply) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (command_id) DO UPDATE SET verb = excluded.verb,"
    " received_at = excluded.received_at, reply = excluded.reply"
    " WHERE commands.received_at < ?"
)


class CommandLogStore(DatabaseRole):
    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        max_rows: int = DEFAULT_MAX_ROWS,
        prune_every: int = PRUNE_EVERY,
        writer: GroupCommitter | None = None,
    ) -> None:
        super().__init__(db)
        self._writer = writer or GroupCommitter(db)
        if window_s <= 0 or max_rows < 1 or prune_every < 1:
            raise ValueError("the command log needs a positive window, row count and period")
        self._clock = clock
        self.window_s = window_s
        self.max_rows = max_rows
        self._prune_every = prune_every
        self._since_prune = 0
        self.pruned = 0

    async def recall_command(self, command_id: str) -> Mapping[str, Any] | None:
        """The reply stored for a command id seen within the window, or None."""
        rows = await self._read(
            "SELECT reply FROM commands WHERE command_id = ? AND received_at >= ?",
            (command_id, self._clock.now() - self.window_s),
        )
        for row in rows:
            reply: Mapping[str, Any] = json.loads(row["reply"])
            return reply
        return None

    async def recall_commands(self, command_ids: Collection[str]) -> dict[str, Mapping[str, Any]]:
        """`recall_command` for several ids in one read per 500 (`IN_CHUNK`)."""
        found: dict[str, Mapping[str, Any]] = {}
        ids = list(dict.fromkeys(command_ids))
        since = self._clock.now() - self.window_s
        for chunk, marks in in_chunks(ids):
            rows = await self._read(
                f"SELECT command_id, reply FROM commands WHERE command_id IN ({marks})"
                " AND received_at >= ?",
                (*chunk, since),
            )
            found.update((row["command_id"], json.loads(row["reply"])) for row in rows)
        return found

    async def remember_command(
        self, command_id: str, verb: str, reply: Mapping[str, Any], now: float
    ) -> None:
        """Store the reply of a handled command; a second call for the same id keeps the first.
        An entry of the same id that fell out of the window is replaced."""
        params = (command_id, verb, now, to_json(reply, "command reply"), now - self.window_s)
        await self._writer.run(lambda conn: conn.execute(_REMEMBER, params).rowcount)
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            await self.prune(now)

    def writes_refused(self) -> int:
        return self._writer.stats.refused

    async def remember_commands(
        self,
        entries: Sequence[tuple[str, str, Mapping[str, Any]]],
        now: float,
        *,
        unless_refused_since: int | None = None,
    ) -> None:
        """`remember_command` for several commands (`command_id`, verb, reply) handled
        together: one unit of the group commit for all of them instead of one each."""
        if not entries:
            return
        since = now - self.window_s
        params = [
            (command_id, verb, now, to_json(reply, "command reply"), since)
            for command_id, verb, reply in entries
        ]
        await self._writer.run(
            lambda conn: conn.executemany(_REMEMBER, params).rowcount,
            clean_since=unless_refused_since,
        )
        self._since_prune += len(params)
        if self._since_prune >= self._prune_every:
            await self.prune(now)

    async def prune(self, now: float) -> int:
        """Drop entries older than the window and all but the newest `max_rows`."""
        self._since_prune = 0
        async with self._db.lock, self._db.transaction() as conn:
            aged = await conn.execute(
                "DELETE FROM commands WHERE received_at < ?", (now - self.window_s,)
            )
            surplus = await conn.execute(
                "DELETE FROM commands WHERE command_id IN (SELECT command_id FROM commands"
                " ORDER BY received_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (self.max_rows,),
            )
        removed = max(0, aged.rowcount) + max(0, surplus.rowcount)
        self.pruned += removed
        return removed

    async def count(self) -> int:
        rows = await self._read("SELECT COUNT(*) FROM commands")
        return int(next(iter(rows))[0])
