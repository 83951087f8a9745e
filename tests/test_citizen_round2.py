"""Issue 17, the citizen's screens: step counts that never go backwards, the fee's VietQR on the
confirmation page, the on-screen keyboard that stays open, header links that keep the citizen's place,
no layout shift, landmarks for axe, and a kiosk layout checked by screenshots at 1080x1920 and 360x780."""
import io
import re
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe
from PIL import Image

from devices.vietqr import vietqr_payload
from kiosk.app import create_app
from tests.support.samples import fill_page_in_browser, form_for_page

from .conftest import csrf_token
from .wizard import add_page, start, submit_one

PAYMENT = {"bank_bin": "970436", "account": "0071000123456", "account_name": "UBND PHUONG BEN NGHE"}
FEE_PROCEDURE = "doi-giay-phep-lai-xe"  # 115.000 đồng at a kiosk (the online rate), whatever the answers


# -- step counts ------------------------------------------------------------------------------------------

def _caption(html: str) -> dict:
    """The step caption's numbers: step, steps left at most, and the total once it is known."""
    tag = re.search(r'<p class="caption" ([^>]*)>', html).group(1)
    numbers = {k: int(v) for k, v in re.findall(r'data-(step|steps-left|steps)="(\d+)"', tag)}
    return {"step": numbers["step"], "left": numbers["steps-left"], "total": numbers.get("steps")}


def _walk(client, proc, choose: dict) -> list[dict]:
    """Answer every step with the sample answers (``choose``: field name to option value), reading the step
    caption on each page; returns the captions in order, the overview's promise first."""
    overview = client.get(f"/p/{proc.slug}").text
    promised = int(re.search(r'data-steps="(\d+)"', overview).group(1))
    seen = [{"step": 0, "left": promised, "total": None}]
    path = start(client, proc.slug)
    while "/q/" in path or "/giay-to/" in path:
        page = client.get(path)
        assert page.status_code == 200, path
        seen.append(_caption(page.text))
        if "/giay-to/" in path:
            path = _one_paper_step(client, path)
            continue
        question = proc.page(path.rsplit("/", 1)[1])
        form = form_for_page(question)
        for field in question["fields"]:
            if field["name"] in choose:
                form[field["name"]] = choose[field["name"]]
        response = client.post(path, data={"csrf_token": csrf_token(page.text), **form})
        assert response.status_code == 303, (path, response.text[:1500])
        path = urlsplit(response.headers["Location"]).path
        assert len(seen) < 60, "the wizard went in a loop"
    assert path.endswith("/check"), path
    return seen


def _one_paper_step(client, path: str) -> str:
    """One paper's step, as tests/wizard.py deals with each (a page, or "I do not have it"); returns where
    the wizard goes next."""
    page = client.get(path)
    if 'data-required="yes"' in page.text and 'data-pages="' not in page.text:
        assert add_page(client, path).status_code == 303
    elif 'value="not_applicable"' in page.text:
        client.post(path, data={"csrf_token": csrf_token(page.text), "action": "not_applicable"})
    page = client.get(path)
    response = client.post(path, data={"csrf_token": csrf_token(page.text), "action": "continue"})
    assert response.status_code == 303, path
    return urlsplit(response.headers["Location"]).path


def _branches(proc) -> list[dict]:
    """The sample answers, then each answer of each question that switches pages on."""
    fields = {f["name"]: f for f in proc.fields()}
    choices = [{}]
    for name in sorted({p["when"]["field"] for p in proc.pages if p.get("when")}):
        for option in fields[name].get("options", []):
            choices.append({name: option["value"]})
    return choices


@pytest.fixture
def capturing_app(tmp_path):
    """A kiosk that captures papers (a camera), so the paper steps count too."""
    return create_app({"paths": {"data": str(tmp_path / "var")}, "devices": {"scanner": "none"},
                       "documents": {"sources": ["camera", "file"]}})


