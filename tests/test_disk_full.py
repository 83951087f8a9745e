"""A full disk (issue 21), on a REAL small filesystem (tests/support/small_disk.py: a tmpfs the test mounts):
SQLite, its WAL and the log meet the kernel's own ENOSPC. Whatever the free space, a citizen is never told
that a saved dossier failed, nor that an unsaved one was saved; the receipt's record waits in memory and
is written when space returns; the sync worker waits (and says why) instead of exiting, then sends
everything exactly once."""
import logging
import re
import sqlite3
import threading
import time

from kiosk.app import create_app
from sync.worker import station_paths, worker_from_config
from tests.support.fake_printer import FakeNetworkPrinter
from tests.support.harness import CentralThread, enrol, make_station, submit_many
from tests.support.small_disk import small_disk  # noqa: F401

from .conftest import csrf_token
from .test_agent import _add, _finish, _login
from .wizard import answer_all, submit

SLUG = "cap-phieu-ly-lich-tu-phap"  # a paper to capture: the dossier carries a PDF
DISK_KIB = 4096
STATION = {"health": {"reserve_mb": 1}}  # the smallest reserve: the test itself brings the disk down to the window


def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def _station(disk, printer, **extra):
    app = create_app({"paths": {"data": str(disk.path / "var")}, **STATION, **printer.config(), **extra})
    app.extensions["receipts"].retry_first_s = app.extensions["receipts"].retry_cap_s = 0.2
    return app


def _healthy_again(app, disk):
    """Space given back, and the station's self-check told (it looks at most every 30 s on its own)."""
    disk.free()
    health = app.extensions.get("health")
    if health is not None:
        health.refresh(force=True)


def _messages(caplog, level=logging.WARNING):
    return [record.getMessage() for record in caplog.records if record.levelno >= level]


