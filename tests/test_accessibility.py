"""WCAG 2.2 AA, checked by axe-core in Chromium on every page of a whole application and on the
patterns page, at kiosk width and at phone width (360 px, for mobile teams)."""
import re

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.support.samples import fill_page_in_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]
AXE = Axe()
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]}}


def _violations(page):
    results = AXE.run(page, options=WCAG)
    return [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in results.response["violations"]]


def _check(page, where, problems):
    found = _violations(page)
    if found:
        problems.append((where, found))
    width = page.viewport_size["width"]
    overflow = page.evaluate("document.documentElement.scrollWidth")
    if overflow > width:
        problems.append((where, f"scrolls sideways: {overflow}px wide on a {width}px screen"))
    small = page.evaluate("""() => [...document.querySelectorAll('#main a, #main button, #main input, #main summary, header a, header summary')]
        .filter(e => e.offsetParent && !e.closest('.visually-hidden, .skip-link, p, dd, li') && e.type !== 'hidden')
        .map(e => [e.tagName, e.getBoundingClientRect()]).filter(([t, r]) => r.height < 44 || r.width < 44)
        .map(([t, r]) => `${t} ${Math.round(r.width)}x${Math.round(r.height)}`)""")
    if small:
        problems.append((where, f"touch targets under 44 px: {small}"))


@pytest.mark.parametrize("width,height", [(1080, 1920), (360, 740)])
def test_every_page_of_an_application_passes_axe(live_station, browser, catalog, width, height):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    problems = []
    try:
        proc = catalog["dang-ky-khai-sinh"]
        page.goto(live_station.url + "/-/patterns")
        _check(page, "patterns", problems)
        page.goto(live_station.url + "/")
        _check(page, "start", problems)
        page.goto(f"{live_station.url}/p/{proc.slug}")
        _check(page, "overview", problems)
        page.get_by_role("button", name="Bắt đầu").click()
        page.wait_for_url(re.compile(r"/q/"))
        page.get_by_role("button", name="Tiếp tục").click()   # nothing typed: the error state
        page.locator(".error-summary").wait_for()
        _check(page, "question with errors", problems)
        for _ in range(len(proc.pages)):
            if "/q/" not in page.url:
                break
            page.locator("h1").wait_for()
            _check(page, page.url.rsplit("/", 1)[1], problems)
            fill_page_in_browser(page, proc)
            before = page.url
            page.locator("#main").get_by_role("button", name="Tiếp tục").click()
            page.wait_for_function("url => location.href !== url", arg=before)
        page.wait_for_url(re.compile(r"/check$"))
        _check(page, "check answers", problems)
        page.locator("#main").get_by_role("link", name="Tiếp tục").click()
        page.wait_for_url(re.compile(r"/submit$"))
        _check(page, "consent", problems)
        page.get_by_label("Tôi cam đoan và đồng ý").check()
        page.get_by_role("button", name="Nộp hồ sơ").click()
        page.wait_for_url(re.compile(r"/done$"))
        page.locator(".printing").wait_for()
        _check(page, "confirmation", problems)
        code = page.locator("[data-tracking-code]").inner_text()
        page.goto(f"{live_station.url}/danh-gia")  # the satisfaction rating the confirmation offers
        page.locator("h1").wait_for()
        _check(page, "rating", problems)
        page.goto(f"{live_station.url}/track/{code}")
        _check(page, "tracking", problems)
        page.goto(f"{live_station.url}/track?code=K01-000000-0000-0")
        _check(page, "tracking with error", problems)
        page.goto(f"{live_station.url}/text-size/large?next=/")
        _check(page, "start, large text", problems)
        page.goto(f"{live_station.url}/lang/en?next=/p/{proc.slug}")
        _check(page, "overview in English", problems)
    finally:
        context.close()
    assert problems == [], "\n".join(map(str, problems))


def test_the_checker_finds_a_real_problem(live_station, page):
    page.goto(live_station.url + "/")
    page.evaluate("document.querySelector('#search').removeAttribute('id')")  # its label now points nowhere
    assert any(v[0] == "label" for v in _violations(page))