def test_step_counts_never_go_backwards_on_any_branch(capturing_app, catalog):
    app = capturing_app
    walks = 0
    for proc in catalog.values():
        for choose in _branches(proc):
            seen = _walk(app.test_client(), proc, choose)
            walks += 1
            steps = [s["step"] for s in seen[1:]]
            assert steps == list(range(1, len(steps) + 1)), (proc.slug, choose, seen)
            # What is left at most falls by at least one at every step: the implied total never grows.
            for before, after in zip(seen, seen[1:]):
                assert after["left"] <= before["left"] - 1, (proc.slug, choose, before, after)
                assert after["step"] + after["left"] <= before["step"] + before["left"], (proc.slug, choose)
            last = seen[-1]
            assert last["left"] == 0 and last["total"] == last["step"], (proc.slug, choose, last)
            # Once the total is known it holds to the end.
            known = [s["total"] for s in seen[1:] if s["total"]]
            assert known and set(known) == {last["step"]}, (proc.slug, choose, seen)
    assert walks > len(catalog)  # the branches were walked, not only the sample answers


def test_the_overview_says_at_most_until_the_answers_decide(client, catalog):
    branching = client.get("/p/cap-phieu-ly-lich-tu-phap").text
    assert 'data-steps-exact="false"' in branching and "nhiều nhất" in branching
    straight = client.get("/p/dang-ky-khai-tu").text
    count = len(catalog["dang-ky-khai-tu"].pages)
    assert f'data-steps="{count}" data-steps-exact="true"' in straight
    assert f"Có {count} bước" in straight
    first = client.get(start(client, "cap-phieu-ly-lich-tu-phap")).text
    assert re.search(r"Bước 1, còn nhiều nhất \d+ bước", first)


def test_paper_steps_count_in_the_total(capturing_app, catalog):
    proc = catalog["dang-ky-thuong-tru"]
    client = capturing_app.test_client()
    seen = _walk(client, proc, {})
    from kiosk.core import documents
    papers = len(documents.to_capture(proc))
    assert papers and seen[-1]["total"] == len([s for s in seen[1:]])
    assert seen[0]["left"] >= seen[-1]["total"]


# -- paying on the confirmation page ------------------------------------------------------------------------

def _submitted(app, catalog, slug=FEE_PROCEDURE):
    client, _proc, code = submit_one(app, catalog, slug)
    return client, client.get("/done").text, code


def _payment_qr_svg(html: str) -> str:
    return re.search(r"data-payment-qr>(<svg.*?</svg>)", html, re.S).group(1)


def test_the_fee_s_vietqr_and_amount_are_on_the_confirmation_page_without_a_printer(tmp_path, catalog):
    from kiosk.web import qr_svg

    app = create_app({"paths": {"data": str(tmp_path / "var")}, "payment": PAYMENT})
    _client, done, code = _submitted(app, catalog)
    assert 'data-pay-amount="115000"' in done and "115.000 đồng" in done
    content = "DVC " + code.replace("-", "")
    assert f"data-pay-content>{content}</dd>" in done
    assert "0071000123456" in done and "UBND PHUONG BEN NGHE" in done
    # The QR is the NAPAS VietQR of the amount and the content, as the printed receipt's.
    expected = vietqr_payload("970436", "0071000123456", 115000, content)
    assert _payment_qr_svg(done) == str(qr_svg(expected))


def test_the_vietqr_is_on_screen_with_a_printer_too(tmp_path, catalog):
    from tests.support.fake_printer import FakeNetworkPrinter

    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, "payment": PAYMENT, **printer.config()})
        _client, done, _code = _submitted(app, catalog)
    assert "Đã in giấy tiếp nhận hồ sơ" in done
    assert "data-payment-qr" in done and 'data-pay-amount="115000"' in done
    assert "receipt-preview" not in done  # printed: no picture of it


