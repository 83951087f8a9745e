"""The central's versioned migrations (sync/central_migrations.py), on SQLite and PostgreSQL alike: a fresh
database gets every migration and the schema the release before migrations made; a database that release
made is adopted with its rows; a second start applies nothing; a later migration is applied once, and one
that fails half-way leaves nothing behind and stops the store, naming it; centrals starting at once apply
each migration once."""
import re
import sqlite3
import threading
import uuid
from contextlib import closing, contextmanager

import pytest

from sync import central_migrations
from sync.central_migrations import Dialects, Migration, MigrationError, migrate
from sync.central_store import open_store
from tests.support import old_central_schema

from .conftest import postgres_admin

RELEASED = list(central_migrations.MIGRATIONS)  # this release's, before a test adds one
BASELINE = RELEASED[0].name


class Place:
    """Where one central database lives: a SQLite file, or a PostgreSQL schema of its own (the tests' server
    is shared: each database is a schema named in the URL's search_path)."""

    def __init__(self, dialect: str, url: str, schema: str | None = None):
        self.dialect, self.url, self.schema = dialect, url, schema

    def connect(self):
        """A plain connection, as the store makes them (SQLite in autocommit mode and WAL)."""
        if self.dialect == "sqlite":
            conn = sqlite3.connect(self.url, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        import psycopg

        return psycopg.connect(self.url)

    def rows(self, sql: str, args=()) -> list[tuple]:
        with closing(self.connect()) as conn:
            sql = sql.replace("?", "%s") if self.dialect == "postgres" else sql
            result = [tuple(r) for r in conn.execute(sql, args).fetchall()]
            conn.commit()
            return result

    def tables(self) -> set[str]:
        if self.dialect == "sqlite":
            return {r[0] for r in self.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {r[0] for r in self.rows("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = current_schema()")}

    def applied(self) -> list[tuple]:
        return self.rows("SELECT name, applied_at FROM schema_migrations ORDER BY name")

    def column_names(self, table: str) -> list[str]:
        columns = self.describe(leave_out=())["columns"][table]
        return [c[1] if self.dialect == "sqlite" else c[0] for c in columns]

    def describe(self, leave_out=("schema_migrations",)) -> dict:
        """Every table's columns (name, type, nullability, default, key), its indexes and constraints."""
        if self.dialect == "sqlite":
            tables = sorted(self.tables() - set(leave_out))
            return {
                "columns": {t: self.rows("SELECT * FROM pragma_table_info(?)", (t,)) for t in tables},
                "sql": sorted((r[0], r[1], r[2], " ".join((r[3] or "").split()))
                              for r in self.rows("SELECT type, name, tbl_name, sql FROM sqlite_master")
                              if r[2] not in leave_out),
            }
        keep = [r for r in self.rows("SELECT table_name FROM information_schema.tables "
                                     "WHERE table_schema = current_schema()") if r[0] not in leave_out]
        tables = sorted(r[0] for r in keep)
        unqualified = lambda text: text.replace(f"{self.schema}.", "")  # noqa: E731
        return {
            "columns": {t: self.rows("SELECT column_name, ordinal_position, data_type, is_nullable, column_default "
                                     "FROM information_schema.columns WHERE table_schema = current_schema() "
                                     "AND table_name = ? ORDER BY ordinal_position", (t,)) for t in tables},
            "indexes": sorted((r[0], r[1], unqualified(r[2])) for r in self.rows(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()")
                if r[0] in tables),
            "constraints": sorted((r[0], r[1], r[2], unqualified(r[3])) for r in self.rows(
                "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid) FROM pg_constraint k "
                "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema()") if r[0] in tables),
        }


@pytest.fixture(params=["sqlite", "postgres"])
def places(request, tmp_path):
    """A maker of fresh, empty central databases of one dialect."""
    if request.param == "sqlite":
        counter = iter(range(1, 1000))
        yield lambda: Place("sqlite", str(tmp_path / f"central-{next(counter)}.sqlite3"))
        return
    server = request.getfixturevalue("postgres_server")
    admin = postgres_admin(server)
    made = []

    def fresh():
        schema = f"migrations_{uuid.uuid4().hex[:12]}"
        admin.execute(f"CREATE SCHEMA {schema}")
        made.append(schema)
        separator = "&" if "?" in server else "?"
        return Place("postgres", f"{server}{separator}options=-csearch_path%3D{schema}", schema)

    with admin:
        yield fresh
        for schema in made:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@contextmanager
def store_on(place: Place):
    store = open_store(place.url)
    try:
        yield store
    finally:
        store.close()


def make_old(place: Place, with_rows=True) -> None:
    """A database as the release before migrations left it, with a station, a submission and its change."""
    with closing(place.connect()) as conn:
        old_central_schema.create(conn, place.dialect)
        if not with_rows:
            return
        mark = "?" if place.dialect == "sqlite" else "%s"
        for sql, args in [
            ("INSERT INTO stations (station_id, public_key, name, enrolled_at, last_change) VALUES (?, ?, ?, ?, ?)",
             ("K01", "cHVibGlj", "Xã Một", "2026-01-05T08:00:00.000+00:00", 1)),
            ("INSERT INTO submissions (submission_id, station_id, payload_sha256, central_code, tracking_code, "
             "procedure_code, document, received_at, status, status_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
             ("sub-1", "K01", "ab" * 32, "000.00.00.H00-260105-00007", "K01-260105-0001", "1.004884",
              '{"answers": {}}', "2026-01-05T08:01:00.000+00:00", "received", "2026-01-05T08:01:00.000+00:00")),
            ("INSERT INTO changes (station_id, seq, submission_id, status, at, actor) VALUES (?, ?, ?, ?, ?, ?)",
             ("K01", 1, "sub-1", "received", "2026-01-05T08:01:00.000+00:00", "central")),
            ("INSERT INTO code_sequence (day, last) VALUES (?, ?)", ("260105", 7)),
        ]:
            conn.execute(sql.replace("?", mark), args)
        conn.commit()


def old_store_id(place: Place) -> str:
    return place.rows("SELECT value FROM store_meta WHERE name = 'store_id'")[0][0]


def later(*statements, name="m900_test_later") -> list[Migration]:
    """This release's migrations and one more, made up for the test."""
    return RELEASED + [Migration(name, statements)]


# A made-up later migration: a table (a sequence number, spelled per dialect) and a column on a table with rows.
NOTES = (Dialects(sqlite="CREATE TABLE test_notes (station_id TEXT NOT NULL, seq INTEGER NOT NULL, note TEXT)",
                  postgres="CREATE TABLE test_notes (station_id TEXT NOT NULL, seq BIGINT NOT NULL, note TEXT)"),
         "ALTER TABLE stations ADD COLUMN region TEXT NOT NULL DEFAULT ''")


def test_a_fresh_database_gets_every_migration_and_the_schema_the_old_release_made(places):
    fresh, old, baseline_only = places(), places(), places()
    with store_on(fresh) as store:
        identity = store.identity()
    assert [name for name, _ in fresh.applied()] == sorted(m.name for m in central_migrations.MIGRATIONS)
    assert re.fullmatch(r"[0-9a-f]{32}", identity["store_id"]) and identity["generation"] == 1
    assert fresh.column_names("schema_migrations") == ["name", "applied_at"]

    # The first migration is, exactly, what the old DDL made: tables, columns, types, keys, indexes, identity.
    make_old(old, with_rows=False)
    with closing(baseline_only.connect()) as conn:
        assert migrate(conn, baseline_only.dialect, central_migrations.MIGRATIONS[:1]) == [BASELINE]
    assert baseline_only.describe() == old.describe()
    assert baseline_only.tables() - old.tables() == {"schema_migrations"}
    assert (sorted(n for n, _ in baseline_only.rows("SELECT name, value FROM store_meta"))
            == sorted(n for n, _ in old.rows("SELECT name, value FROM store_meta")) == ["generation", "store_id"])
    if len(central_migrations.MIGRATIONS) == 1:
        assert fresh.describe() == old.describe()


def test_a_database_the_old_release_made_is_adopted_with_its_rows(places):
    old = places()
    make_old(old)
    store_id = old_store_id(old)
    with store_on(old) as store:
        assert store.identity() == {"store_id": store_id, "generation": 1}
        assert store.station("K01").name == "Xã Một"
        assert store.count() == 1 and store.submission("sub-1")["central_code"] == "000.00.00.H00-260105-00007"
        assert [c["seq"] for c in store.changes("K01", 0)] == [1] and store.head("K01") == 1
        # It goes on where it was: the next change is number 2.
        assert store.set_status("sub-1", "processing", "staff")
        assert [c["seq"] for c in store.changes("K01", 0)] == [1, 2]
    assert [name for name, _ in old.applied()] == sorted(m.name for m in central_migrations.MIGRATIONS)
    assert old.rows("SELECT last FROM code_sequence WHERE day = '260105'") == [(7,)]


def test_a_second_start_applies_nothing(places):
    place = places()
    with store_on(place):
        pass
    before = place.applied()
    with store_on(place) as store:
        identity = store.identity()
    with closing(place.connect()) as conn:
        assert migrate(conn, place.dialect) == []
    assert place.applied() == before
    with store_on(place) as store:
        assert store.identity() == identity


@pytest.mark.parametrize("start", ["fresh", "old release", "this release"])
def test_a_later_migration_is_applied_once(places, monkeypatch, start):
    place = places()
    if start == "old release":
        make_old(place)
    elif start == "this release":
        with store_on(place) as store:
            store.enrol("K01", "cHVibGlj")
    monkeypatch.setattr(central_migrations, "MIGRATIONS", later(*NOTES))
    with store_on(place) as store:
        if start != "fresh":
            assert store.station("K01") is not None
    assert "m900_test_later" in [n for n, _ in place.applied()]
    assert "test_notes" in place.tables()
    assert "region" in place.column_names("stations")
    if place.dialect == "postgres":
        assert ("seq", 2, "bigint", "NO", None) in place.describe()["columns"]["test_notes"]
    before = place.applied()
    with store_on(place):
        pass
    with closing(place.connect()) as conn:
        assert migrate(conn, place.dialect) == []
    assert place.applied() == before


def test_a_migration_that_fails_half_way_leaves_nothing_and_the_store_refuses_to_start(places, monkeypatch):
    place = places()
    make_old(place)
    with store_on(place):
        pass
    schema = place.describe()
    monkeypatch.setattr(central_migrations, "MIGRATIONS",
                        later(*NOTES, "INSERT INTO stations (station_id) VALUES ('no public key')",
                              name="m900_test_broken"))
    with pytest.raises(MigrationError, match="m900_test_broken") as failed:
        open_store(place.url)
    assert "rolled back" in str(failed.value) and "cannot start" in str(failed.value)
    # Nothing of it remains: no table, no column, no record; the rows and the earlier migrations are there.
    assert place.describe() == schema and "test_notes" not in place.tables()
    assert "m900_test_broken" not in [n for n, _ in place.applied()]
    assert place.rows("SELECT station_id FROM stations") == [("K01",)]
    # Once fixed, it is applied.
    monkeypatch.setattr(central_migrations, "MIGRATIONS", later(*NOTES, name="m900_test_broken"))
    with store_on(place) as store:
        assert store.count() == 1
    assert "m900_test_broken" in [n for n, _ in place.applied()]


def test_a_database_with_only_part_of_the_schema_or_from_a_newer_release_is_refused(places):
    partial = places()
    with closing(partial.connect()) as conn:
        conn.execute("CREATE TABLE stations (station_id TEXT PRIMARY KEY)")
        conn.commit()
    with pytest.raises(MigrationError, match=f"cannot adopt.*{BASELINE}|{BASELINE}.*cannot adopt"):
        open_store(partial.url)
    assert "schema_migrations" not in partial.tables()  # refused in a transaction: nothing recorded

    newer = places()
    with store_on(newer):
        pass
    with closing(newer.connect()) as conn:
        conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES ('m999_from_the_future', 'x')")
        conn.commit()
    with pytest.raises(MigrationError, match="newer release.*m999_from_the_future"):
        open_store(newer.url)


@pytest.mark.parametrize("start", ["fresh", "old release"])
def test_centrals_starting_at_once_apply_each_migration_once(places, monkeypatch, start):
    place = places()
    if start == "old release":
        make_old(place)
    elif place.dialect == "sqlite":
        # The file exists, empty, in WAL mode: connections that race to turn a brand-new file to WAL are
        # open_store's connect(), not the migrations (one of them may be refused with "database is locked").
        place.connect().close()
    # A slow later migration widens the window in which two centrals would both apply it without the lock.
    slow = Dialects(sqlite="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) "
                           "SELECT count(*) FROM n",
                    postgres="SELECT pg_sleep(0.3)")
    monkeypatch.setattr(central_migrations, "MIGRATIONS", later(*NOTES, slow))
    n, barrier, identities, errors = 6, threading.Barrier(6), [], []

    def start_central():
        try:
            barrier.wait(timeout=10)
            with store_on(place) as store:
                identities.append(store.identity()["store_id"])
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start_central) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(identities) == n and len(set(identities)) == 1  # one identity: the baseline ran once
    names = [name for name, _ in place.applied()]
    assert sorted(names) == sorted(m.name for m in central_migrations.MIGRATIONS)
    assert place.rows("SELECT count(*) FROM store_meta") == [(2,)]
