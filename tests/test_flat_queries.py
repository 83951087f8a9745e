"""Queries that stay flat as dossiers pile up (issue 18): every query a staff or citizen page and the sync
worker's cycle run reads an index range or a kept count, never every dossier, pending row or ledger line;
the counts kept by triggers (kiosk/core/migrations.py, m017) equal a recount after every kind of change,
a rollback included; the name search finds exactly what it found before."""
import re
import sqlite3
import uuid

import pytest

from kiosk.core import db, documents, dossiers, outbox
from kiosk.core.masking import mask_name
from kiosk.core.migrations import migrations, retally, tally_drift
from sync import worker
from tests.bench.scale_bench import ScaleStation, bench_scale, print_scale_rows, trace_queries

BIG = {"dossiers", "outbox", "ledger", "sync_acks", "audit_events", "dossier_documents", "receipt_prints",
       "sync_bundle_items", "draft_pages", "drafts"}
# Walked in order and cut by a LIMIT, or partial (holding only the rows the query wants): a SCAN of these
# reads no more than the page shows.
WALKED = {"dossiers_submitted", "dossiers_corrections", "audit_code_changed", "audit_reissued",
          "outbox_open_refusals", "sync_acks_to_purge", "outbox_deferred", "outbox_pending_errors"}
SQL_START = re.compile(r"\s*(SELECT|WITH)\b", re.I)
TABLE_AS = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(?!ON\b|USING\b|WHERE\b|JOIN\b|LEFT\b|CROSS\b|"
                      r"INDEXED\b|GROUP\b|ORDER\b|LIMIT\b)(\w+))?", re.I)


def _aliases(sql: str) -> dict[str, str]:
    found = {}
    for table, alias in TABLE_AS.findall(sql):
        found[table] = table
        if alias:
            found[alias] = table
    return found


