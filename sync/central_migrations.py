"""Versioned migrations for the central's database, one runner for SQLite and PostgreSQL.

``MIGRATIONS`` is the ordered history of the schema. Each migration has a name that never changes once
released and its SQL, written once; where the dialects differ a statement is a ``Dialects`` pair, spelled
out in full for each. ``migrate`` applies the ones a database lacks, in order, each in one transaction
together with its row in ``schema_migrations`` (name, applied_at): a migration that fails leaves nothing
behind, and the central refuses to start, naming it.

Two centrals starting at once never both apply a migration: every migration transaction first takes the
write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``pg_advisory_xact_lock``, DDL being transactional
there) and only then reads what is already applied.

A database made before migrations existed (the central's tables, no ``schema_migrations``) is adopted: it
is checked to have the first migration's schema and identity rows, and that migration is recorded as
applied without running it.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone


class MigrationError(RuntimeError):
    """The central's database cannot be brought to this release's schema; the central must not start."""


@dataclass(frozen=True)
class Dialects:
    """One statement spelled for each dialect, where they differ."""
    sqlite: str
    postgres: str


@dataclass(frozen=True)
class Migration:
    name: str
    statements: tuple  # each a str (both dialects) or a Dialects; one SQL statement each, no parameters

    def sql(self, dialect: str) -> list[str]:
        return [s if isinstance(s, str) else getattr(s, dialect) for s in self.statements]


# Change numbers: INTEGER is 64 bits in SQLite already; PostgreSQL needs BIGINT for a province's millions.
_STATIONS = """CREATE TABLE stations (
        station_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
        enrolled_at TEXT NOT NULL, revoked_at TEXT, last_change {counter} NOT NULL DEFAULT 0)"""
_CHANGES = """CREATE TABLE changes (
        station_id TEXT NOT NULL, seq {counter} NOT NULL, submission_id TEXT NOT NULL, status TEXT NOT NULL,
        at TEXT NOT NULL, actor TEXT NOT NULL, PRIMARY KEY (station_id, seq))"""
_NOTIFICATIONS = """CREATE TABLE notifications (
        station_id TEXT NOT NULL, seq {counter} NOT NULL, channel TEXT NOT NULL, submission_id TEXT NOT NULL,
        status TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL, claimed_until TEXT, created_at TEXT NOT NULL, sent_at TEXT,
        last_error TEXT, PRIMARY KEY (station_id, seq, channel))"""

MIGRATIONS: list[Migration] = [
    # The schema as the central made it before it had migrations (adopted as is on such a database).
    Migration("m001_central_schema", (
        Dialects(sqlite=_STATIONS.format(counter="INTEGER"), postgres=_STATIONS.format(counter="BIGINT")),
        """CREATE TABLE submissions (
        submission_id TEXT PRIMARY KEY, station_id TEXT NOT NULL REFERENCES stations(station_id),
        payload_sha256 TEXT NOT NULL, central_code TEXT NOT NULL UNIQUE, tracking_code TEXT NOT NULL,
        procedure_code TEXT NOT NULL, document TEXT NOT NULL, received_at TEXT NOT NULL,
        status TEXT NOT NULL, status_at TEXT NOT NULL)""",
        "CREATE INDEX submissions_status ON submissions(status, received_at)",
        "CREATE TABLE code_sequence (day TEXT PRIMARY KEY, last INTEGER NOT NULL)",
        # Who this store is: store_id made once, with the database (the INSERT below), generation raised
        # by every restore (kiosk central restore, or found out at start from the code watermark).
        # Stations compare both to see it went back in time.
        "CREATE TABLE store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE UNIQUE INDEX submissions_tracking ON submissions(station_id, tracking_code)",
        Dialects(sqlite=_CHANGES.format(counter="INTEGER"), postgres=_CHANGES.format(counter="BIGINT")),
        # 32 random hex digits, as uuid4().hex made them (gen_random_uuid: PostgreSQL 13 or later).
        Dialects(
            sqlite="INSERT INTO store_meta (name, value) VALUES "
                   "('store_id', lower(hex(randomblob(16)))), ('generation', '1')",
            postgres="INSERT INTO store_meta (name, value) VALUES "
                     "('store_id', replace(gen_random_uuid()::text, '-', '')), ('generation', '1')"),
    )),
    # Retention (docs/sync.md, "Documents at rest"): when the dossier was handed over to the processing
    # system (its status first left 'received') and when its document was dropped. The document itself is
    # sealed by the store at start (a migration cannot reach the key file): 'sealed:v1:...'.
    Migration("m002_document_retention", (
        "ALTER TABLE submissions ADD COLUMN handed_over_at TEXT",
        "ALTER TABLE submissions ADD COLUMN document_purged_at TEXT",
        # Dossiers already moved on: handed over at their first change away from 'received' (else, when
        # the feed has no such change, at their latest status change, which is later: never purged early).
        "UPDATE submissions SET handed_over_at = COALESCE((SELECT MIN(c.at) FROM changes c "
        "WHERE c.submission_id = submissions.submission_id AND c.status <> 'received'), status_at) "
        "WHERE status <> 'received'",
        "CREATE INDEX submissions_handed_over ON submissions(handed_over_at)",
    )),
    # Staff accounts of the staff page: argon2 hashes, wrong-password count and lockout, deactivation.
    Migration("m003_central_staff", (
        """CREATE TABLE central_staff (
        username TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, failed_logins INTEGER NOT NULL DEFAULT 0,
        locked_until TEXT, active INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL, last_login_at TEXT)""",
    )),
    # Telling citizens of status changes (sync/notify.py, docs/sync.md "Notifications"): one row per status
    # change and channel the citizen consented to, keyed by the change it tells of, so a change is queued
    # once and sent once. No address here: it stays in the sealed document and goes with it (retention).
    # And tracking at any station: a dossier found by its tracking code as typed (dashes left out).
    Migration("m004_notifications_and_tracking", (
        Dialects(sqlite=_NOTIFICATIONS.format(counter="INTEGER"), postgres=_NOTIFICATIONS.format(counter="BIGINT")),
        "CREATE INDEX notifications_due ON notifications(state, next_attempt_at)",
        "CREATE INDEX notifications_submission ON notifications(submission_id)",
        Dialects(sqlite="CREATE INDEX submissions_tracking_compact ON submissions(replace(tracking_code, '-', ''))",
                 postgres="CREATE INDEX submissions_tracking_compact ON submissions((replace(tracking_code, '-', '')))"),
    )),
    # Satisfaction ratings (kiosk/core/ratings.py, docs/ratings.md), anonymous: the station, channel,
    # procedure, local day and moment, never a dossier; a random id sent twice with the same bytes is one
    # rating (content_sha256 tells a replay from a clash). One row per criterion answered, for the summary.
    Migration("m005_ratings", (
        """CREATE TABLE received_ratings (
        rating_id TEXT PRIMARY KEY, station_id TEXT NOT NULL REFERENCES stations(station_id),
        local_day TEXT NOT NULL, moment TEXT NOT NULL, channel TEXT NOT NULL, procedure_code TEXT NOT NULL DEFAULT '',
        content_sha256 TEXT NOT NULL)""",
        "CREATE INDEX received_ratings_day ON received_ratings(local_day, station_id)",
        """CREATE TABLE received_rating_answers (
        rating_id TEXT NOT NULL REFERENCES received_ratings(rating_id), criterion TEXT NOT NULL, level INTEGER NOT NULL,
        PRIMARY KEY (rating_id, criterion))""",
    )),
    # Station health (sync/station_health.py, docs/fleet.md): each station's latest heartbeat, one row per
    # station and hour for the fleet page's plots (pruned after 30 days), and the open alert episodes (one
    # row per station and problem while it lasts: its email is sent once). Codes and counts, nothing personal.
    Migration("m006_station_health", (
        """CREATE TABLE station_health (
        station_id TEXT PRIMARY KEY REFERENCES stations(station_id), received_at TEXT NOT NULL,
        kind TEXT NOT NULL, province TEXT NOT NULL, heartbeat TEXT NOT NULL)""",
        """CREATE TABLE station_health_history (
        station_id TEXT NOT NULL REFERENCES stations(station_id), hour TEXT NOT NULL, received_at TEXT NOT NULL,
        outbox_pending INTEGER NOT NULL, outbox_oldest_age_s INTEGER, printer TEXT, card_reader INTEGER,
        disk_free_mb INTEGER, clock_offset_s INTEGER, PRIMARY KEY (station_id, hour))""",
        "CREATE INDEX station_health_history_hour ON station_health_history(hour)",
        """CREATE TABLE station_alerts (
        station_id TEXT NOT NULL, problem TEXT NOT NULL, since TEXT NOT NULL, notified_at TEXT,
        PRIMARY KEY (station_id, problem))""",
    )),
]

# What a database made before migrations must hold to be adopted as m001_central_schema.
_BASELINE_COLUMNS = {
    "stations": ("station_id", "public_key", "name", "enrolled_at", "revoked_at", "last_change"),
    "submissions": ("submission_id", "station_id", "payload_sha256", "central_code", "tracking_code",
                    "procedure_code", "document", "received_at", "status", "status_at"),
    "code_sequence": ("day", "last"),
    "store_meta": ("name", "value"),
    "changes": ("station_id", "seq", "submission_id", "status", "at", "actor"),
}
_BASELINE_INDEXES = ("submissions_status", "submissions_tracking")
_BASELINE_META = ("store_id", "generation")

LOCK_KEY = int.from_bytes(b"dvc-migr", "big")  # the PostgreSQL advisory lock all centrals migrate under


def migrate(conn, dialect: str, migrations: list[Migration] | None = None) -> list[str]:
    """Bring the database on ``conn`` (sqlite3 in autocommit mode, i.e. ``isolation_level=None``, or
    psycopg with no transaction open) to the end of ``migrations`` (default ``MIGRATIONS``); returns the
    names applied now. Raises MigrationError, naming the migration, when one fails (it is rolled back), when
    a database without ``schema_migrations`` has only part of the central's schema, or when the database
    was migrated by a newer release."""
    migrations = MIGRATIONS if migrations is None else migrations
    names = [m.name for m in migrations]
    if len(set(names)) != len(names):
        raise MigrationError(f"migration names repeat: {names}")
    with _transaction(conn, dialect) as db:
        if not db.table_exists("schema_migrations"):
            found = [t for t in _BASELINE_COLUMNS if db.table_exists(t)]
            db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            if found:
                _adopt(db, migrations[0].name)
        unknown = sorted(set(db.applied()) - set(names))
    if unknown:
        raise MigrationError(f"the central's database was migrated by a newer release ({', '.join(unknown)}): "
                             "run that release, or restore a backup made with this one")
    applied = []
    for migration in migrations:
        with _transaction(conn, dialect) as db:
            if migration.name in db.applied():  # already there, or applied meanwhile by another central
                continue
            try:
                for sql in migration.sql(dialect):
                    db.execute(sql)
            except Exception as exc:
                raise MigrationError(f"migration {migration.name} of the central's database failed and was rolled "
                                     f"back, the central cannot start: {exc}") from exc
            db.record(migration.name)
        applied.append(migration.name)
    return applied


def _adopt(db, baseline: str) -> None:
    """Record ``baseline`` as applied to a database the central made before it had migrations, after
    checking it holds exactly what that migration would have made."""
    missing = []
    for table, columns in _BASELINE_COLUMNS.items():
        have = db.columns(table)
        missing += [f"table {table}"] if not have else [f"{table}.{c}" for c in columns if c not in have]
    missing += [f"index {i}" for i in _BASELINE_INDEXES if not db.index_exists(i)]
    if not missing:
        present = {row[0] for row in db.all("SELECT name FROM store_meta")}
        missing += [f"store_meta row {n}" for n in _BASELINE_META if n not in present]
    if missing:
        raise MigrationError(f"the database has some of the central's tables but no schema_migrations, and not "
                             f"all of {baseline} (missing: {', '.join(missing)}): the central cannot adopt it")
    db.record(baseline)


@contextmanager
def _transaction(conn, dialect: str):
    """One migration's transaction, holding the lock that serialises every central's migrations."""
    if dialect == "sqlite":
        conn.execute("BEGIN IMMEDIATE")  # the write lock, up front: a second central waits here
        try:
            yield _Db(conn, dialect)
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
    else:
        with conn.transaction():  # rolled back on an exception; the lock goes with the transaction
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            yield _Db(conn, dialect)


class _Db:
    def __init__(self, conn, dialect: str):
        self.conn, self.dialect = conn, dialect

    def execute(self, sql: str) -> None:
        self.conn.execute(sql)  # no parameters: the SQL is passed through untouched

    def _run(self, sql: str, args):
        return self.conn.execute(sql.replace("?", "%s") if self.dialect == "postgres" else sql, args)

    def all(self, sql: str, args=()) -> list:
        return list(self._run(sql, args).fetchall())

    def applied(self) -> list[str]:
        return [row[0] for row in self.all("SELECT name FROM schema_migrations")]

    def record(self, name: str) -> None:
        applied_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._run("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, applied_at))

    def table_exists(self, table: str) -> bool:
        if self.dialect == "sqlite":
            return bool(self.all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))
        return bool(self.all("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
                             "AND table_name = ?", (table,)))

    def columns(self, table: str) -> set[str]:
        if self.dialect == "sqlite":
            return {row[1] for row in self.all("SELECT * FROM pragma_table_info(?)", (table,))}
        return {row[0] for row in self.all("SELECT column_name FROM information_schema.columns "
                                           "WHERE table_schema = current_schema() AND table_name = ?", (table,))}

    def index_exists(self, index: str) -> bool:
        if self.dialect == "sqlite":
            return bool(self.all("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (index,)))
        return bool(self.all("SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ?",
                             (index,)))
