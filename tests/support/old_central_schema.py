"""The central's schema as the release before migrations made it (``git show`` of sync/central_store.py
before sync/central_migrations.py existed), kept verbatim so tests can build a database the way that
release did: every start ran these statements, then inserted the store's identity rows."""
import uuid

_SQLITE_DDL = [
    """CREATE TABLE IF NOT EXISTS stations (
        station_id TEXT PRIMARY KEY, public_key TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
        enrolled_at TEXT NOT NULL, revoked_at TEXT, last_change INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS submissions (
        submission_id TEXT PRIMARY KEY, station_id TEXT NOT NULL REFERENCES stations(station_id),
        payload_sha256 TEXT NOT NULL, central_code TEXT NOT NULL UNIQUE, tracking_code TEXT NOT NULL,
        procedure_code TEXT NOT NULL, document TEXT NOT NULL, received_at TEXT NOT NULL,
        status TEXT NOT NULL, status_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS submissions_status ON submissions(status, received_at)",
    "CREATE TABLE IF NOT EXISTS code_sequence (day TEXT PRIMARY KEY, last INTEGER NOT NULL)",
    # Who this store is: store_id made once, generation raised by every restore (kiosk central restore,
    # or found out at start from the code watermark). Stations compare both to see it went back in time.
    "CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS submissions_tracking ON submissions(station_id, tracking_code)",
    """CREATE TABLE IF NOT EXISTS changes (
        station_id TEXT NOT NULL, seq INTEGER NOT NULL, submission_id TEXT NOT NULL, status TEXT NOT NULL,
        at TEXT NOT NULL, actor TEXT NOT NULL, PRIMARY KEY (station_id, seq))""",
]
# PostgreSQL accepts the same definitions (TEXT, INTEGER, BIGINT-free): a province with millions of
# changes would widen seq to BIGINT.
_POSTGRES_DDL = [ddl.replace("seq INTEGER", "seq BIGINT").replace("last_change INTEGER", "last_change BIGINT")
                 for ddl in _SQLITE_DDL]

_IDENTITY = ("INSERT INTO store_meta (name, value) VALUES ('store_id', ?), ('generation', '1') "
             "ON CONFLICT (name) DO NOTHING")


def create(conn, dialect: str) -> None:
    """What the old SqlCentralStore.__init__ did to ``conn`` (sqlite3 in autocommit mode, or psycopg), in one
    transaction: the tables, then the identity rows."""
    if dialect == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
        for ddl in _SQLITE_DDL:
            conn.execute(ddl)
        conn.execute(_IDENTITY, (uuid.uuid4().hex,))
        conn.commit()
    else:
        with conn.transaction():
            for ddl in _POSTGRES_DDL:
                conn.execute(ddl)
            conn.execute(_IDENTITY.replace("?", "%s"), (uuid.uuid4().hex,))
