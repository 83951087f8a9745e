"""Counter and mobile-team staff: accounts, submitting for a citizen, reprints, the day's report."""
import re
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import report, staff
from tests.support.fake_printer import FakeNetworkPrinter
from kiosk.core import audit, fees
from kiosk.app import create_app
from kiosk.cli import main
from kiosk.core.db import connect

from .conftest import csrf_token
from .wizard import add_page, answer_all, submit

PIN = "246810"


def _station(tmp_path, **extra):
    return create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")},
                       **extra})


def _add(app, username, role="agent", name=None):
    conn = connect(app.config["DATABASE"])
    try:
        return staff.add(conn, username, name or username.title(), role, PIN)
    finally:
        conn.close()


def _logged_in(tmp_path, username, role="agent"):
    """A counter station with one account, and a client logged in to it."""
    app = _station(tmp_path)
    _add(app, username, role)
    client = app.test_client()
    _login(client, username)
    return app, client


def _login(client, username, secret=PIN):
    page = client.get("/agent/login")
    return client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": username,
                                             "secret": secret})


def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def _finish(client, proc, **overrides):
    page = client.get(f"/agent/p/{proc.slug}/finish")
    assert page.status_code == 200, page.text[:500]
    form = {"csrf_token": csrf_token(page.text), "delivery": "counter", "consent": "yes",
            "fee": str(fees.fee_for(proc, {}, "counter").amount_vnd),
            "documents": [d["id"] for d in proc.documents if d["required"] and d["kind"] == "show"]}
    form.update(overrides)
    return client.post(f"/agent/p/{proc.slug}/finish", data=form)


def _counter_submit(client, proc, **overrides):
    answer_all(client, proc)
    response = _finish(client, proc, **overrides)
    assert response.status_code == 303, response.text[:2000]
    return response.headers["Location"].rsplit("/", 1)[1]


def test_staff_add_from_the_command_line_then_login(tmp_path):
    station = tmp_path / "station.toml"
    station.write_text(f'[station]\nkind = "counter"\n[paths]\ndata = "{tmp_path / "var"}"\n')
    runner = CliRunner()
    result = runner.invoke(main, ["staff", "add", "--station", str(station), "lan", "--name", "Nguyễn Thị Lan",
                                  "--role", "supervisor", "--pin-stdin"], input=PIN + "\n")
    assert result.exit_code == 0, result.output
    weak = runner.invoke(main, ["staff", "add", "--station", str(station), "minh", "--name", "M", "--pin-stdin"],
                         input="123\n")
    assert weak.exit_code == 1 and "at least 6 digits" in weak.output
    listed = runner.invoke(main, ["staff", "list", "--station", str(station)])
    assert "lan\tsupervisor\tNguyễn Thị Lan\tactive" in listed.output
    app = create_app(station_file=str(station))
    client = app.test_client()
    response = _login(client, "lan")
    assert response.status_code == 303 and response.headers["Location"] == "/agent/"
    home = client.get("/agent/")
    assert "Cán bộ: Nguyễn Thị Lan" in home.text and "Giám sát" in home.text
    secret_hash = _rows(app, "SELECT secret_hash FROM staff")[0][0]
    assert secret_hash.startswith("$argon2id$") and PIN not in secret_hash


def test_wrong_pins_lock_the_account(tmp_path):
    app = _station(tmp_path)
    _add(app, "minh")
    client = app.test_client()
    for _ in range(staff.MAX_FAILURES - 1):
        response = _login(client, "minh", "000000")
        assert response.status_code == 422 and "Tên đăng nhập hoặc mã PIN không đúng" in response.text
    locked = _login(client, "minh", "000000")
    assert locked.status_code == 422 and "hoặc tài khoản đang tạm khoá" in locked.text
    right = _login(client, "minh")  # the right PIN does not open it now, and gets the same answer
    assert right.status_code == 422 and "hoặc tài khoản đang tạm khoá" in right.text
    assert _login(client, "nobody").status_code == 422
    actions = [a for (a,) in _rows(app, "SELECT action FROM audit_events")]
    assert actions.count("staff.login_failed") == staff.MAX_FAILURES
    assert "staff.login" not in actions


