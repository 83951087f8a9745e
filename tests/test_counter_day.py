"""A whole counter day in headless Chromium: an agent submits for citizens (a paper's step stops one that
lacks a required page; the citizen's papers come from a USB stick as files), takes fees, reprints; the
supervisor reads the day's report and signs it off."""
import re
import sqlite3
import subprocess
import sys

import pytest

from tests.support.fake_printer import FakeNetworkPrinter
from tests.support.samples import fill_page_in_browser

from .conftest import LiveStation
from .test_accessibility import _violations
from tests.support.paper import small_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PIN = "135790"


def _add_staff(station, username, name, role):
    subprocess.run([sys.executable, "-m", "kiosk", "staff", "add", "--station", str(station.station_file), username,
                    "--name", name, "--role", role, "--pin-stdin"], input=PIN + "\n", text=True, check=True,
                   capture_output=True, cwd=station.data_dir)


def _login(page, base, username):
    page.goto(base + "/agent/login")
    page.get_by_label("Tên đăng nhập").fill(username)
    page.get_by_label("Mã PIN hoặc mật khẩu").fill(PIN)
    page.get_by_role("button", name="Đăng nhập").click()
    page.wait_for_url(base + "/agent/")


def _continue(page):
    before = page.url
    page.locator("#main").get_by_role("button", name="Tiếp tục").click()
    page.wait_for_function("url => location.href !== url", arg=before)


def _paper_step(page, stopped: list | None):
    """A required paper gets a page from a file (after, with ``stopped``, "continue" without one is
    refused: what it says and the page's accessibility go into ``stopped``); an optional one is not held."""
    if page.locator("[data-required='yes']").count():
        if stopped is not None and not stopped:
            page.locator("#main").get_by_role("button", name="Tiếp tục").click()
            summary = page.locator(".error-summary")
            summary.wait_for()
            stopped.extend([summary.inner_text(), _violations(page)])
        page.get_by_label("Chọn tệp ảnh (ví dụ từ USB)").set_input_files(
            {"name": "giay-to.png", "mimeType": "image/png", "buffer": small_page()})
        page.get_by_role("button", name="Thêm tệp này").click()
        page.locator(".page-thumbnail").first.wait_for()
    else:
        page.get_by_role("button", name="Tôi không có giấy tờ này").click()
        page.get_by_text("Đã ghi nhận: công dân không có giấy tờ này.").wait_for()  # staff read "công dân"


def _apply_for(page, base, proc, stopped: list | None = None):
    page.goto(base + "/agent/")
    page.get_by_role("link", name=proc.name["vi"]).click()
    page.get_by_role("button", name="Bắt đầu").click()
    while True:
        page.wait_for_url(re.compile(r"/(q/[^/]+|giay-to/[^/]+|check)$"))
        if page.url.endswith("/check"):
            break
        if "/giay-to/" in page.url:
            _paper_step(page, stopped)
        else:
            fill_page_in_browser(page, proc)
        _continue(page)
    page.locator("#main").get_by_role("link", name="Tiếp tục").click()
    page.wait_for_url(re.compile(r"/finish$"))
    for doc in proc.documents:
        if doc["required"] and doc["kind"] == "show":  # the originals shown to the officer
            page.locator(f"#doc-{doc['id']}").check()
    page.get_by_label("Công dân đã nghe đọc, đồng ý và cam đoan").check()
    page.get_by_role("button", name="Nộp hồ sơ").click()


def test_a_counter_day(tmp_path, browser, catalog):
    with FakeNetworkPrinter("ok") as printer:
        extra = f'[devices]\nprinter = "network"\nscanner = "none"\n[printer]\nhost = "127.0.0.1"\nport = {printer.port}\ntimeout_s = 1.0\n'
        station = LiveStation(tmp_path / "counter", kind="counter", extra=extra)
        _add_staff(station, "minh", "Trần Văn Minh", "agent")
        _add_staff(station, "hoa", "Lê Thị Hoa", "supervisor")
        station.start()
        base = station.url
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        try:
            page.goto(base + "/agent/login")
            problems = [("login", _violations(page))]
            _login(page, base, "minh")
            problems.append(("home", _violations(page)))
            judicial = catalog["cap-phieu-ly-lich-tu-phap"]
            stopped = []
            _apply_for(page, base, judicial, stopped)
            assert "Hãy thêm ít nhất một trang của giấy tờ này" in stopped[0]
            problems.append(("paper step with errors", stopped[1]))
            page.get_by_role("button", name="Nộp hồ sơ").click()
            page.wait_for_url(re.compile(r"/agent/d/"))
            first_code = page.locator("[data-tracking-code]").inner_text()
            problems.append(("dossier", _violations(page)))

            _apply_for(page, base, catalog["dang-ky-thuong-tru"])
            page.wait_for_url(re.compile(r"/agent/d/"))
            page.get_by_role("button", name="In lại giấy tiếp nhận").click()
            page.wait_for_selector("text=Đã gửi lệnh in lại")

            page.get_by_role("link", name="Quầy tiếp nhận").click()
            page.get_by_label("Tìm hồ sơ").fill(first_code)
            page.get_by_role("button", name="Tìm").click()
            page.wait_for_url(re.compile(r"/agent/search"))  # the home lists the code too (waiting, today)
            page.get_by_role("link", name=first_code).click()
            page.wait_for_url(re.compile(rf"/agent/d/{first_code}$"))
            assert "200.000 đ · minh" in page.content()

            page.get_by_role("link", name="Báo cáo cuối ngày").click()
            station_table = page.locator("[data-report='station']")
            station_table.wait_for()
            assert station_table.locator("[data-k='dossiers']").inner_text() == "2"
            assert station_table.locator("[data-k='fees_taken']").inner_text() == "220.000"
            assert station_table.locator("[data-k='reprints']").inner_text() == "1"
            assert page.get_by_role("button", name="Ký xác nhận báo cáo ngày").count() == 0
            problems.append(("report", _violations(page)))
            assert [p for p in problems if p[1]] == []
            page.get_by_role("button", name="Đăng xuất").click()
            page.wait_for_url(base + "/agent/login")

            _login(page, base, "hoa")
            page.get_by_role("link", name="Báo cáo cuối ngày").click()
            page.get_by_role("button", name="Ký xác nhận báo cáo ngày").click()
            page.wait_for_selector("[data-signed]")
            assert "Đã ký xác nhận bởi Lê Thị Hoa" in page.locator("[data-signed]").inner_text()
            assert page.locator("[data-frozen]").count() == 1  # the stored report, its hash checked
            assert page.get_by_role("button", name="Mở lại ngày đã ký").count() == 1
        finally:
            context.close()
            station.stop()
        assert printer.jobs >= 3  # two receipts and a reprint
    with sqlite3.connect(station.database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM day_closings").fetchone() == (1,)
        assert conn.execute("SELECT SUM(amount_vnd) FROM ledger WHERE kind = 'fee'").fetchone() == (220000,)
