"""A counter day played through the app and reconciled to the đồng (docs/counter-money.md): fees, an
exemption and a staff reduction, corrections that carry what was paid (the same fee: nothing taken again;
a higher fee: the difference; a lower one: money given back), reprints, a kiosk dossier; the supervisor
signs, the signed page stays frozen while live data changes, a dossier and a reprint made after the
sign-off land in the next day's report, the day is reopened with a reason and signed again."""
import hashlib
import json
import re
import sqlite3
import time
from datetime import date, timedelta

import pytest

from agent import report, staff
from kiosk.app import create_app
from kiosk.core import audit
from kiosk.core.db import connect, migrate

from tests.support.fake_printer import FakeNetworkPrinter

from .conftest import csrf_token
from .wizard import answer, answer_all, submit

PIN = "246810"
JUDICIAL, RESIDENCE, LICENCE, MARITAL = ("cap-phieu-ly-lich-tu-phap", "dang-ky-thuong-tru", "doi-giay-phep-lai-xe",
                                         "xac-nhan-tinh-trang-hon-nhan")


def _station(tmp_path, **extra):
    app = create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")},
                      **extra})
    conn = connect(app.config["DATABASE"])
    try:
        for username, name, role in (("minh", "Trần Văn Minh", "agent"), ("lan", "Phạm Thị Lan", "agent"),
                                     ("hoa", "Lê Thị Hoa", "supervisor")):
            staff.add(conn, username, name, role, PIN)
    finally:
        conn.close()
    return app


def _client(app, username):
    client = app.test_client()
    page = client.get("/agent/login")
    response = client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": username,
                                                 "secret": PIN})
    assert response.status_code == 303
    return client


def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def _prefilled(html: str) -> dict:
    """What the finish page pre-fills: the fee due shown, what was paid before (for a correction), the cash."""
    shown = re.search(r'name="fee_due_shown" value="(\d+)"', html).group(1)
    before = re.search(r'name="paid_before_shown" value="(\d+)"', html)
    cash = re.search(r'id="fee" name="fee" [^>]*value="(\d*)"', html).group(1)
    return {"fee_due_shown": shown, "fee": cash, **({"paid_before_shown": before.group(1)} if before else {})}


def _finish(client, proc, **overrides):
    """Submit the finish page as staff do: what it pre-fills, the originals ticked, consent, ``overrides``."""
    page = client.get(f"/agent/p/{proc.slug}/finish")
    assert page.status_code == 200, page.text[:500]
    form = {"csrf_token": csrf_token(page.text), "delivery": "counter", "consent": "yes", **_prefilled(page.text),
            "documents": [d["id"] for d in proc.documents if d["required"] and d["kind"] == "show"]}
    form.update(overrides)
    done = client.post(f"/agent/p/{proc.slug}/finish", data=form)
    assert done.status_code == 303, re.sub(r"\s+", " ", done.text)[:2000]
    return page, done.headers["Location"].rsplit("/", 1)[1]


def _apply(client, proc, **overrides):
    answer_all(client, proc)
    return _finish(client, proc, **overrides)[1]


def _start_correction(client, code, proc):
    page = client.get(f"/agent/d/{code}")
    started = client.post(f"/agent/d/{code}/correct", data={"csrf_token": csrf_token(page.text)})
    assert started.headers["Location"].endswith(f"/p/{proc.slug}/check"), started.headers.get("Location")


def _reprint(client, code):
    page = client.get(f"/agent/d/{code}")
    key = re.search(r'name="reprint_key" value="([^"]+)"', page.text).group(1)
    assert client.post(f"/agent/d/{code}/reprint", data={"csrf_token": csrf_token(page.text),
                                                         "reprint_key": key}).status_code == 303


def _table(html: str, name: str) -> dict[str, int]:
    """The numbers of one report table (``data-report``), by ``data-k``, as integers."""
    body = re.search(rf'data-report="{name}">(.*?)</table>', html, re.S).group(1)
    return {k: int(v.replace(".", "").replace("−", "-")) for k, v in re.findall(r'data-k="(\w+)">([^<]*)<', body)}


def _next_second():
    """Wait until a new second has begun: sign-offs, reopenings and entries are compared to the second."""
    time.sleep(1.02 - time.time() % 1)


# The whole station's day before the sign-off, worked out by hand from the plan below.
STATION = {"dossiers": 8, "fees_expected": 335000, "fees_taken": 335000, "carried": 435000,
           "refunds_expected": 100000, "refunds": 100000, "cash": 235000, "difference": 0, "reprints": 3,
           "unsynced": 8}