def test_staff_pages_need_a_login_and_sign_off_needs_a_supervisor(tmp_path):
    app = _station(tmp_path)
    _add(app, "minh")
    client = app.test_client()
    assert client.get("/agent/report").headers["Location"].startswith("/agent/login")
    _login(client, "minh")
    page = client.get("/agent/report")
    assert page.status_code == 200 and "Ký xác nhận" not in page.text
    response = client.post("/agent/report/sign", data={"csrf_token": csrf_token(page.text), "day": "2026-01-01"})
    assert response.status_code == 403 and "Không có quyền" in response.text


def test_idle_staff_are_logged_out(tmp_path, monkeypatch):
    app, client = _logged_in(tmp_path, "minh")
    assert client.get("/agent/").status_code == 200
    start = time.time()
    monkeypatch.setattr(time, "time", lambda: start + 5 * 60)  # past a citizen's limit, within staff's
    assert client.get("/agent/").status_code == 200
    monkeypatch.setattr(time, "time", lambda: start + 5 * 60 + 16 * 60)
    assert client.get("/agent/").headers["Location"].startswith("/agent/login")


def test_submit_for_a_citizen_with_checklist_fee_post_and_receipt(tmp_path, catalog):
    proc = catalog["cap-phieu-ly-lich-tu-phap"]
    with FakeNetworkPrinter("ok") as printer:
        app = _station(tmp_path, **printer.config())
        _add(app, "minh", name="Trần Văn Minh")
        client = app.test_client()
        _login(client, "minh")
        answer_all(client, proc)
        check = client.get(f"/p/{proc.slug}/check")
        assert f'href="/agent/p/{proc.slug}/finish"' in check.text

        # The required paper was captured in the wizard: listed read-only with its pages, no checkbox.
        finish = client.get(f"/agent/p/{proc.slug}/finish")
        paper = next(d for d in proc.documents if d["required"] and d["kind"] == "scan")
        assert f'data-document="{paper["id"]}">1 trang<' in finish.text and f'id="doc-{paper["id"]}"' not in finish.text
        # Its page removed meanwhile (another tab): the finish page's form is refused with the paper named.
        step = f"/p/{proc.slug}/giay-to/{paper['id']}"
        page = client.get(step)
        remove = re.search(r'action="([^"]+/trang/\d+)"', page.text).group(1)
        assert client.post(remove, data={"csrf_token": csrf_token(page.text), "action": "remove"}).status_code == 303
        missing = client.post(f"/agent/p/{proc.slug}/finish", data={
            "csrf_token": csrf_token(finish.text), "delivery": "counter", "consent": "yes",
            "fee": str(fees.fee_for(proc, {}, "counter").amount_vnd)})
        assert missing.status_code == 422
        assert "Còn thiếu giấy tờ bắt buộc: " + paper["vi"] in missing.text
        assert client.get(f"/agent/p/{proc.slug}/finish").headers["Location"] == step  # back to its step
        assert add_page(client, step).status_code == 303
        no_address = _finish(client, proc, delivery="post", address="")
        assert no_address.status_code == 422 and "Hãy ghi địa chỉ nhận kết quả" in no_address.text
        assert _rows(app, "SELECT COUNT(*) FROM dossiers") == [(0,)]

        done = _finish(client, proc, delivery="post", address="Số 5 ngõ 12 phố Huế, Hà Nội")
        assert done.status_code == 303
        code = done.headers["Location"].rsplit("/", 1)[1]
        app.extensions["receipts"].wait()
        assert printer.jobs == 1
    detail = client.get(f"/agent/d/{code}")
    assert "Đã nộp hồ sơ, đang in giấy tiếp nhận" in detail.text
    assert "Gửi qua bưu điện: Số 5 ngõ 12 phố Huế, Hà Nội" in detail.text
    assert "200.000 đ · minh" in detail.text
    [(staff_id, channel, masked)] = _rows(app, "SELECT staff_id, channel, applicant_masked FROM dossiers")
    assert channel == "counter" and masked == "Nguyễn V** A*"
    assert _rows(app, "SELECT kind, amount_vnd FROM ledger") == [("fee", 200000)]
    assert _rows(app, "SELECT requested_by, ok FROM receipt_prints") == [("minh", 1)]
    png = client.get(f"/agent/d/{code}/receipt.png")
    assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_reprint_is_recorded_and_search_finds_by_code_and_name(tmp_path, catalog):
    app, client = _logged_in(tmp_path, "minh")
    code = _counter_submit(client, catalog["dang-ky-khai-tu"])
    page = client.get(f"/agent/d/{code}")
    response = client.post(f"/agent/d/{code}/reprint", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 303
    assert _rows(app, "SELECT kind FROM ledger") == [("reprint",)]
    assert ("receipt.reprint",) in _rows(app, "SELECT action FROM audit_events")
    for query in (code.lower().replace("-", " "), "Nguyễn Văn An", "Nguyễn V** A*", "Nguyễn V"):
        found = client.get("/agent/search", query_string={"q": query})
        assert f"/agent/d/{code}" in found.text, query
    assert f"/agent/d/{code}" not in client.get("/agent/search", query_string={"q": "Lê Thị Hoa"}).text


def test_a_day_of_mixed_activity_reconciles_exactly(tmp_path, catalog):
    app = _station(tmp_path)
    for name, role in (("minh", "agent"), ("lan", "agent"), ("hoa", "supervisor")):
        _add(app, name, role)
    plan = [("minh", "cap-phieu-ly-lich-tu-phap", "200000"), ("minh", "dang-ky-thuong-tru", "20000"),
            ("minh", "cap-phieu-ly-lich-tu-phap", "0"),          # exempt: taken 0
            ("lan", "doi-giay-phep-lai-xe", "135000"), ("lan", "dang-ky-khai-sinh", "0"),
            ("lan", "xac-nhan-tinh-trang-hon-nhan", "3000")]
    codes = {}
    for who, slug, fee in plan:
        client = app.test_client()
        _login(client, who)
        codes.setdefault(who, []).append(_counter_submit(client, catalog[slug], fee=fee))
        if who == "lan":  # lan reprints each of hers once
            code = codes[who][-1]
            client.post(f"/agent/d/{code}/reprint", data={"csrf_token": csrf_token(client.get(f"/agent/d/{code}").text)})
    kiosk = app.test_client()   # and a citizen at the kiosk
    answer_all(kiosk, catalog["dang-ky-khai-tu"])
    submit(kiosk, catalog["dang-ky-khai-tu"])

    conn = connect(app.config["DATABASE"])
    day = conn.execute("SELECT DISTINCT local_day FROM dossiers").fetchone()[0]
    data = report.day_report(conn, day)
    # Independently of the report: counted straight from the tables.
    assert data["station"]["dossiers"] == conn.execute("SELECT COUNT(*) FROM dossiers").fetchone()[0] == 7
    assert data["by_staff"]["minh"]["dossiers"] == 3 and data["by_staff"]["lan"]["dossiers"] == 3
    assert data["by_staff"]["kiosk"]["dossiers"] == 1
    fees_due = sum(fees.fee_for(catalog[slug], {}, "counter").amount_vnd for _, slug, _ in plan)
    assert data["station"]["fees_expected_vnd"] == fees_due
    assert data["station"]["fees_taken_vnd"] == sum(int(fee) for *_, fee in plan) == fees_due - 200000
    assert data["by_staff"]["minh"]["fee_difference_vnd"] == -200000
    assert data["by_staff"]["lan"]["fee_difference_vnd"] == 0 and data["by_staff"]["lan"]["reprints"] == 3
    assert data["station"]["unsynced"] == 7
    assert data["station"]["by_procedure"]["3.000333"] == 2
    assert sum(data["station"]["by_procedure"].values()) == 7

    supervisor = app.test_client()
    _login(supervisor, "hoa")
    page = supervisor.get("/agent/report")
    assert 'data-k="fees_taken">' + f"{fees_due - 200000:,}".replace(",", ".") in page.text
    supervisor.post("/agent/report/sign", data={"csrf_token": csrf_token(page.text), "day": day})
    signed = supervisor.get("/agent/report").text
    assert "Đã ký xác nhận bởi Hoa" in signed and "data-frozen" in signed  # the stored report, its hash checked
    with pytest.raises(ValueError, match="already signed off"):
        report.sign_off(conn, day, conn.execute("SELECT * FROM staff WHERE username = 'hoa'").fetchone())
    assert audit.verify(conn) == []
    conn.close()


def test_audit_verify_command_finds_edits_and_removals(tmp_path, catalog):
    station = tmp_path / "station.toml"
    station.write_text(f'[station]\nkind = "counter"\n[paths]\ndata = "{tmp_path / "var"}"\n')
    app = create_app(station_file=str(station))
    _add(app, "minh")
    client = app.test_client()
    _login(client, "minh")
    _counter_submit(client, catalog["dang-ky-khai-tu"])
    runner = CliRunner()
    ok = runner.invoke(main, ["audit", "verify", "--station", str(station)])
    assert ok.exit_code == 0 and "chain intact" in ok.output
    conn = sqlite3.connect(app.config["DATABASE"])
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit_events WHERE seq = 2")
    conn.commit()
    conn.close()
    broken = runner.invoke(main, ["audit", "verify", "--station", str(station)])
    assert broken.exit_code == 1 and "event 2..2 missing" in broken.output


def test_rejected_queue_and_waiting_banner(tmp_path, catalog):
    app, client = _logged_in(tmp_path, "minh")
    code = _counter_submit(client, catalog["dang-ky-khai-tu"])
    home = client.get("/agent/")
    assert re.search(r'data-waiting="1">1 hồ sơ đang chờ gửi đi, hồ sơ cũ nhất chờ (vài giây|\d+ phút)', home.text)
    # Its paper waits too, and how much of it (what a mobile team's link has to carry).
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        (size,) = conn.execute("SELECT sum(size_bytes) FROM dossier_documents").fetchone()
    assert size and f"(kèm {-(-size // 1024)} KB giấy tờ)" in home.text
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        conn.execute("UPDATE outbox SET state = 'rejected', last_error = 'Thiếu chữ ký số'")
    page = client.get("/agent/rejected")
    # A reason sync does not know is never shown raw: a general sentence with what to do.
    assert code in page.text and "Thiếu chữ ký số" not in page.text
    assert "Trung tâm từ chối hồ sơ vì một lý do trạm chưa biết" in page.text
    # Nothing waits, but a refusal is open: the staff bar counts it, and does not say all is sent.
    home = client.get("/agent/").text
    assert "Mọi hồ sơ đã được gửi đi" not in home
    assert 'data-refused="1"' in home and "1 hồ sơ bị trung tâm từ chối — cần sửa và nộp lại" in home


def test_mobile_team_exports_a_usb_bundle_from_the_screen(tmp_path, catalog):
    from sync.central import open_central
    from tests.support.harness import enrol, make_station

    config = make_station(tmp_path / "team", "http://127.0.0.1:9", station_id="M01")
    central = open_central(tmp_path / "central")
    enrol(central, config)
    usb = tmp_path / "usb"
    app = create_app({"station": {"kind": "mobile", "id": "M01"}, "sync": {"export_dir": str(usb)}},
                     station_file=config["source"])
    app.config["REMOVABLE_MOUNTS"] = tmp_path / "no-mounts"  # no stick mounted (see test_removable_media)
    _add(app, "minh")
    client = app.test_client()
    _login(client, "minh")
    _counter_submit(client, catalog["dang-ky-khai-tu"])
    home = client.get("/agent/")
    assert "Chép hồ sơ ra USB" in home.text and "Chưa thấy USB nào" in home.text
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    missing = client.post("/agent/export", data={"csrf_token": csrf_token(home.text), "folder": str(elsewhere)})
    assert "Không thấy thư mục" in client.get(missing.headers["Location"]).text
    usb.mkdir()
    home = client.get("/agent/")
    assert 'value="0" checked' in home.text and str(usb) in home.text
    # A path in the form is never used: the bundle goes to the folder chosen from the list.
    done = client.post("/agent/export", data={"csrf_token": csrf_token(home.text), "target": "0",
                                              "folder": str(elsewhere)})
    assert "Đã chép 1 hồ sơ vào" in client.get(done.headers["Location"]).text
    assert len(list(usb.iterdir())) == 1 and list(elsewhere.iterdir()) == []
    stale = client.post("/agent/export", data={"csrf_token": csrf_token(home.text), "target": "5"})
    assert "Không thấy thư mục" in client.get(stale.headers["Location"]).text
    assert _rows(app, "SELECT state FROM outbox") == [("pending",)]  # waiting until acknowledged


def test_removable_media_are_read_from_the_mounts_table(tmp_path):
    from devices.removable_media import mounted_removable

    # Lines as the kernel writes /proc/self/mounts (a stick mounted by udisks, one by a desktop, one
    # read-only, the system's own file systems); a space in a label is written \040.
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
        "tmpfs /run tmpfs rw,nosuid,nodev,size=1618016k,mode=755 0 0\n"
        "/dev/sdb1 /media/usb vfat rw,nosuid,nodev,relatime,uid=1000,gid=1000,fmask=0022,dmask=0022 0 0\n"
        "/dev/sdc1 /run/media/canbo/DOI\\040LUU\\040DONG exfat rw,nosuid,nodev,relatime 0 0\n"
        "/dev/sdd1 /media/cdrom iso9660 ro,nosuid,nodev 0 0\n"
        "/dev/sde1 /media/khoa vfat ro,nosuid,nodev 0 0\n"
        "/dev/sdf1 /mnt/backup ext4 rw,relatime 0 0\n")
    assert mounted_removable(mounts) == [Path("/media/usb"), Path("/run/media/canbo/DOI LUU DONG")]
    assert mounted_removable(tmp_path / "missing") == []