def full_scans(conn: sqlite3.Connection, sql: str) -> list[str]:
    """The plan lines of ``sql`` that read a whole big table or a whole index of one."""
    names = _aliases(sql)
    bad = []
    for line in (row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)):
        match = re.match(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", line)
        if not match or names.get(match.group(1), match.group(1)) not in BIG:
            continue
        if match.group(2) in WALKED:
            continue
        if re.search(r"FROM audit_events ORDER BY seq DESC LIMIT 1$", sql):
            continue  # the chain's last event: the table's end, one row
        bad.append(line)
    return bad


@pytest.fixture(scope="module")
def station(tmp_path_factory):
    """A counter station loaded through the submit path with the bench's mix (acknowledged, purged,
    pending, refused, corrected, reprinted), 1,500 dossiers."""
    loaded = ScaleStation(tmp_path_factory.mktemp("flat"))
    loaded.load_to(1500)
    yield loaded
    loaded.close()


def test_no_page_and_no_worker_query_reads_a_whole_table(station):
    client = station.logged_in_client()
    with station.clock.patched(), trace_queries(station) as seen:
        for name, url in station.targets().items():
            seen.append(f"-- {name}")
            assert client.get(url).status_code in (200, 303), name
        for name, call in station.worker_queries().items():
            seen.append(f"-- {name}")
            call()
    where, found, checked = "", [], 0
    for sql in seen:
        if sql.startswith("-- "):
            where = sql[3:]
        elif SQL_START.match(sql):
            checked += 1
            found += [f"{where}: {line}: {sql[:160]}" for line in full_scans(station.conn, sql)]
    assert checked > 60
    assert found == []


def _plan(conn, sql, params=()) -> str:
    return " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))


def test_the_counts_read_the_tally_and_the_ends_of_indexes(station):
    conn = station.conn
    with trace_queries(station) as seen:
        outbox.pending_count(conn), outbox.counts(conn), outbox.rejected_open_count(conn)
        outbox.waiting(conn), outbox.pending_station_ids(conn), documents.pending_bytes(conn)
    for sql in seen:
        assert "outbox_tally" in sql or "document_tally" in sql or "MIN(enqueued_at)" in sql, sql
    assert "COVERING INDEX outbox_waiting (state=?)" in _plan(conn, "SELECT MIN(enqueued_at) FROM outbox "
                                                                    "WHERE state = 'pending'")
    with trace_queries(station) as seen:
        outbox.next_due(conn)
        worker.purge_candidates(conn, "2030-01-01", "2030-01-01", 500)
        outbox.pending_with_error(conn, "central_restored:")
    plans = [_plan(conn, sql) for sql in seen]
    assert "outbox_pending (state=?)" in plans[0] and "INDEX outbox_deferred" in plans[0]
    assert plans[1].startswith("SEARCH a USING INDEX sync_acks_to_purge (acknowledged_at<?)")
    assert "INDEX outbox_pending_errors (last_error>? AND last_error<?)" in plans[2]


def test_the_name_search_reads_a_range_of_the_name_index(station):
    conn = station.conn
    with trace_queries(station) as seen:
        dossiers.search_masked_name(conn, "Nguyễn V")
    plans = [_plan(conn, sql) for sql in seen if "applicant_masked" in sql]
    assert len(plans) == 3
    assert "COVERING INDEX dossiers_applicant (applicant_masked=?)" in plans[0] and "TEMP B-TREE FOR ORDER" not in plans[0]
    assert all("COVERING INDEX dossiers_applicant (applicant_masked>? AND applicant_masked<?)" in p for p in plans[1:])
    assert "rowid IN" in seen[-1] and "INTEGER PRIMARY KEY" in _plan(conn, seen[-1])
    code = station.submitted[-3][1]
    assert "dossiers_tracking_compact (<expr>=?)" in _plan(
        conn, "SELECT * FROM dossiers WHERE replace(tracking_code, '-', '') = ?", (code.replace("-", ""),))


# --- the counts kept equal a recount --------------------------------------------------------------------

def _recounted(conn) -> dict:
    """What the functions said before the tally: the same questions, counted over the rows."""
    return {
        "counts": dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()),
        "pending": conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0],
        "open": conn.execute("SELECT COUNT(*) FROM outbox o WHERE o.state = 'rejected' AND NOT EXISTS "
                             "(SELECT 1 FROM dossiers s WHERE s.supersedes = o.submission_id)").fetchone()[0],
        "stations": dict(conn.execute("SELECT d.station_id, COUNT(*) FROM outbox o JOIN dossiers d USING "
                                      "(submission_id) WHERE o.state = 'pending' GROUP BY d.station_id")),
        "waiting": tuple(conn.execute(
            "WITH p AS (SELECT o.enqueued_at, MAX(b.created_at) AS bundled_at FROM outbox o "
            "LEFT JOIN sync_bundle_items i ON i.submission_id = o.submission_id LEFT JOIN sync_bundles b "
            "ON b.bundle_id = i.bundle_id WHERE o.state = 'pending' GROUP BY o.submission_id) "
            "SELECT COUNT(*), MIN(enqueued_at), COUNT(bundled_at), MAX(bundled_at), "
            "MIN(CASE WHEN bundled_at IS NULL THEN enqueued_at END) FROM p").fetchone()),
        "bytes": conn.execute("SELECT coalesce(sum(size_bytes), 0) FROM dossier_documents "
                              "WHERE uploaded_at IS NULL AND pdf_sealed IS NOT NULL").fetchone()[0],
        "rejected": [tuple(r) for r in conn.execute(
            "SELECT d.tracking_code FROM outbox o JOIN dossiers d USING (submission_id) WHERE o.state = 'rejected' "
            "AND NOT EXISTS (SELECT 1 FROM dossiers s WHERE s.supersedes = o.submission_id) ORDER BY d.submitted_at")],
        "next_due": tuple(conn.execute("SELECT MIN(next_attempt_at), MAX(deferred_at) FROM outbox "
                                       "WHERE state = 'pending'").fetchone()),
    }


def _kept(conn) -> dict:
    w = outbox.waiting(conn)
    return {"counts": outbox.counts(conn), "pending": outbox.pending_count(conn),
            "open": outbox.rejected_open_count(conn), "stations": outbox.pending_station_ids(conn),
            "waiting": (w["count"], w["oldest"], w["on_stick"], w["on_stick_at"], w["not_on_stick_oldest"]),
            "bytes": documents.pending_bytes(conn),
            "rejected": [(r["tracking_code"],) for r in outbox.rejected(conn)],
            "next_due": tuple(outbox.next_due(conn))}


