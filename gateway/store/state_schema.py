"""The schema of state.db: tickets, their events, the outbox, the command log and the noise
state (DESIGN.md sections 3 and 6).

Append a `Migration` to change it; never edit a released one. `schema_version` records what
has been applied, so an older gateway refuses a newer file instead of corrupting it.
"""

from __future__ import annotations

from gateway.store.sqlite import Migration

STATE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        statements=(
            """
            CREATE TABLE tickets (
                id               TEXT PRIMARY KEY,
                key              TEXT NOT NULL,
                site             TEXT NOT NULL,
                asset            TEXT NOT NULL,
                fault_code       TEXT NOT NULL,
                detector         TEXT NOT NULL,
                priority         TEXT NOT NULL,
                state            TEXT NOT NULL,
                revision         INTEGER NOT NULL CHECK (revision >= 1),
                opened_at        REAL NOT NULL,
                first_seen       REAL NOT NULL,
                last_seen        REAL NOT NULL,
                occurrences      INTEGER NOT NULL CHECK (occurrences >= 1),
                peak_value       REAL,
                message          TEXT NOT NULL,
                condition_active INTEGER NOT NULL,
                central_id       TEXT,
                acknowledged_at  REAL,
                evidence         TEXT NOT NULL  -- JSON object
            )
            """,
            # The rule "at most one open ticket per dedup key" (DESIGN.md section 6), enforced
            # by the database as well as by the ticket service.
            """
            CREATE UNIQUE INDEX tickets_one_open_per_key ON tickets (key)
                WHERE state NOT IN ('CLOSED', 'CANCELLED')
            """,
            """
            CREATE TABLE ticket_events (
                id        INTEGER PRIMARY KEY,
                ticket_id TEXT NOT NULL REFERENCES tickets (id),
                revision  INTEGER NOT NULL,
                kind      TEXT NOT NULL,
                ts        REAL NOT NULL,
                detail    TEXT NOT NULL,  -- JSON object
                UNIQUE (ticket_id, revision)
            )
            """,
            # AUTOINCREMENT: a sequence number is never reused, even after the newest rows are
            # purged, so `seq` can serve as the per-gateway CloudEvents sequence.
            """
            CREATE TABLE outbox (
                seq          INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id     TEXT NOT NULL UNIQUE,
                topic        TEXT NOT NULL,
                payload      BLOB NOT NULL,
                kind         TEXT NOT NULL,
                created_at   REAL NOT NULL,
                attempts     INTEGER NOT NULL DEFAULT 0,
                last_sent_at REAL,
                settled_at   REAL,
                ticket_id    TEXT
            )
            """,
            "CREATE INDEX outbox_unsettled ON outbox (seq) WHERE settled_at IS NULL",
            # Counters that must keep rising across restarts, such as the CloudEvents sequence.
            """
            CREATE TABLE counters (
                name  TEXT PRIMARY KEY,
                value INTEGER NOT NULL
            )
            """,
        ),
    ),
    # SLA deadlines, closing time and lifecycle attributes on tickets; the command
    # log that makes a replayed central command (same `command_id`) have no second effect.
    Migration(
        version=2,
        statements=(
            "ALTER TABLE tickets ADD COLUMN respond_by REAL",
            "ALTER TABLE tickets ADD COLUMN resolve_by REAL",
            "ALTER TABLE tickets ADD COLUMN closed_at REAL",
            "ALTER TABLE tickets ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}'",
            "CREATE INDEX tickets_by_key_closed ON tickets (key, closed_at)",
            """
            CREATE TABLE commands (
                command_id  TEXT PRIMARY KEY,
                verb        TEXT NOT NULL,
                received_at REAL NOT NULL,
                reply       TEXT NOT NULL  -- JSON object: the reply sent the first time
            )
            """,
        ),
    ),
    # Operator decisions that must survive a restart, or a shelved condition and an
    # asset in maintenance would start opening tickets again. One row per shelved condition
    # (dedup key) and per asset in maintenance mode; OUT_OF_SERVICE follows from the latter.
    # `until` NULL is a one-shot shelve, which ends when the condition next clears.
    Migration(
        version=3,
        statements=(
            """
            CREATE TABLE shelved_conditions (
                key    TEXT PRIMARY KEY,
                until  REAL,
                reason TEXT NOT NULL,
                actor  TEXT NOT NULL,
                set_at REAL NOT NULL
            )
            """,
            """
            CREATE TABLE asset_maintenance (
                asset  TEXT PRIMARY KEY,
                until  REAL NOT NULL,
                actor  TEXT NOT NULL,
                set_at REAL NOT NULL
            )
            """,
        ),
    ),
    # An alarm flood in progress and chattering conditions survive a restart too, or
    # a restart in the middle of a storm would open a ticket per condition again. One row per
    # area in flood (members, folded and quieted keys as JSON: a few hundred keys at most), the
    # flood detector's recent arrivals (pruned to the last hour by the gateway), and one row per
    # CHATTERING condition with its recent raise times.
    Migration(
        version=4,
        statements=(
            """
            CREATE TABLE area_floods (
                area              TEXT PRIMARY KEY,
                started_at        REAL NOT NULL,
                incident_key      TEXT,
                published_members INTEGER NOT NULL,
                published_at      REAL,                -- NULL: incident never published
                members           TEXT NOT NULL,       -- JSON array of member objects
                folded            TEXT NOT NULL,       -- JSON array of dedup keys
                quieted           TEXT NOT NULL        -- JSON array of dedup keys
            )
            """,
            """
            CREATE TABLE flood_arrivals (
                id         INTEGER PRIMARY KEY,
                area       TEXT NOT NULL,
                ts         REAL NOT NULL,
                key        TEXT NOT NULL,
                asset      TEXT NOT NULL,
                fault_code TEXT NOT NULL
            )
            """,
            "CREATE INDEX flood_arrivals_by_ts ON flood_arrivals (ts)",
            """
            CREATE TABLE chattering_conditions (
                key    TEXT PRIMARY KEY,
                raises TEXT NOT NULL  -- JSON array of raise times still in the chatter window
            )
            """,
        ),
    ),
    # An outbox row keeps the MQTT 5 properties decided when its message was
    # built (content type, user properties as a JSON array of pairs), so a send never parses
    # the payload again; rows from before keep NULL and the uplink derives them once more.
    # `coalesce_key`: at most one unsettled message per key (a `resync` of a ticket cannot pile
    # up). The command log is pruned by age, hence the index on `received_at`.
    Migration(
        version=5,
        statements=(
            "ALTER TABLE outbox ADD COLUMN content_type TEXT",
            "ALTER TABLE outbox ADD COLUMN user_properties TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE outbox ADD COLUMN coalesce_key TEXT",
            """
            CREATE UNIQUE INDEX outbox_coalesced ON outbox (coalesce_key)
                WHERE settled_at IS NULL AND coalesce_key IS NOT NULL
            """,
            "CREATE INDEX outbox_unsettled_by_ticket ON outbox (ticket_id)"
            " WHERE settled_at IS NULL",
            "CREATE INDEX commands_by_received_at ON commands (received_at)",
        ),
    ),
    # Outcome KPIs and eradication read the tickets closed in the last weeks at
    # start; opened_at has no index of its own either.
    Migration(
        version=6,
        statements=(
            "CREATE INDEX tickets_by_closed_at ON tickets (closed_at)",
            "CREATE INDEX tickets_by_opened_at ON tickets (opened_at)",
        ),
    ),
    # Storms by signature, and members saved one row each. A flood's members were
    # one JSON array rewritten with every new member (2.8 ms per finding at the start of a
    # 5000-condition burst, 50 ms at the end); `storm_members` holds them as rows (scope
    # `area:<area>` for floods, `group:<group key>` for storms), moved over from the arrays.
    # `group_storms` is one row per group key being counted, `group_arrivals` the group
    # counts' new conditions of the window (24 h by default, pruned by the gateway).
    Migration(
        version=7,
        statements=(
            """
            CREATE TABLE storm_members (
                scope      TEXT NOT NULL,
                key        TEXT NOT NULL,
                asset      TEXT NOT NULL,
                fault_code TEXT NOT NULL,
                area       TEXT NOT NULL DEFAULT '',
                first_seen REAL NOT NULL,
                arrivals   INTEGER NOT NULL,
                member     INTEGER NOT NULL DEFAULT 1,  -- 0: a quieted ticket, not a member
                folded     INTEGER NOT NULL DEFAULT 0,
                quieted    INTEGER NOT NULL DEFAULT 0,
                linked     INTEGER NOT NULL DEFAULT 0,
                held       INTEGER NOT NULL DEFAULT 0,  -- held by group_wait
                finding    TEXT,                        -- JSON: what raised it, `active`
                PRIMARY KEY (scope, key)
            )
            """,
            """
            INSERT INTO storm_members (scope, key, asset, fault_code, first_seen, arrivals)
            SELECT 'area:' || f.area, json_extract(m.value, '$.key'),
                   json_extract(m.value, '$.asset'), json_extract(m.value, '$.fault_code'),
                   json_extract(m.value, '$.first_seen'), json_extract(m.value, '$.arrivals')
            FROM area_floods AS f, json_each(f.members) AS m
            """,
            """
            INSERT OR IGNORE INTO storm_members
                (scope, key, asset, fault_code, first_seen, arrivals, member)
            SELECT 'area:' || f.area, q.value, '', '', f.started_at, 0, 0
            FROM area_floods AS f, json_each(f.quieted) AS q
            """,
            """
            UPDATE storm_members SET folded = 1 WHERE EXISTS (
                SELECT 1 FROM area_floods AS f, json_each(f.folded) AS x
                WHERE 'area:' || f.area = storm_members.scope AND x.value = storm_members.key)
            """,
            """
            UPDATE storm_members SET quieted = 1 WHERE EXISTS (
                SELECT 1 FROM area_floods AS f, json_each(f.quieted) AS x
                WHERE 'area:' || f.area = storm_members.scope AND x.value = storm_members.key)
            """,
            "UPDATE area_floods SET members = '[]', folded = '[]', quieted = '[]'",
            """
            CREATE TABLE group_storms (
                group_key         TEXT PRIMARY KEY,
                labels            TEXT NOT NULL,       -- JSON object
                hold_until        REAL,
                incident_key      TEXT,
                started_at        REAL,
                root              TEXT,                -- JSON object: the named root cause
                predecessor       TEXT,
                published_members INTEGER NOT NULL DEFAULT 0,
                published_at      REAL,
                published_root    TEXT
            )
            """,
            """
            CREATE TABLE group_arrivals (
                id         INTEGER PRIMARY KEY,
                group_key  TEXT NOT NULL,
                ts         REAL NOT NULL,
                key        TEXT NOT NULL,
                asset      TEXT NOT NULL,
                fault_code TEXT NOT NULL
            )
            """,
            "CREATE INDEX group_arrivals_by_ts ON group_arrivals (ts)",
        ),
    ),
)