def test_a_correction_is_a_new_dossier_that_names_the_old_one(tmp_path, catalog):
    app, client = _logged_in(tmp_path, "minh")
    proc = catalog["dang-ky-khai-tu"]
    first = _counter_submit(client, proc)
    page = client.get(f"/agent/d/{first}")
    started = client.post(f"/agent/d/{first}/correct", data={"csrf_token": csrf_token(page.text)})
    assert started.headers["Location"].endswith(f"/p/{proc.slug}/check")
    check = client.get(f"/p/{proc.slug}/check")
    assert "Nguyễn Văn An" in check.text  # the old answers, ready to change
    # The old dossier's papers: the death notice kept, the authorisation still not held.
    assert 'data-document="giay-bao-tu">Giữ giấy tờ của hồ sơ trước<' in check.text
    assert 'data-document="uy-quyen">Không có<' in check.text
    name_page = next(p for p in proc.pages if p["fields"][0]["name"] == "applicant_name")
    form = client.get(f"/p/{proc.slug}/q/{name_page['id']}?change=1")
    client.post(f"/p/{proc.slug}/q/{name_page['id']}", data={"csrf_token": csrf_token(form.text), "change": "1",
                                                             "applicant_name": "Nguyễn Văn Ân"})
    response = _finish(client, proc)
    second = response.headers["Location"].rsplit("/", 1)[1]
    assert second != first
    rows = dict(_rows(app, "SELECT tracking_code, supersedes FROM dossiers"))
    ids = dict(_rows(app, "SELECT tracking_code, submission_id FROM dossiers"))
    assert rows[first] is None and rows[second] == ids[first]
    kept = dict(_rows(app, "SELECT submission_id, sha256 FROM dossier_documents WHERE document_id = 'giay-bao-tu'"))
    assert kept[ids[second]] == kept[ids[first]]  # the same PDF, carried into the correction
    assert "Đã có hồ sơ sửa đổi thay thế" in client.get(f"/agent/d/{first}").text
    assert f"sửa đổi và thay thế hồ sơ {first}" in client.get(f"/agent/d/{second}").text
    actions = [a for (a,) in _rows(app, "SELECT action FROM audit_events")]
    assert "dossier.correction_started" in actions and "dossier.viewed" in actions