def test_a_counter_day_with_corrections_reconciles_to_the_dong(tmp_path, catalog):
    with FakeNetworkPrinter("ok") as printer:
        _play_the_day(_station(tmp_path, **printer.config()), catalog)


def _play_the_day(app, catalog):
    minh, lan, hoa = _client(app, "minh"), _client(app, "lan"), _client(app, "hoa")
    judicial, residence, licence = catalog[JUDICIAL], catalog[RESIDENCE], catalog[LICENCE]

    # -- the day's dossiers ------------------------------------------------------------------------
    j1 = _apply(minh, judicial)                                               # 200.000 taken
    r1 = _apply(minh, residence)                                              # 20.000 taken
    j2 = _apply(lan, judicial, fee_ground="ho-ngheo", fee_due_shown="0", fee="0")  # exempt: nothing
    l1 = _apply(lan, licence, fee_ground="other", fee_other_reason="Theo công văn số 12/CV-CA",
                fee_other_amount="100.000", fee_due_shown="100000", fee="100000")  # reduced by staff

    # A correction with the same fee: what was paid is shown, nothing more is taken.
    _start_correction(minh, r1, residence)
    page, r2 = _finish(minh, residence)
    assert f"Đã thu 20.000 đ cho hồ sơ {r1} (ngày " in page.text and 'data-to-take="0"' in page.text
    assert _prefilled(page.text)["fee"] == "0" and 'data-paid-before="20000"' in page.text

    # A correction that asks for 5 copies: the fee rules give 215.000, the 15.000 more is taken.
    _start_correction(minh, j1, judicial)
    copies_page = next(p for p in judicial.pages if any(f["name"] == "copies" for f in p["fields"]))
    changed = answer(minh, f"/p/{judicial.slug}/q/{copies_page['id']}?change=1", {"change": "1", "copies": "5"})
    assert changed.status_code == 303
    page, j1b = _finish(minh, judicial)
    assert _prefilled(page.text) == {"fee_due_shown": "215000", "paid_before_shown": "200000", "fee": "15000"}
    assert "Đã thu 200.000 đ cho hồ sơ " + j1 in page.text and "Còn phải thu 15.000 đ." in page.text

    # A correction of that correction, the student's reduction recorded: 115.000 due, 215.000 paid along
    # the chain (both payments named), 100.000 given back.
    _start_correction(lan, j1b, judicial)
    first = lan.get(f"/agent/p/{judicial.slug}/finish")
    recalculated = lan.post(f"/agent/p/{judicial.slug}/finish", data={
        "csrf_token": csrf_token(first.text), "fee_ground": "sinh-vien", "action": "recalculate"})
    assert recalculated.status_code == 200
    assert f"Đã thu 200.000 đ cho hồ sơ {j1}" in recalculated.text
    assert f"Đã thu 15.000 đ cho hồ sơ {j1b}" in recalculated.text
    assert 'data-refund="100000"' in recalculated.text and "trả lại công dân 100.000 đ" in recalculated.text
    _page, j1c = _finish(lan, judicial, fee_ground="sinh-vien", fee_due_shown="115000", fee="0")

    for client, code in ((lan, l1), (lan, l1), (minh, j1c)):
        _reprint(client, code)
    kiosk = app.test_client()  # a citizen on the station's own pages: paid later, not expected at the counter
    answer_all(kiosk, residence)
    assert submit(kiosk, residence).status_code == 303

    # -- the ledger holds the links and the money moved --------------------------------------------
    ids = dict(_rows(app, "SELECT tracking_code, submission_id FROM dossiers"))
    money = _rows(app, "SELECT kind, submission_id, from_submission_id, amount_vnd FROM ledger WHERE kind != 'reprint' "
                  "ORDER BY id")
    assert money == [("fee", ids[j1], None, 200000), ("fee", ids[r1], None, 20000), ("fee", ids[l1], None, 100000),
                     ("carried", ids[r2], ids[r1], 20000),
                     ("carried", ids[j1b], ids[j1], 200000), ("fee", ids[j1b], None, 15000),
                     ("carried", ids[j1c], ids[j1b], 215000), ("refund", ids[j1c], None, 100000)]
    conn = connect(app.config["DATABASE"])
    try:
        assert [report.paid_for(conn, ids[c]) for c in (j1, j1b, j1c, r2)] == [200000, 215000, 115000, 20000]
        assert [report.held_for(conn, ids[c]) for c in (j1, j1b, j1c)] == [0, 0, 115000]
    finally:
        conn.close()
    assert _rows(app, "SELECT fee_due_vnd FROM dossiers WHERE tracking_code IN (?, ?, ?) ORDER BY tracking_code",
                 j1, j1b, j1c) == [(200000,), (215000,), (115000,)]
    actions = [a for (a,) in _rows(app, "SELECT action FROM audit_events")]
    assert (actions.count("fee.taken"), actions.count("fee.carried"), actions.count("fee.refunded")) == (4, 3, 1)
    [(refunded,)] = _rows(app, "SELECT detail FROM audit_events WHERE action = 'fee.refunded'")
    assert json.loads(refunded) == {"amount_vnd": 100000, "due_vnd": 115000, "carried_vnd": 215000}
    detail = minh.get(f"/agent/d/{j1b}").text
    assert f"Chuyển từ hồ sơ {j1}</dt><dd class=\"summary-value\">200.000 đ · minh" in detail
    assert "Đã trả lại công dân</dt><dd class=\"summary-value\">100.000 đ · lan" in lan.get(f"/agent/d/{j1c}").text

    # -- the day's report: nothing owed, nothing counted twice --------------------------------------
    page = hoa.get("/agent/report")
    assert _table(page.text, "station") == STATION
    assert {k: v for k, v in _table(page.text, "minh").items() if k in ("fees_expected", "fees_taken", "carried",
                                                                           "difference", "reprints")} == {
        "fees_expected": 235000, "fees_taken": 235000, "carried": 220000, "difference": 0, "reprints": 1}
    lan_table = _table(page.text, "lan")
    assert (lan_table["fees_expected"], lan_table["refunds_expected"], lan_table["fees_taken"], lan_table["refunds"],
            lan_table["cash"], lan_table["difference"], lan_table["reprints"]) == (100000, 100000, 100000, 100000, 0, 0, 2)
    assert _table(page.text, "kiosk")["dossiers"] == 1 and _table(page.text, "kiosk")["fees_expected"] == 0
    corrections = re.search(r'data-report="corrections">(.*?)</table>', page.text, re.S).group(1)
    assert f"Chuyển từ hồ sơ {j1}" in corrections and f"Chuyển từ hồ sơ {j1b}" in corrections
    assert f"Chuyển từ hồ sơ {r1}" in corrections and "-100.000" in corrections

    # -- sign-off: the snapshot is stored with its hash and shown ------------------------------------
    [(day,)] = _rows(app, "SELECT DISTINCT local_day FROM dossiers")  # the station's day
    short = date.fromisoformat(day).strftime("%d/%m")
    _next_second()
    signed = hoa.post("/agent/report/sign", data={"csrf_token": csrf_token(page.text), "day": day})
    assert signed.headers["Location"] == f"/agent/report?day={day}"
    page = hoa.get(signed.headers["Location"])
    assert "Đã ký xác nhận bởi Lê Thị Hoa" in page.text and "data-frozen" in page.text
    assert _table(page.text, "station") == STATION
    [(text, sha)] = _rows(app, "SELECT report, report_sha256 FROM day_closings")
    assert hashlib.sha256(text.encode()).hexdigest() == sha and json.loads(text)["station"]["fees_taken_vnd"] == 335000

    # -- after it: live data changes, a late dossier and a late reprint go to the next day ------------
    with sqlite3.connect(app.config["DATABASE"]) as raw:
        raw.execute("UPDATE outbox SET state = 'sent' WHERE submission_id IN (?, ?, ?)", (ids[j1], ids[r1], ids[j2]))
    # The counter is warned on its home page and on the finish page.
    assert f"Ngày {short} đã ký sổ; hồ sơ nộp từ bây giờ sẽ vào báo cáo ngày sau" in minh.get("/agent/").text
    answer_all(minh, catalog[MARITAL])
    warned, late = _finish(minh, catalog[MARITAL])
    assert f"Ngày {short} đã ký sổ; hồ sơ này sẽ vào báo cáo ngày sau" in warned.text
    _reprint(lan, j2)
    page = hoa.get(f"/agent/report?day={day}")
    assert _table(page.text, "station") == STATION  # frozen: 8 dossiers, 8 unsent, as signed
    assert f'data-moved-to="{(date.fromisoformat(day) + timedelta(days=1)).isoformat()}"' in page.text
    assert "Ghi sau khi ký (2 hồ sơ) đã chuyển sang báo cáo" in page.text
    conn = connect(app.config["DATABASE"])
    try:
        live = report.day_report(conn, day)["station"]
    finally:
        conn.close()
    assert live["unsynced"] == 5 and live["dossiers"] == 8 and live["fees_taken_vnd"] == 335000
    assert live["reprints"] == 3  # the late reprint is not the signed day's
    tomorrow = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    next_day = hoa.get(f"/agent/report?day={tomorrow}").text
    assert {k: _table(next_day, "station")[k] for k in ("dossiers", "fees_expected", "fees_taken", "difference",
                                                        "reprints")} == {
        "dossiers": 1, "fees_expected": 3000, "fees_taken": 3000, "difference": 0, "reprints": 1}
    late_rows = re.search(r'data-report="late">(.*?)</table>', next_day, re.S).group(1)
    assert f'data-late="{late}"' in late_rows and f'data-late="{j2}"' in late_rows
    assert late_rows.count(f"Sau khi ký ngày {short}") == 2 and "hồ sơ mới, thu phí" in late_rows
    assert "Ký xác nhận báo cáo ngày" not in next_day  # a day not yet come is not signed
    refused = hoa.post("/agent/report/sign", data={"csrf_token": csrf_token(next_day), "day": tomorrow})
    assert "Chưa ký được ngày chưa đến" in hoa.get(refused.headers["Location"]).text

    # -- reopened with a reason, audited, then signed again ------------------------------------------
    _next_second()
    short_reason = hoa.post("/agent/report/reopen", data={"csrf_token": csrf_token(page.text), "day": day,
                                                          "reason": "sai"})
    assert short_reason.status_code == 422 and "Hãy ghi lý do mở lại, từ 5 đến 200 ký tự" in short_reason.text
    reason = "Kiểm tra lại khoản trả lại của hồ sơ sửa đổi"
    reopened = hoa.post("/agent/report/reopen", data={"csrf_token": csrf_token(page.text), "day": day,
                                                      "reason": reason})
    page = hoa.get(reopened.headers["Location"])
    assert "data-signed" not in page.text and "Ký xác nhận báo cáo ngày" in page.text
    assert reason in page.text and "Lịch sử ký sổ" in page.text
    live_table = _table(page.text, "station")
    assert live_table == {**STATION, "unsynced": 5}  # live again; the late ones stay in the next day's report
    [(who, detail)] = _rows(app, "SELECT actor, detail FROM audit_events WHERE action = 'day.reopened'")
    assert who == "hoa" and json.loads(detail) == {"report_sha256": sha, "reason": reason}
    hoa.post("/agent/report/sign", data={"csrf_token": csrf_token(page.text), "day": day})
    page = hoa.get(f"/agent/report?day={day}")
    assert "data-frozen" in page.text and _table(page.text, "station") == {**STATION, "unsynced": 5}
    closings = _rows(app, "SELECT reopened_at IS NOT NULL, reopen_reason FROM day_closings WHERE local_day = ? "
                     "ORDER BY id", day)
    assert closings == [(1, reason), (0, None)]
    assert _table(hoa.get(f"/agent/report?day={tomorrow}").text, "station")["dossiers"] == 1  # still there
    conn = connect(app.config["DATABASE"])
    try:
        assert audit.verify(conn) == []
    finally:
        conn.close()

    # -- a signed report altered in the database is not shown as signed figures -----------------------
    with sqlite3.connect(app.config["DATABASE"]) as raw:
        raw.execute("DROP TRIGGER day_closings_signed")
        raw.execute("UPDATE day_closings SET report = replace(report, '335000', '300000') WHERE reopened_at IS NULL")
    page = hoa.get(f"/agent/report?day={day}")
    assert "data-tampered" in page.text and "data-frozen" not in page.text
    assert _table(page.text, "station")["fees_taken"] == 335000  # counted again from the ledger


