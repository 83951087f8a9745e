"""Staff pages on a phone (360 x 780, a mobile team's): no page wider than the screen, the header and the
staff bar in at most 200 px (about 500 before issue 20), the bar's links in a menu that works without
JavaScript; at a counter's wide screen the bar is as it was."""
import re

import pytest

from tests.support.live_station import LiveStation
from tests.support.samples import fill_page_in_browser

from .test_accessibility import _violations
from .test_counter_day import _add_staff, _continue, _login, _paper_step

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WIDTH, HEIGHT = 360, 780
HEADER_MOST = 200  # px: the site header and the staff bar together

MEASURE = """() => {
  const bar = document.querySelector('#staff-bar');
  const bottom = Math.max(document.querySelector('.site-header').getBoundingClientRect().bottom,
                          bar ? bar.getBoundingClientRect().bottom : 0) + window.scrollY;
  return {wide: document.scrollingElement.scrollWidth, header: Math.round(bottom), bar: !!bar};
}"""


@pytest.fixture
def mobile_station(tmp_path):
    station = LiveStation(tmp_path / "mobile", kind="mobile", station_id="M01",
                          extra='[devices]\nprinter = "none"\nscanner = "none"\n')
    _add_staff(station, "minh", "Trần Văn Minh Khoa", "supervisor")  # a long name, as real ones are
    station.start()
    yield station
    station.stop()


def _to_finish(page, base, proc, javascript: bool):
    """Through the wizard as staff, up to the counter's finish page (nothing submitted yet)."""
    page.goto(f"{base}/p/{proc.slug}")
    page.get_by_role("button", name="Bắt đầu").click()
    while True:
        page.wait_for_url(re.compile(r"/(q/[^/]+|giay-to/[^/]+|check)$"))
        if page.url.endswith("/check"):
            break
        if "/giay-to/" in page.url:
            _paper_step(page, None)
        else:
            fill_page_in_browser(page, proc)
        if javascript:
            _continue(page)
        else:  # no script runs in the page to wait with: the form's post navigates
            before = page.url
            page.locator("#main").get_by_role("button", name="Tiếp tục").click()
            page.wait_for_url(lambda url, before=before: url != before)
    page.locator("#main").get_by_role("link", name="Tiếp tục").click()
    page.wait_for_url(re.compile(r"/finish$"))


def _walk(page, base, proc, measured: dict, problems: list, tag: str):
    """Every staff page, measured (and checked by axe) where it stands."""
    def measure(name):
        page.locator("#staff-bar").wait_for()
        measured[f"{tag} {name}"] = found = page.evaluate(MEASURE)
        if not found["bar"] or found["wide"] > WIDTH or found["header"] > HEADER_MOST:
            problems.append((tag, name, found))
        if tag == "js":  # axe runs as a script in the page: with scripts off it cannot
            problems.extend((tag, name, v) for v in _violations(page))

    measure("home (nothing yet)")
    _to_finish(page, base, proc, tag == "js")
    measure("finish")
    for doc in proc.documents:
        if doc["required"] and doc["kind"] == "show":
            page.locator(f"#doc-{doc['id']}").check()
    page.get_by_label("Công dân đã nghe đọc, đồng ý và cam đoan").check()
    page.get_by_role("button", name="Nộp hồ sơ").click()
    page.wait_for_url(re.compile(r"/agent/d/"))
    code = page.locator("[data-tracking-code]").inner_text()
    measure("dossier")
    page.goto(base + "/agent/")
    assert page.locator("[data-list='waiting']").get_by_role("link", name=code).is_visible()
    measure("home")
    page.goto(f"{base}/agent/search?q={code}")
    measure("search")
    page.goto(base + "/agent/report")
    measure("report")
    page.goto(base + "/agent/rejected")
    measure("rejected")


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_staff_pages_fit_a_phone(mobile_station, browser, catalog, javascript):
    base = mobile_station.url
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, java_script_enabled=javascript)
    page = context.new_page()
    measured, problems = {}, []
    try:
        _login(page, base, "minh")
        _walk(page, base, catalog["dang-ky-khai-tu"], measured, problems, "js" if javascript else "no-js")

        # In English too (other words, other widths).
        page.goto(base + "/lang/en?next=/agent/")
        page.wait_for_url(base + "/agent/")
        english = measured["en home"] = page.evaluate(MEASURE)
        assert english["wide"] <= WIDTH and english["header"] <= HEADER_MOST, english
        page.goto(base + "/lang/vi?next=/agent/")
        page.wait_for_url(base + "/agent/")

        # The bar's links are in its menu: closed it shows none of them, open it shows who and where to go.
        page.goto(base + "/agent/")
        assert not page.get_by_role("link", name="Báo cáo cuối ngày").is_visible()
        assert not page.locator(".staff-who").is_visible()
        page.locator(".staff-menu summary").click()
        menu = page.locator(".staff-menu-panel")
        assert "Trần Văn Minh Khoa" in menu.inner_text()
        if javascript:
            problems.extend(("menu open", v) for v in _violations(page))
        assert page.evaluate(MEASURE)["wide"] <= WIDTH
        menu.get_by_role("link", name="Báo cáo cuối ngày").click()
        page.wait_for_url(re.compile(r"/agent/report$"))
        page.locator(".staff-menu summary").click()
        page.locator(".staff-menu-panel").get_by_role("button", name="Đăng xuất").click()
        page.wait_for_url(base + "/agent/login")
    finally:
        context.close()
    print("\n".join(f"{name}: {value}" for name, value in measured.items()))
    assert problems == [], "\n".join(map(str, problems))
    assert len(measured) == 8


def test_the_counters_wide_screen_keeps_its_bar(mobile_station, browser):
    """At a counter's screen the who-line and the row of links stay; the phone's menu is not shown."""
    base = mobile_station.url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        _login(page, base, "minh")
        assert page.locator(".staff-who").is_visible()
        assert page.locator(".staff-nav").get_by_role("link", name="Báo cáo cuối ngày").is_visible()
        assert not page.locator(".staff-menu").is_visible()
        assert page.get_by_role("link", name="Báo cáo cuối ngày").count() == 1  # the hidden menu's is not counted
        assert _violations(page) == []
    finally:
        context.close()
