"""Whole applications clicked through in headless Chromium (Debian's), with and without JavaScript."""
import re
import sqlite3

import pytest

from tests.support.samples import fill_page_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _apply(page, base_url, proc, search):
    page.goto(base_url + "/")
    page.get_by_label("Tìm thủ tục").fill(search)
    page.get_by_role("button", name="Tìm").click()
    page.get_by_role("link", name=proc.name["vi"]).click()
    page.get_by_role("button", name="Bắt đầu").click()
    for _ in range(len(proc.pages)):
        page.wait_for_url(re.compile(r"/(q/[^/]+|check)$"))
        if page.url.endswith("/check"):
            break
        heading = page.locator("h1")
        heading.wait_for()
        fill_page_in_browser(page, proc)
        before = page.url
        page.get_by_role("button", name="Tiếp tục").click()
        page.wait_for_function("url => location.href !== url", arg=before)
    assert page.url.endswith(f"/p/{proc.slug}/check")
    assert page.locator("h1").inner_text() == "Kiểm tra lại thông tin trước khi nộp"
    page.get_by_role("link", name="Tiếp tục").click()
    page.get_by_label("Tôi cam đoan và đồng ý").check()
    page.get_by_role("button", name="Nộp hồ sơ").click()
    page.wait_for_url(re.compile(r"/done$"))
    code = page.locator("[data-tracking-code]").inner_text()
    assert page.locator(".qr svg").is_visible()
    return code


def _requests_stay_local(page, base_url):
    seen = []
    page.on("request", lambda request: seen.append(request))
    return seen


def test_whole_application_with_javascript(live_station, page, catalog):
    proc = catalog["dang-ky-khai-tu"]
    requests = _requests_stay_local(page, live_station.url)
    code = _apply(page, live_station.url, proc, "khai tu")
    assert re.fullmatch(r"T01-\d{6}-\d{4}-[0-9A-Z]", code)
    assert all(r.url.startswith(live_station.url + "/") for r in requests), [r.url for r in requests]
    # htmx did the navigation: boosted requests carried its header and fetched only <main>.
    assert sum(1 for r in requests if r.headers.get("hx-request") == "true") >= len(proc.pages)
    with sqlite3.connect(live_station.database) as conn:
        assert conn.execute("SELECT tracking_code FROM dossiers").fetchall() == [(code,)]
    # Finishing ends the session: back at the start, nothing of the application remains.
    page.get_by_role("button", name="Xong, xoá thông tin của tôi").click()
    page.wait_for_url(live_station.url + "/")
    stored = page.evaluate("({...localStorage, ...sessionStorage})")
    # htmx keeps only the path of the page now shown; no snapshot of earlier pages (history cache off).
    assert stored in ({}, {"htmx-current-path-for-history": "/"})
    page.goto(f"{live_station.url}/p/{proc.slug}/check")
    assert page.url.endswith(f"/p/{proc.slug}")


def test_whole_application_without_javascript(live_station, browser, catalog):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        requests = _requests_stay_local(page, live_station.url)
        proc = catalog["dang-ky-khai-sinh"]
        code = _apply(page, live_station.url, proc, "khai sinh")
        assert not any(r.headers.get("hx-request") for r in requests)
        with sqlite3.connect(live_station.database) as conn:
            assert conn.execute("SELECT tracking_code FROM dossiers").fetchall() == [(code,)]
    finally:
        context.close()


def test_error_summary_takes_focus_and_links_to_the_field(live_station, page, catalog):
    proc = catalog["dang-ky-khai-tu"]
    page.goto(f"{live_station.url}/p/{proc.slug}")
    page.get_by_role("button", name="Bắt đầu").click()
    page.wait_for_url(re.compile(r"/q/"))
    page.get_by_role("button", name="Tiếp tục").click()
    summary = page.locator(".error-summary")
    summary.wait_for()
    assert page.title().startswith("Lỗi:")
    page.wait_for_function("document.activeElement && document.activeElement.classList.contains('error-summary')")
    first_field = proc.pages[0]["fields"][0]["name"]
    summary.locator("a").first.click()
    assert page.evaluate("document.activeElement.id") == first_field or page.url.endswith(f"#{first_field}")


def test_language_switch_in_the_browser(live_station, page):
    page.goto(live_station.url + "/")
    page.get_by_role("link", name="Switch to English").click()
    page.wait_for_selector("text=Which service do you need?")
    assert page.locator("html").get_attribute("lang") == "en"


def test_a_paper_step_with_a_file_in_the_browser(tmp_path, browser, catalog):
    """A station that takes files: the wizard's paper step, a page chosen as a file, its thumbnail seen,
    the optional paper marked as not held, then the check page; the step passes axe at phone width."""
    from tests.support.live_station import LiveStation

    from .test_accessibility import _check
    from tests.support.paper import small_page

    proc = catalog["dang-ky-khai-tu"]
    paper = next(d for d in proc.documents if d["id"] == "giay-bao-tu")
    station = LiveStation(tmp_path / "live", extra='[devices]\nscanner = "none"\n[documents]\nsources = ["file"]\n')
    station.start()
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    try:
        page.goto(f"{station.url}/p/{proc.slug}")
        page.get_by_role("button", name="Bắt đầu").click()
        for _ in range(len(proc.pages)):
            page.wait_for_url(re.compile(r"/(q|giay-to)/[^/]+$"))
            if "/giay-to/" in page.url:
                break
            page.locator("h1").wait_for()
            fill_page_in_browser(page, proc)
            before = page.url
            page.locator("#main").get_by_role("button", name="Tiếp tục").click()
            page.wait_for_function("url => location.href !== url", arg=before)
        assert page.url.endswith(f"/giay-to/{paper['id']}")
        assert page.locator("h1").inner_text() == paper["vi"]
        page.get_by_label("Chọn tệp ảnh (ví dụ từ USB)").set_input_files(
            {"name": "trang-1.png", "mimeType": "image/png", "buffer": small_page()})
        page.get_by_role("button", name="Thêm tệp này").click()
        thumbnail = page.get_by_role("img", name=f"Trang 1 của {paper['vi']}")
        thumbnail.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
        assert thumbnail.evaluate("img => img.naturalHeight > img.naturalWidth")
        problems = []
        _check(page, "paper step", problems)
        assert problems == []
        page.locator("#main").get_by_role("button", name="Tiếp tục").click()
        page.wait_for_url(re.compile(r"/giay-to/uy-quyen$"))
        page.get_by_role("button", name="Tôi không có giấy tờ này").click()
        page.get_by_text("Đã ghi nhận: bạn không có giấy tờ này.").wait_for()
        page.locator("#main").get_by_role("button", name="Tiếp tục").click()
        page.wait_for_url(re.compile(r"/check$"))
        papers = page.locator("[data-papers]").inner_text()
        assert "1 trang" in papers and "Không có" in papers
    finally:
        context.close()
        station.stop()