def test_a_correction_whose_old_money_moved_meanwhile_is_shown_again(tmp_path, catalog):
    app = _station(tmp_path)
    client = _client(app, "minh")
    proc = catalog[RESIDENCE]
    code = _apply(client, proc)
    _start_correction(client, code, proc)
    page = client.get(f"/agent/p/{proc.slug}/finish")
    stale = client.post(f"/agent/p/{proc.slug}/finish", data={
        "csrf_token": csrf_token(page.text), "delivery": "counter", "consent": "yes", **_prefilled(page.text),
        "paid_before_shown": "0", "fee": "20000"})  # a page from before the first fee was taken
    assert stale.status_code == 422 and "vừa thay đổi" in stale.text
    assert _prefilled(stale.text)["fee"] == "0" and _rows(app, "SELECT COUNT(*) FROM dossiers") == [(1,)]


def test_the_report_has_a_day_picker_that_works_without_javascript(tmp_path):
    app = _station(tmp_path)
    client = _client(app, "minh")
    page = client.get("/agent/report?day=2026-03-02")
    assert page.status_code == 200 and 'data-day="2026-03-02">02/03/2026<' in page.text
    assert 'type="date" value="2026-03-02"' in page.text.replace('id="day" name="day" ', "")
    assert 'href="/agent/report?day=2026-03-01" data-day-link="previous"' in page.text
    assert 'href="/agent/report?day=2026-03-03" data-day-link="next"' in page.text
    typed = client.get("/agent/report?day=15/04/2026")  # a browser without a date input sends what was typed
    assert typed.status_code == 200 and 'data-day="2026-04-15">15/04/2026<' in typed.text
    wrong = client.get("/agent/report?day=31/02/2026")
    assert wrong.status_code == 422 and "Ngày không hợp lệ" in wrong.text and "Lỗi:" in wrong.text