def test_supervisor_commands_unlock_and_deactivate_accounts(tmp_path):
    station = tmp_path / "station.toml"
    station.write_text(f'[station]\nkind = "counter"\n[paths]\ndata = "{tmp_path / "var"}"\n')
    runner = CliRunner()
    runner.invoke(main, ["staff", "add", "--station", str(station), "minh", "--name", "Minh", "--pin-stdin"],
                  input=PIN + "\n")
    app = create_app(station_file=str(station))
    client = app.test_client()
    for _ in range(staff.MAX_FAILURES):
        _login(client, "minh", "000000")
    assert "hoặc tài khoản đang tạm khoá" in _login(client, "minh").text
    assert runner.invoke(main, ["staff", "unlock", "--station", str(station), "minh"]).exit_code == 0
    assert _login(client, "minh").status_code == 303
    assert runner.invoke(main, ["staff", "deactivate", "--station", str(station), "minh"]).exit_code == 0
    assert "đã ngừng hoạt động" in _login(app.test_client(), "minh").text
    assert "minh\tagent\tMinh\tinactive" in runner.invoke(main, ["staff", "list", "--station", str(station)]).output
    missing = runner.invoke(main, ["staff", "unlock", "--station", str(station), "lan"])
    assert missing.exit_code == 1 and "no staff account 'lan'" in missing.output
    actions = [a for (a,) in _rows(app, "SELECT action FROM audit_events")]
    assert "staff.unlocked" in actions and "staff.deactivated" in actions