def test_without_a_payment_account_the_amount_and_where_to_pay(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")},
                      "station": {"result_address": "Bộ phận Một cửa, UBND phường Bến Nghé"}})
    _client, done, _code = _submitted(app, catalog)
    assert 'data-pay-amount="115000"' in done and "data-payment-qr" not in done
    assert "Nộp lệ phí tại quầy tiếp nhận khi nhận kết quả: Bộ phận Một cửa, UBND phường Bến Nghé." in done


def test_nothing_to_pay_no_payment_section(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "payment": PAYMENT})
    _client, done, _code = _submitted(app, catalog, "dang-ky-khai-tu")
    assert "data-pay-amount" not in done and "data-payment-qr" not in done


def test_the_receipt_picture_keeps_its_box(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    client, done, _code = _submitted(app, catalog)
    width, height = map(int, re.search(r'class="receipt-preview"[^>]*width="(\d+)" height="(\d+)"', done, re.S).groups())
    image = Image.open(io.BytesIO(client.get("/done/receipt.png").data))
    assert image.size == (width, height)


# -- in Chromium ------------------------------------------------------------------------------------------

AXE = Axe()
# WCAG AA, and the best-practice rules on landmarks: every piece of the page inside one (axe "region").
AXE_RULES = [{"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]}},
             {"runOnly": {"type": "rule", "values": ["region", "landmark-unique", "landmark-complementary-is-top-level",
                                                     "landmark-no-duplicate-main", "landmark-one-main"]}}]


def _axe(page) -> list:
    found = []
    for options in AXE_RULES:
        results = AXE.run(page, options=options)
        found += [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in results.response["violations"]]
    return found


def _to_first_question(page, base, slug="dang-ky-khai-tu"):
    page.goto(base + "/")
    page.get_by_role("link", name=re.compile("Đăng ký khai tử" if slug == "dang-ky-khai-tu" else ".")).first.click()
    page.wait_for_url(re.compile(f"/p/{slug}$"))
    page.get_by_role("button", name="Bắt đầu").click()
    page.wait_for_url(re.compile(r"/q/"))
    page.locator("h1").wait_for()


@pytest.mark.browser
@pytest.mark.slow
def test_the_keyboard_stays_open_while_the_search_results_change(live_station, page):
    page.set_viewport_size({"width": 1080, "height": 1920})
    page.goto(live_station.url + "/")
    search = page.locator("#search")
    search.click()
    keyboard = page.locator("#osk")
    for key in ["k", "h", "a", "i", "space", "t", "ư"]:
        keyboard.locator(f"[data-key='{key}']").click()
        page.wait_for_timeout(400)  # the live results come 250 ms after the last letter
        assert keyboard.is_visible(), f"keyboard closed after {key!r}"
        assert page.evaluate("document.activeElement.id") == "search"
    keyboard.locator("[data-key='tone:hoi']").click()
    page.wait_for_function("() => document.querySelector('.results-count').textContent.trim() === '1 thủ tục'")
    assert search.input_value() == "khai tử" and keyboard.is_visible()
    assert page.locator("#procedure-list .tile-title").all_inner_texts() == ["Đăng ký khai tử"]
    # It still types where the caret is, and "Xong" closes it.
    keyboard.locator("[data-key='back']").click()
    assert search.input_value() == "khai t"
    keyboard.locator("[data-key='done']").click()
    assert not keyboard.is_visible()


@pytest.mark.browser
@pytest.mark.slow
def test_header_links_keep_the_citizens_place(live_station, page):
    _to_first_question(page, live_station.url)
    page.fill("input.input", "Nguyễn Văn An")
    page.get_by_role("button", name="Tiếp tục").click()
    page.wait_for_function("() => /\\/q\\//.test(location.pathname) && document.querySelector('[data-step]').dataset.step === '2'")
    here = urlsplit(page.url).path
    page.get_by_role("link", name="Chữ lớn").click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == here
    assert "large-text" in (page.locator("html").get_attribute("class") or "")
    page.get_by_role("link", name=re.compile("English")).click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == here and page.locator("html").get_attribute("lang") == "en"
    # After the back link (htmx again), still the page shown.
    page.get_by_role("link", name="Back").click()
    page.wait_for_function("url => location.pathname !== url", arg=here)
    back_here = urlsplit(page.url).path
    page.locator(".site-header a[href*='/lang/']").click()
    page.wait_for_load_state()
    assert urlsplit(page.url).path == back_here


CLS = """() => new Promise(done => {
  let total = 0;
  new PerformanceObserver(list => { for (const e of list.getEntries()) if (!e.hadRecentInput) total += e.value; })
    .observe({type: 'layout-shift', buffered: true});
  setTimeout(() => done(total), 500);
})"""


def _submit_in_browser(page, base, catalog, slug="dang-ky-khai-tu"):
    proc = catalog[slug]
    page.goto(f"{base}/p/{slug}")
    page.get_by_role("button", name="Bắt đầu").click()
    while True:
        page.wait_for_url(re.compile(r"/(q/[^/]+|check)$"))
        if page.url.endswith("/check"):
            break
        page.locator("h1").wait_for()
        fill_page_in_browser(page, proc)
        before = page.url
        page.locator("#main").get_by_role("button", name="Tiếp tục").click()
        page.wait_for_function("url => location.href !== url", arg=before)
    page.locator("#main").get_by_role("link", name="Tiếp tục").click()
    page.get_by_label("Tôi cam đoan và đồng ý").check()
    page.get_by_role("button", name="Nộp hồ sơ").click()
    page.wait_for_url(re.compile(r"/done$"))


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("width,height", [(1080, 1920), (360, 780)])
def test_the_confirmation_page_does_not_shift(live_station, browser, catalog, width, height):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        _submit_in_browser(page, live_station.url, catalog)
        page.goto(live_station.url + "/done")  # a full load: the receipt's picture loads with the page
        page.wait_for_load_state("load")
        shift = page.evaluate(CLS)
        assert page.locator(".receipt-preview").evaluate("img => img.complete && img.naturalWidth > 0")
    finally:
        context.close()
    assert shift < 0.01, f"CLS {shift:.3f}"


def _staff(live_station):
    subprocess.run([sys.executable, "-m", "kiosk", "staff", "add", "--station", str(live_station.station_file), "lan",
                    "--name", "Nguyễn Thị Lan", "--role", "supervisor", "--pin-stdin"], input="246810\n", text=True,
                   check=True, capture_output=True, cwd=live_station.data_dir)


@pytest.mark.browser
@pytest.mark.slow
def test_axe_clean_with_the_keyboard_open_and_on_staff_pages(tmp_path, browser):
    from tests.support.live_station import LiveStation

    problems = []
    kiosk = LiveStation(tmp_path / "kiosk").start()
    try:
        context = browser.new_context(viewport={"width": 1080, "height": 1920})
        page = context.new_page()
        page.goto(kiosk.url + "/")
        page.locator("#search").click()
        assert page.locator("#osk").is_visible()
        problems += [("start, keyboard open", v) for v in _axe(page)]
        _to_first_question(page, kiosk.url)
        page.locator("input.input").first.click()
        assert page.locator("#osk").is_visible()
        problems += [("question, keyboard open", v) for v in _axe(page)]
        context.close()
    finally:
        kiosk.stop()
    counter = LiveStation(tmp_path / "counter", kind="counter", station_id="Q01")
    _staff(counter)
    counter.start()
    try:
        context = browser.new_context(viewport={"width": 1080, "height": 1920})
        page = context.new_page()
        page.goto(counter.url + "/agent/login")
        problems += [("login", v) for v in _axe(page)]
        page.fill("#username", "lan")
        page.fill("#secret", "246810")
        page.locator("#main").get_by_role("button").click()
        page.locator("#staff-bar").wait_for()
        for path in ["/agent", "/agent/report", "/agent/rejected", "/", "/p/dang-ky-khai-tu"]:
            page.goto(counter.url + path)
            page.locator("#staff-bar").wait_for()
            problems += [(path, v) for v in _axe(page)]
        context.close()
    finally:
        counter.stop()
    assert problems == [], "\n".join(map(str, problems))


LAYOUT = """() => {
  const main = document.querySelector('#main'), top = main.getBoundingClientRect().top;
  const bottom = Math.max(...[...main.children].filter(e => e.offsetParent).map(e => e.getBoundingClientRect().bottom));
  const text = [...document.querySelectorAll('#main p, #main li, #main a, #main label, #main button, #main input, #main dt, #main dd, header a, header summary')]
    .filter(e => e.offsetParent && !e.closest('.visually-hidden'));
  const targets = [...document.querySelectorAll('#main a, #main button, #main input:not([type=hidden]), #main summary, header a, header summary, footer button')]
    .filter(e => e.offsetParent && !e.closest('.visually-hidden, .skip-link, p, dd, li'));
  return {
    content_share: (bottom - top) / innerHeight,
    smallest_text: Math.min(...text.map(e => parseFloat(getComputedStyle(e).fontSize))),
    smallest_target: Math.min(...targets.map(e => e.getBoundingClientRect().height)),
    wide: document.documentElement.scrollWidth,
  };
}"""


def _inked_rows(path) -> float:
    """The share of a screenshot's rows that hold something other than the white page: how much of the
    screen the page uses."""
    image = Image.open(path).convert("L")
    width, height = image.size
    pixels = image.load()
    inked = sum(1 for y in range(0, height, 4) if any(pixels[x, y] < 235 for x in range(0, width, 3)))
    return inked / len(range(0, height, 4))


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("width,height,text_floor,target_floor,share_floor", [
    (1080, 1920, 28, 64, 0.8),   # the kiosk's portrait screen
    (360, 780, 18, 48, 1.0),     # a phone: the start page scrolls
])
def test_kiosk_and_phone_layouts_by_screenshot(live_station, browser, tmp_path, width, height, text_floor,
                                               target_floor, share_floor):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    try:
        page.goto(live_station.url + "/")
        shot = tmp_path / f"start-{width}x{height}.png"
        page.screenshot(path=str(shot))
        start_page = page.evaluate(LAYOUT)
        assert Image.open(shot).size == (width, height)
        assert start_page["content_share"] >= share_floor, start_page
        assert start_page["smallest_text"] >= text_floor and start_page["smallest_target"] >= target_floor, start_page
        assert start_page["wide"] <= width
        assert _inked_rows(shot) >= 0.7, "the start page leaves the screen empty"  # 0.51 with the old layout

        _to_first_question(page, live_station.url)
        page.locator("input.input").first.click()
        shot = tmp_path / f"question-keyboard-{width}x{height}.png"
        page.screenshot(path=str(shot))
        question = page.evaluate(LAYOUT)
        assert question["smallest_text"] >= text_floor and question["smallest_target"] >= target_floor, question
        assert question["wide"] <= width, question
        keyboard = page.locator("#osk")
        if width >= 600:
            keys = keyboard.locator(".osk-key")
            boxes = [keys.nth(i).bounding_box() for i in range(keys.count())]
            assert min(b["height"] for b in boxes) >= 64 and min(b["width"] for b in boxes) >= 64
            assert max(b["x"] + b["width"] for b in boxes) <= width and min(b["x"] for b in boxes) >= 0
            # The question above, the keyboard below: together they use the screen.
            board = keyboard.bounding_box()
            field = page.locator("input.input").first.bounding_box()
            assert field["y"] + field["height"] <= board["y"]
            assert _inked_rows(shot) >= 0.65
        else:
            assert not keyboard.is_visible()  # a phone has its own keyboard
    finally:
        context.close()