def test_ledger_lines_and_closings_cannot_be_changed(tmp_path, catalog):
    app = _station(tmp_path)
    client = _client(app, "minh")
    _apply(client, catalog[RESIDENCE])
    with sqlite3.connect(app.config["DATABASE"]) as raw:
        for sql in ("UPDATE ledger SET amount_vnd = 0", "DELETE FROM ledger",
                    "INSERT INTO ledger (at, local_day, staff_id, kind, submission_id, amount_vnd) "
                    "SELECT at, local_day, staff_id, 'carried', submission_id, 1 FROM ledger"):
            with pytest.raises(sqlite3.DatabaseError):
                raw.execute(sql)
    conn = connect(app.config["DATABASE"])
    try:
        supervisor = conn.execute("SELECT * FROM staff WHERE username = 'hoa'").fetchone()
        report.sign_off(conn, "2026-03-02", supervisor)
        with pytest.raises(ValueError, match="already signed off"):
            report.sign_off(conn, "2026-03-02", supervisor)
        with pytest.raises(ValueError):
            report.reopen(conn, "2026-03-02", supervisor, "  ab  ")
        with pytest.raises(PermissionError):
            report.reopen(conn, "2026-03-02", conn.execute("SELECT * FROM staff WHERE username = 'minh'").fetchone(),
                          "Kiểm tra lại")
        for sql in ("UPDATE day_closings SET report = '{}'", "DELETE FROM day_closings"):
            with pytest.raises(sqlite3.DatabaseError):
                conn.execute(sql)
        conn.rollback()
        report.reopen(conn, "2026-03-02", supervisor, "Kiểm tra lại")
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute("UPDATE day_closings SET reopen_reason = 'khác'")
        conn.rollback()
        with pytest.raises(LookupError):
            report.reopen(conn, "2026-03-02", supervisor, "Kiểm tra lại")
    finally:
        conn.close()