def _agree(conn) -> None:
    assert tally_drift(conn) == []
    assert _kept(conn) == _recounted(conn)


def _document(conn, sid: str, name: str, size: int) -> None:
    conn.execute("INSERT INTO dossier_documents (submission_id, document_id, position, sha256, size_bytes, pages, "
                 "pdf_sealed) VALUES (?, ?, 0, ?, ?, 1, x'00')", (sid, name, uuid.uuid4().hex, size))


def test_the_kept_counts_equal_a_recount_after_every_kind_of_change(tmp_path):
    station = ScaleStation(tmp_path)
    conn = station.conn
    try:
        station.load_to(900)  # submits, acknowledgements, refusals, corrections, purges (the bench's mix)
        _agree(conn)
        pending = [sid for sid, _ in station.submitted if outbox.get(conn, sid)["state"] == "pending"]
        sent = [sid for sid, _ in station.submitted if outbox.get(conn, sid)["state"] == "sent"]
        with db.write_transaction(conn):  # papers: kept, two uploaded, one unsent again, one purged
            for n, sid in enumerate(pending[:4] + sent[-2:]):
                _document(conn, sid, "cccd", 1000 + n)
        for sid in pending[:2]:
            documents.mark_uploaded(conn, conn.execute("SELECT sha256 FROM dossier_documents "
                                                       "WHERE submission_id = ?", (sid,)).fetchone()[0])
        _agree(conn)
        with db.write_transaction(conn):
            documents.mark_unsent(conn, [pending[0]])
            documents.purge(conn, sent[-1])
        _agree(conn)
        with db.write_transaction(conn):  # a USB stick: two bundles, one dossier on both
            for bundle, sids in (("b1", pending[:6]), ("b2", pending[4:8])):
                conn.execute("INSERT INTO sync_bundles (bundle_id, created_at, file_name, dossiers) "
                             "VALUES (?, ?, ?, ?)", (bundle, f"2024-01-0{len(bundle)}T00:00:00+00:00",
                                                     bundle, len(sids)))
                conn.executemany("INSERT INTO sync_bundle_items (bundle_id, submission_id) VALUES (?, ?)",
                                 [(bundle, sid) for sid in sids])
        _agree(conn)
        assert outbox.waiting(conn)["on_stick"] == 8
        document = {"submission_id": pending[5], "central_code": "000.00.99999999"}
        worker.record_ack(conn, document, {"document": document}, "bundle")  # a stick's dossier acknowledged
        worker.record_rejection(conn, pending[6], "bad_answers", "refused")
        with db.write_transaction(conn):
            outbox.defer(conn, pending[8:12], "timeout", "2099-01-01T00:00:00+00:00", "2024-06-01T00:00:00+00:00")
            outbox.withdraw(conn, pending[12], "gone")
            conn.execute("DELETE FROM sync_bundle_items WHERE bundle_id = 'b2' AND submission_id = ?",
                         (pending[4],))  # still on b1
            conn.execute("DELETE FROM sync_bundle_items WHERE bundle_id = 'b2' AND submission_id = ?",
                         (pending[7],))  # on none now
        _agree(conn)
        dossiers.reissue_with_new_code(conn, station.key, pending[13])  # withdrawn, sent again under a new code
        with db.write_transaction(conn):
            outbox.resend_acknowledged(conn, "central_restored: test", True, "")
            outbox.defer(conn, pending[14:16], "central_restored: again", "2099-01-01T00:00:00+00:00",
                         "2024-06-01T00:00:00+00:00")
        _agree(conn)
        assert outbox.pending_with_error(conn, "central_restored:") == conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND last_error LIKE 'central!_restored:%' "
            "ESCAPE '!'").fetchone()[0] > 0
        with db.write_transaction(conn):
            dossiers.purge_payload(conn, sent[-3])
            conn.execute("DELETE FROM outbox WHERE submission_id = ?", (pending[1],))  # (never done: checked)
        _agree(conn)
        # A crash-like rollback: everything the transaction changed goes, the counts with it.
        before = _kept(conn)
        with pytest.raises(RuntimeError), db.write_transaction(conn):
            outbox.mark_sent(conn, pending[2])
            outbox.mark_rejected(conn, pending[3], "x")
            conn.execute("INSERT INTO sync_bundle_items (bundle_id, submission_id) VALUES ('b2', ?)", (pending[9],))
            _document(conn, pending[9], "extra", 5000)
            outbox.enqueue(conn, pending[1], "2024-06-01T00:00:00+00:00")
            raise RuntimeError("power cut")
        assert _kept(conn) == before
        _agree(conn)
        station.load_to(1000)  # and on: corrections of refused ones, more purges
        _agree(conn)
    finally:
        station.close()