def _all_receipts_settled(app, timeout=10.0):
    """Every receipt job finished (printed or failed with a status), the records waiting in memory written."""
    printer = app.extensions["receipts"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        printer.wait()
        pending = _rows(app, "SELECT count(*) FROM receipt_prints WHERE finished_at IS NULL")[0][0]
        if not pending and not printer.unwritten():
            return
        time.sleep(0.1)
    raise AssertionError(f"receipt jobs still pending: {pending}, in memory: {printer.unwritten()}")


def test_across_the_full_disk_window_a_saved_dossier_is_always_confirmed(small_disk, catalog, caplog):
    caplog.set_level(logging.INFO)
    disk = small_disk(DISK_KIB)
    proc = catalog[SLUG]
    seen = {"committed": 0, "refused": 0, "receipt_held": 0}
    with FakeNetworkPrinter("ok") as fake:
        app = _station(disk, fake)
        printer = app.extensions["receipts"]
        # The window where the dossier commits but its receipt record does not is a few KiB wide and moves
        # with the WAL's size: the sweep goes again (up to three times) until it has met all three cases.
        for _sweep in range(3):
            for free_kib in range(120, 4, -4):
                _healthy_again(app, disk)
                client = app.test_client()
                answer_all(client, proc)
                before = _rows(app, "SELECT count(*) FROM dossiers")[0][0]
                disk.fill_to(free_kib)
                mark = len(caplog.records)
                response = submit(client, proc)
                # Held for the disk, not only between its print and its record (a job's record waits in
                # memory for a moment on every print): the printer said why.
                held = printer.unwritten() and any("receipt records cannot be written" in r.getMessage()
                                                   for r in caplog.records[mark:])
                rows = _rows(app, "SELECT submission_id, tracking_code FROM dossiers ORDER BY rowid")
                if len(rows) > before:  # committed: the citizen sees it, with its code, whatever came after
                    seen["committed"] += 1
                    seen["receipt_held"] += bool(held)
                    assert response.status_code == 303 and response.headers["Location"] == "/done", free_kib
                    done = client.get("/done")
                    sid, code = rows[-1]
                    assert done.status_code == 200, free_kib
                    with client.session_transaction() as session:
                        assert session["submitted"]["code"] == code and session["submitted"]["id"] == sid
                    assert code in done.text and "Máy chưa lưu được hồ sơ" not in done.text
                    printing = client.get("/done/printing")
                    assert printing.status_code == 200
                else:  # not committed: said plainly, never the generic error page, and the draft kept
                    seen["refused"] += 1
                    assert response.status_code == 503, (free_kib, response.status_code)
                    assert "Máy chưa lưu được hồ sơ" in response.text and "CHƯA được nộp" in response.text
                    assert 'id="not_saved"' in response.text  # the summary's link has its place on the page
                    with client.session_transaction() as session:
                        assert "draft" in session and "submitted" not in session
                    _healthy_again(app, disk)
                    again = submit(client, proc)  # the same answers, once space is freed
                    assert again.status_code == 303 and again.headers["Location"] == "/done"
                    assert _rows(app, "SELECT count(*) FROM dossiers")[0][0] == before + 1
                    assert client.get("/done").status_code == 200
            if all(seen.values()):
                break
        _healthy_again(app, disk)
        _all_receipts_settled(app)
        jobs = fake.jobs
    # The sweep went through the window: dossiers saved with their receipt record held, and refusals.
    assert seen["committed"] and seen["refused"] and seen["receipt_held"], seen
    dossier_ids = [sid for (sid,) in _rows(app, "SELECT submission_id FROM dossiers")]
    prints = _rows(app, "SELECT submission_id, status, ok FROM receipt_prints ORDER BY id")
    assert sorted(sid for sid, _, _ in prints) == sorted(dossier_ids)  # one job each, none lost
    assert {(status, ok) for _, status, ok in prints} == {("ok", 1)} and jobs == len(dossier_ids)
    printed = _rows(app, "SELECT count(DISTINCT subject) FROM audit_events WHERE action = 'receipt.printed'")[0][0]
    assert printed == len(dossier_ids)
    messages = _messages(caplog)
    assert any("receipt records cannot be written: disk is full" in m for m in messages)
    assert any("dossier not saved, the draft kept: disk is full" in m for m in messages)
    assert not any("unhandled" in m for m in messages)


def test_a_job_whose_record_cannot_be_written_is_printed_logged_and_recorded_later(small_disk, catalog, caplog):
    caplog.set_level(logging.INFO)
    disk = small_disk(DISK_KIB)
    proc = catalog[SLUG]
    with FakeNetworkPrinter("ok", answer_delay_s=0.5) as fake:  # the job is on its way when the disk fills
        app = _station(disk, fake)
        printer = app.extensions["receipts"]
        client = app.test_client()
        answer_all(client, proc)
        assert submit(client, proc).status_code == 303
        disk.fill_to(0)
        printer.wait()
        assert fake.jobs == 1
        [(sid, finished)] = _rows(app, "SELECT submission_id, finished_at FROM receipt_prints")
        assert finished is None and printer.unwritten() == 1  # the database could not take the outcome
        assert printer.latest(None, sid)["state"] == "printed"  # but the page is told how it went
        assert "Đã in giấy tiếp nhận hồ sơ" in client.get("/done/printing").text
        held = [m for m in _messages(caplog) if "receipt records cannot be written" in m]
        assert len(held) == 1 and "disk is full" in held[0]
        time.sleep(0.6)  # retries meanwhile: no second log line for the same episode
        assert len([m for m in _messages(caplog) if "receipt records cannot be written" in m]) == 1
        _healthy_again(app, disk)
        _all_receipts_settled(app)
    assert _rows(app, "SELECT status, ok FROM receipt_prints") == [("ok", 1)]
    assert _rows(app, "SELECT count(*) FROM audit_events WHERE action = 'receipt.printed'") == [(1,)]
    assert any("receipt records written again (it was: disk is full)" in m for m in _messages(caplog))


def test_at_the_counter_a_full_disk_keeps_the_draft_and_says_so(small_disk, catalog, caplog):
    disk = small_disk(DISK_KIB)
    proc = catalog["dang-ky-khai-tu"]
    with FakeNetworkPrinter("ok") as fake:
        app = _station(disk, fake, station={"kind": "counter", "id": "BD01"})
        _add(app, "minh")
        client = app.test_client()
        _login(client, "minh")
        answer_all(client, proc)
        page = client.get(f"/agent/p/{proc.slug}/finish")
        form = {"csrf_token": csrf_token(page.text), "delivery": "counter", "consent": "yes",
                "fee": re.search(r'name="fee" [^>]*value="(\d*)"', page.text).group(1),
                "documents": [d["id"] for d in proc.documents if d["required"] and d["kind"] == "show"]}
        disk.fill_to(0)
        refused = client.post(f"/agent/p/{proc.slug}/finish", data=form)
        assert refused.status_code == 503 and "Máy chưa lưu được hồ sơ" in refused.text
        assert _rows(app, "SELECT count(*) FROM dossiers") == [(0,)]
        _healthy_again(app, disk)
        saved = _finish(client, proc)  # the same draft, once space is freed
        assert saved.status_code == 303 and "/agent/d/" in saved.headers["Location"]
        _all_receipts_settled(app)
        # A reprint on a full disk: staff are told why, nothing is counted or printed; later it works.
        dossier_page = client.get(saved.headers["Location"])
        key = re.search(r'name="reprint_key" value="([^"]+)"', dossier_page.text).group(1)
        reprint_url = saved.headers["Location"].rstrip("/") + "/reprint"
        jobs_before = _rows(app, "SELECT count(*) FROM receipt_prints")
        disk.fill_to(0)
        told = client.post(reprint_url, data={"csrf_token": csrf_token(dossier_page.text), "reprint_key": key},
                           follow_redirects=True)
        assert told.status_code == 200 and "Chưa in lại được" in told.text and "disk is full" in told.text
        # The dossier page itself: who viewed a citizen's details cannot be recorded, so they stay hidden.
        assert "Tạm ẩn thông tin của người nộp" in told.text and "data-answers-hidden" in told.text
        assert _rows(app, "SELECT count(*) FROM receipt_prints") == jobs_before
        _healthy_again(app, disk)
        again = client.post(reprint_url, data={"csrf_token": csrf_token(dossier_page.text), "reprint_key": key},
                            follow_redirects=True)
        assert "Đã gửi lệnh in lại" in again.text
        _all_receipts_settled(app)
    assert _rows(app, "SELECT count(*) FROM dossiers") == [(1,)]
    assert any("reprint not recorded, nothing printed: disk is full" in m for m in _messages(caplog))
    assert any("dossier not saved at the counter, the draft kept: disk is full" in m for m in _messages(caplog))


def test_the_sync_worker_waits_out_a_full_disk_then_sends_everything_once(small_disk, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dvc.sync")
    disk = small_disk(DISK_KIB)
    with CentralThread(tmp_path / "central") as central:
        config = make_station(disk.path / "station", central.url,
                              sync={"base_delay": 0.05, "max_delay": 0.3, "idle_interval": 0.05, "timeout": 5})
        enrol(central.central, config)
        ids = submit_many(config, 6)
        worker = worker_from_config(config)
        disk.fill_to(0)
        stop = threading.Event()
        result = {}
        thread = threading.Thread(target=lambda: result.update(worker.run(stop)), daemon=True)
        thread.start()
        time.sleep(1.5)  # several cycles on a full disk
        assert thread.is_alive(), "the worker gave up on a full disk"
        waiting = [r.getMessage() for r in caplog.records if "disk is full; waiting" in r.getMessage()]
        assert len(waiting) == 1  # once per episode, not once per cycle
        # Nothing recorded as sent that was not: read as committed, through a connection of its own (the
        # worker's may be inside a transaction that the full disk is about to roll back).
        committed = sqlite3.connect(f"file:{station_paths(config)['database']}?mode=ro", uri=True)
        try:
            assert committed.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0] == len(ids)
        finally:
            committed.close()
        disk.free()
        deadline = time.monotonic() + 20
        while worker.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        assert result.get("storage", 0) >= 2  # it did back off, cycle after cycle
        assert worker.pending() == 0
        assert worker.run(until_empty=True, max_seconds=10).get("acked", 0) == 0  # nothing left to send
        sent = dict(worker.conn.execute("SELECT submission_id, central_code FROM dossiers").fetchall())
        assert set(sent) == set(ids) and all(sent.values())
        assert all(central.central.store.submission(sid)["central_code"] == sent[sid] for sid in ids)
        assert central.central.store.count() == len(ids)  # each acknowledged once by the central
        acks = worker.conn.execute("SELECT count(*) FROM audit_events WHERE action = 'dossier.acknowledged'")
        assert acks.fetchone()[0] == len(ids)
        worker.close()
    assert any("database takes writes again (it was: disk is full)" in r.getMessage() for r in caplog.records)
    assert not any("unhandled" in r.getMessage() for r in caplog.records)