def test_an_entry_belongs_to_the_first_day_not_signed_at_its_time(tmp_path):
    migrate(tmp_path / "s.db")
    conn = connect(tmp_path / "s.db")
    conn.execute("INSERT INTO staff (username, display_name, role, secret_hash, created_at) "
                 "VALUES ('hoa', 'Hoa', 'supervisor', 'x', '2026-03-01T00:00:00+00:00')")
    for day, signed, reopened in (("2026-03-01", "2026-03-01T10:00:00+00:00", "2026-03-02T09:00:00+00:00"),
                                  ("2026-03-01", "2026-03-02T11:00:00+00:00", None),
                                  ("2026-03-02", "2026-03-02T10:00:00+00:00", None)):
        conn.execute("INSERT INTO day_closings (local_day, report, report_sha256, signed_by, signed_at, reopened_at, "
                     "reopened_by, reopen_reason) VALUES (?, '{}', '', 1, ?, ?, ?, ?)",
                     (day, signed, reopened, 1 if reopened else None, "kiểm tra" if reopened else None))
    closings = report._closings(conn, "2026-03-01", "2026-03-05")
    home = lambda local_day, at: report.home_day(local_day, at, closings, "2026-03-05")  # noqa: E731
    assert home("2026-03-01", "2026-03-01T09:59:59+00:00") == "2026-03-01"      # before the sign-off
    assert home("2026-03-01", "2026-03-01T10:00:00.5+00:00") == "2026-03-02"    # its second counts after
    assert home("2026-03-01", "2026-03-02T09:30:00+00:00") == "2026-03-01"      # reopened meanwhile
    assert home("2026-03-01", "2026-03-02T10:30:00+00:00") == "2026-03-01"      # 03-02 signed, 03-01 open
    assert home("2026-03-01", "2026-03-02T11:30:00+00:00") == "2026-03-03"      # both signed then
    assert report.home_day("2026-03-01", "2026-03-02T11:30:00+00:00", closings, "2026-03-02") is None
    conn.close()