def test_check_full_finds_a_drift_and_recount_rebuilds(tmp_path):
    from click.testing import CliRunner

    from kiosk.cli import main

    station = ScaleStation(tmp_path)
    station.load_to(300)
    station.conn.execute("UPDATE outbox_tally SET n = n + 5 WHERE state = 'pending'")
    station.conn.commit()
    station.close()
    toml = tmp_path / "station.toml"
    toml.write_text(f'[station]\nid = "B18"\nkind = "counter"\n[paths]\ndata = "{tmp_path / "var"}"\n')
    runner = CliRunner()
    result = runner.invoke(main, ["check", "--station", str(toml), "--full"])
    assert result.exit_code == 1 and "kept counts differ" in result.output and "outbox pending (B18)" in result.output
    result = runner.invoke(main, ["check", "--station", str(toml), "--full", "--recount"])
    assert result.exit_code == 0 and "counts: rebuilt" in result.output
    result = runner.invoke(main, ["check", "--station", str(toml), "--full"])
    assert result.exit_code == 0 and "counts: kept = recounted" in result.output


def test_the_migration_fills_the_counts_from_the_rows(tmp_path):
    import sqlite_utils

    path = tmp_path / "station.db"
    conn = db.connect(path)
    with db.write_transaction(conn):
        migrations.apply(sqlite_utils.Database(conn), stop_before="m017_flat_queries")
    rows = []
    with db.write_transaction(conn):
        for n in range(12):
            sid = str(uuid.uuid4())
            rows.append(sid)
            conn.execute("INSERT INTO dossiers (submission_id, tracking_code, station_id, channel, procedure_code, "
                         "procedure_slug, procedure_version, submitted_at, payload_sealed, payload_sha256, supersedes, "
                         "applicant_masked) VALUES (?, ?, ?, 'kiosk', 'p', 'p', '1', ?, ?, 'h', ?, 'Lê T** H**')",
                         (sid, f"K01-2401{n:02d}", "K01" if n < 10 else "M02", f"2024-01-01T00:00:{n:02d}+00:00",
                          None if n in (0, 1) else b"x", rows[2] if n == 5 else None))
            conn.execute("INSERT INTO outbox (submission_id, state, enqueued_at) VALUES (?, ?, ?)",
                         (sid, "sent" if n < 4 else "rejected" if n in (2, 3, 4) else "pending",
                          f"2024-01-01T00:00:{n:02d}+00:00"))
        conn.execute("UPDATE outbox SET state = 'rejected' WHERE submission_id IN (?, ?)", (rows[2], rows[3]))
        for sid in rows[:4]:
            conn.execute("INSERT INTO sync_acks (submission_id, central_code, acknowledged_at, via, ack) "
                         "VALUES (?, 'c', '2024-01-02T00:00:00+00:00', 'online', '{}')", (sid,))
        conn.execute("INSERT INTO sync_bundles VALUES ('b', '2024-01-03T00:00:00+00:00', 'f', 2)")
        conn.executemany("INSERT INTO sync_bundle_items VALUES ('b', ?)", [(rows[6],), (rows[7],)])
        _document(conn, rows[8], "cccd", 777)
    conn.close()
    db.migrate(path)
    conn = db.connect(path)
    assert tally_drift(conn) == []
    assert _kept(conn) == _recounted(conn)
    assert outbox.counts(conn) == {"sent": 2, "rejected": 3, "pending": 7}
    assert outbox.rejected_open_count(conn) == 2  # the one a dossier supersedes is closed
    assert outbox.pending_station_ids(conn) == {"K01": 5, "M02": 2}
    assert outbox.waiting(conn)["on_stick"] == 2 and documents.pending_bytes(conn) == 777
    assert [r[0] for r in conn.execute("SELECT payload_purged FROM sync_acks ORDER BY rowid")] == [1, 1, 0, 0]
    with db.write_transaction(conn):  # rebuilding what is right changes nothing
        retally(conn)
    assert tally_drift(conn) == []
    conn.close()


