"""One migration set for the station database (kiosk/core/migrations.py): a database made by the previous
release, whose sync tables came from a second set ("dvc-kiosk-sync"), migrates with nothing run twice and
nothing lost, and ends with the schema of a fresh one."""
import json
import sqlite3

import pytest

from kiosk.core import audit, db, dossiers, outbox
from kiosk.core.migrations import migrations
from sync.sync_cli import status_report
from tests.support import old_schema

SID = "5b0c7f3e-2f0a-4c47-9a53-6f1d2a7f0c11"
NEW_SID = "0d9e8c1b-7a6f-4e5d-8c3b-2a1f0e9d8c7b"


def schema(path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    finally:
        conn.close()


def records(path) -> list[tuple]:
    """The migration records: (id, set, name, applied_at)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, migration_set, name, applied_at FROM _sqlite_migrations ORDER BY id").fetchall()
    finally:
        conn.close()


def contents(path) -> dict[str, list[dict]]:
    """Every row of every table, in rowid order (a WITHOUT ROWID table, such as ``ratings``, in key order)."""
    conn = db.connect(path)
    try:
        tables = [(r[0], "WITHOUT ROWID" in r[1].upper()) for r in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY {'1' if keyed else 'rowid'}")]
                for t, keyed in tables}
    finally:
        conn.close()


def fill(path, with_sync: bool, with_incarnation: bool, with_restores: bool = True) -> None:
    """What a station of the previous release holds: a counter dossier acknowledged by the central and its
    reissue waiting to be sent, with the rows around them (made-up, masked data only)."""
    conn = db.connect(path)
    try:
        with db.write_transaction(conn):
            conn.execute("INSERT INTO staff (username, display_name, role, secret_hash, created_at) "
                         "VALUES ('an.nv', 'Cán bộ A', 'agent', '$argon2id$x', '2026-03-02T01:00:00+00:00')")
            for sid, code, status, central, supersedes in (
                    (SID, "K01-260302-0001", "received", "000.00.01.H29-260302-0001", None),
                    (NEW_SID, "K01-260302-0002", "queued", None, SID)):
                conn.execute(
                    "INSERT INTO dossiers (submission_id, tracking_code, station_id, channel, procedure_code, "
                    "procedure_slug, procedure_version, submitted_at, payload_sealed, payload_sha256, supersedes, "
                    "central_code, status, staff_id, local_day, fee_due_vnd, applicant_masked) "
                    "VALUES (?, ?, 'K01', 'counter', '1.000001', 'khai-sinh', '1', '2026-03-02T02:00:00+00:00', "
                    "?, ?, ?, ?, ?, 1, '2026-03-02', 8000, 'N*** V** A**')",
                    (sid, code, b"sealed" if status == "queued" else None, "ab" * 32, supersedes, central, status))
                conn.execute("INSERT INTO outbox (submission_id, state, attempts, next_attempt_at, last_error, "
                             "enqueued_at) VALUES (?, ?, 1, NULL, NULL, '2026-03-02T02:00:00+00:00')",
                             (sid, "sent" if status == "received" else "pending"))
            conn.execute("INSERT INTO daily_sequence (day, last) VALUES ('260302', 2)")
            conn.execute("INSERT INTO ledger (at, local_day, staff_id, kind, submission_id, amount_vnd) "
                         "VALUES ('2026-03-02T02:00:00+00:00', '2026-03-02', 1, 'fee', ?, 8000)", (SID,))
            conn.execute("INSERT INTO day_closings (local_day, report, report_sha256, signed_by, signed_at) "
                         "VALUES ('2026-03-01', '{}', ?, 1, '2026-03-01T11:00:00+00:00')", ("cd" * 32,))
            conn.execute("INSERT INTO receipt_prints (submission_id, requested_at, requested_by, finished_at, "
                         "status, ok) VALUES (?, '2026-03-02T02:00:01+00:00', 'an.nv', "
                         "'2026-03-02T02:00:03+00:00', 'ok', 1)", (SID,))
            conn.execute("INSERT INTO drafts (id, procedure_slug, procedure_version, answers_sealed, created_at, "
                         "touched_at) VALUES ('d1', 'khai-sinh', '1', x'00', '2026-03-02T03:00:00+00:00', "
                         "'2026-03-02T03:00:00+00:00')")
            audit.append(conn, "an.nv", "dossier.submitted", SID, {"tracking_code": "K01-260302-0001"})
            if with_incarnation:
                conn.execute("INSERT INTO incarnations (n, started_at, reason) "
                             "VALUES (1, '2026-03-01T00:00:00+00:00', 'restore')")
            if with_sync:
                envelope = {"document": {"received_at": "2026-03-02T02:00:05+00:00"}, "signature": "x"}
                conn.execute("INSERT INTO sync_acks (submission_id, central_code, acknowledged_at, via, ack) "
                             "VALUES (?, '000.00.01.H29-260302-0001', '2026-03-02T02:00:06+00:00', 'online', ?)",
                             (SID, json.dumps(envelope)))
                if with_restores:  # sync's m002: the store that acknowledged, and the lost dossiers
                    conn.execute("UPDATE sync_acks SET store = 'store-1/1' WHERE submission_id = ?", (SID,))
                    conn.execute("INSERT INTO sync_lost (submission_id, found_at) "
                                 "VALUES (?, '2026-03-03T00:00:00+00:00')", (SID,))
                conn.execute("INSERT INTO sync_state (name, value) VALUES ('changes_cursor', '7')")
                conn.execute("INSERT INTO sync_bundles (bundle_id, created_at, file_name, dossiers) "
                             "VALUES ('b1', '2026-03-02T04:00:00+00:00', 'K01-b1.dvcbundle', 1)")
                conn.execute("INSERT INTO sync_bundle_items (bundle_id, submission_id) VALUES ('b1', ?)", (NEW_SID,))
    finally:
        conn.close()


@pytest.fixture
def fresh(tmp_path):
    path = tmp_path / "fresh.db"
    db.migrate(path)
    return path


# (the station set stopped before, the sync set stopped before): None is the whole set.
PREVIOUS = {
    "previous release": (None, None),
    "the release before (no m004, sync's m002 and m003 not yet)": ("m004_incarnations", "m002_central_restores"),
}


@pytest.mark.parametrize("stops", PREVIOUS.values(), ids=PREVIOUS.keys())
def test_a_previous_database_migrates_with_its_data(tmp_path, fresh, stops):
    path = tmp_path / "station.db"
    old_schema.build(path, *stops)
    with_sync = stops[1] != "m001_sync_tables"
    with_restores = stops[1] is None
    fill(path, with_sync=with_sync, with_incarnation=stops[0] is None, with_restores=with_restores)
    before, old_records = contents(path), records(path)

    db.migrate(path)

    assert schema(path) == schema(fresh)
    after = contents(path)
    for table, rows in before.items():
        if table != "_sqlite_migrations":  # kept, but renamed: below
            assert [{k: row[k] for k in rows[0]} for row in after[table]] == rows, table
    assert [row["deferred_at"] for row in after["outbox"]] == [None, None]
    # Nothing ran twice: what the previous release applied keeps its record and time, under the new names.
    renamed = {"m001_sync_tables": "m005_sync_tables", "m002_central_restores": "m006_central_restores",
               "m003_deferred_at": "m007_deferred_at"}
    kept = [(i, "dvc-kiosk", renamed.get(name, name), at) for i, _set, name, at in old_records]
    assert records(path)[:len(kept)] == kept
    assert {name for _i, _set, name, _at in records(path)} == {m.name for m in migrations._migrations}
    assert {s for _i, s, _n, _at in records(path)} == {"dvc-kiosk"}

    conn = db.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        # The code of this release reads the kept rows.
        assert dossiers.find_by_tracking_code(conn, "K01-260302-0001")["submission_id"] == SID
        assert outbox.pending_count(conn) == 1
        report = status_report(conn)
        assert (report["pending"], report["sent"], report["bundled_pending"]) == (1, 1, int(with_sync))
        assert [item["tracking_code"] for item in report["lost"]] == (["K01-260302-0001"] if with_restores else [])
        assert audit.verify(conn) == []
    finally:
        conn.close()


@pytest.mark.parametrize("stops", PREVIOUS.values(), ids=PREVIOUS.keys())
def test_migrating_again_changes_nothing(tmp_path, stops):
    path = tmp_path / "station.db"
    old_schema.build(path, *stops)
    db.migrate(path)
    snapshot = (schema(path), contents(path))
    db.migrate(path)
    assert (schema(path), contents(path)) == snapshot


def test_a_fresh_database_is_made_by_the_one_set(fresh):
    assert [(s, n) for _i, s, n, _at in records(fresh)] == [("dvc-kiosk", m.name) for m in migrations._migrations]
    snapshot = (schema(fresh), contents(fresh))
    db.migrate(fresh)
    assert (schema(fresh), contents(fresh)) == snapshot


def test_the_previous_database_had_the_same_schema(tmp_path, fresh):
    # The fixture is faithful: the two old sets, whole, made what the one set makes. Migrating it runs only
    # what was appended since the previous release (m008 on), so a difference in the old part would stay.
    path = tmp_path / "old.db"
    old_schema.build(path)
    db.migrate(path)
    assert schema(path) == schema(fresh)


def test_a_failed_migration_changes_nothing(tmp_path):
    # Renaming the old records and applying what is pending are one transaction: when a migration fails,
    # the database is as it was, old records included, and the next start tries again.
    path = tmp_path / "station.db"
    old_schema.build(path, "m004_incarnations", "m002_central_restores")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE sync_lost (submission_id TEXT)")  # in the way of m006_central_restores
    conn.commit()
    conn.close()
    before = (schema(path), contents(path))
    with pytest.raises(sqlite3.OperationalError, match="sync_lost"):
        db.migrate(path)
    assert (schema(path), contents(path)) == before
    assert ("dvc-kiosk-sync", "m001_sync_tables") in {(s, n) for _i, s, n, _at in records(path)}