# --- the name search finds what it found before ---------------------------------------------------------

def _search_before(conn, text: str, limit: int = 50) -> list:
    pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return [r["submission_id"] for r in conn.execute(
        "SELECT * FROM dossiers NOT INDEXED WHERE applicant_masked = ? OR applicant_masked LIKE ? ESCAPE '\\' "
        "ORDER BY submitted_at DESC LIMIT ?", (mask_name(text), pattern, limit))]


NAMES = ["Nguyễn Văn An", "Nguyễn Thị Bình", "NGUYỄN VĂN AN", "nguyễn văn an", "Nguyen Van An", "NGUYEN VAN AN",
         "Trần Thị Lan", "Trần Quốc Bảo", "Lê Minh", "Lê", "Phạm 100% Hà", "Vũ_Thị Mai", "Đỗ Đức Thắng",
         "Ông Ích Khiêm", "Huỳnh Ngọc Lan", "Đặng Thu Hà", "Back\\Slash Name"]
QUERIES = ["Nguyễn", "nguyễn", "NGUYỄN", "Nguyen", "nguyen", "NGUYEN V", "Nguyễn V", "Nguyễn Văn An", "Nguyễn V** A*",
           "nguyễn v** a*", "Trần", "tRẦN", "Lê", "L", "l", "Phạm 100%", "Phạm 1", "%", "_", "Vũ_", "Vũ%", "Đ", "đ",
           "Ông", "ô", "Back\\", "Back\\S", "Huỳnh Ngọc Lan", "zzz", " ", "Nguyễn  V"]


def test_the_name_search_finds_exactly_what_it_found_before(tmp_path, monkeypatch):
    path = tmp_path / "station.db"
    db.migrate(path)
    conn = db.connect(path)
    rng = __import__("random").Random(18)
    with db.write_transaction(conn):
        for n in range(2400):
            name = NAMES[rng.randrange(len(NAMES))] if n % 5 else f"Nguyễn {rng.choice('VTMH')}ăn An"
            second = rng.randrange(600)  # many dossiers of one second: the order among them counts too
            conn.execute("INSERT INTO dossiers (submission_id, tracking_code, station_id, channel, procedure_code, "
                         "procedure_slug, procedure_version, submitted_at, payload_sha256, applicant_masked) "
                         "VALUES (?, ?, 'K01', 'kiosk', 'p', 'p', '1', ?, 'h', ?)",
                         (str(uuid.uuid4()), f"T{n}", f"2024-01-01T{second // 60:02d}:{second % 60:02d}:00+00:00",
                          None if n % 97 == 0 else mask_name(name)))
    for bound in (dossiers.SEARCH_SORTED_MIN, 5, 100_000):  # the search's two ways, both tried on each
        monkeypatch.setattr(dossiers, "SEARCH_SORTED_MIN", bound)
        for query in QUERIES:
            for limit in (50, 7):
                found = [r["submission_id"] for r in dossiers.search_masked_name(conn, query, limit)]
                assert found == _search_before(conn, query, limit), (bound, query, limit)
    assert len(_search_before(conn, "Nguyễn")) == 50
    conn.close()


def test_the_scale_bench_runs_small(tmp_path, capsys):
    result = bench_scale(scale_max=3000, first=1500, repeat=2, folder=tmp_path)
    assert result["checkpoints"] == [1500, 3000]
    assert {"staff: home", "staff: search, name start", "staff: dossier page", "citizen: track, dossier",
            "worker: purge selection", "staff bar: waiting banner"} <= set(result["rows"])
    assert all(len(v) == 2 and min(v) > 0 for v in result["rows"].values())
    print_scale_rows(result)
    out = capsys.readouterr().out
    assert "| staff: search, name start |" in out and "growth" in out and "ms a dossier" in out
