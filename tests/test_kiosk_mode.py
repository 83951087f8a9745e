"""Kiosk mode: an idle session is warned, then wiped, and the next citizen sees nothing of the last."""
import re
import sqlite3
import time

import pytest

from tests.support.samples import form_for_page

from .wizard import start


def test_server_ends_a_session_idle_past_the_warning(app, client, catalog, monkeypatch):
    proc = catalog["dang-ky-khai-tu"]
    start(client, proc.slug)
    client.get("/lang/en")
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        assert conn.execute("SELECT COUNT(*) FROM drafts").fetchone() == (1,)
    limits = app.config["STATION"]["session"]
    later = time.time() + limits["idle_seconds"] + limits["warning_seconds"] + 11
    monkeypatch.setattr(time, "time", lambda: later)
    page = client.get(f"/p/{proc.slug}/q/{proc.pages[0]['id']}")
    assert page.status_code == 303 and page.headers["Location"].endswith(f"/p/{proc.slug}")
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        assert conn.execute("SELECT COUNT(*) FROM drafts").fetchone() == (0,)
    assert '<html lang="vi">' in client.get("/").text  # the next citizen starts in Vietnamese


def test_warning_shorter_than_20_seconds_is_refused(tmp_path):
    from kiosk.app import create_app
    from kiosk.core.config import ConfigError
    with pytest.raises(ConfigError, match=r"session\.warning_seconds = 5: .* / must be at least 20"):
        create_app({"paths": {"data": str(tmp_path)}, "session": {"warning_seconds": 5}})


@pytest.mark.browser
@pytest.mark.slow
def test_idle_warning_can_be_extended_then_wipes_everything(live_station, page, catalog):
    proc = catalog["dang-ky-khai-tu"]
    page.clock.install()
    page.goto(f"{live_station.url}/p/{proc.slug}")
    page.get_by_role("button", name="Bắt đầu").click()
    page.wait_for_url(re.compile(r"/q/"))
    first = proc.pages[0]
    name_field = next(f for f in first["fields"] if f["type"] in ("text", "name"))
    page.locator(f"[name='{name_field['name']}']").fill("Lê Thị Hồng Nhung")
    for name, value in form_for_page(first).items():
        if name != name_field["name"]:
            page.locator(f"[name='{name}']").first.fill(value)
    page.get_by_role("button", name="Tiếp tục").click()
    page.wait_for_url(re.compile(rf"/q/(?!{first['id']})"))

    dialog = page.locator("#idle-warning")
    page.clock.run_for(119_000)
    assert not dialog.is_visible()
    page.clock.run_for(2_000)
    assert dialog.is_visible()
    assert "Bạn vẫn đang dùng máy chứ?" in dialog.inner_text()
    assert int(dialog.locator("[data-idle-countdown]").inner_text()) >= 20
    page.get_by_role("button", name="Tôi vẫn đang dùng").click()
    assert not dialog.is_visible()
    assert "/q/" in page.url

    page.clock.run_for(121_000)
    assert dialog.is_visible()
    page.clock.run_for(31_000)
    page.wait_for_url(live_station.url + "/")
    assert "Bạn muốn làm thủ tục gì?" in page.content()
    assert page.evaluate("({...localStorage, ...sessionStorage})") in ({}, {"htmx-current-path-for-history": "/"})
    with sqlite3.connect(live_station.database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM drafts").fetchone() == (0,)

    # The next citizen presses "back" through the history: nothing of the last one comes back.
    for _ in range(4):
        page.go_back()
        page.wait_for_load_state()
        assert "Lê Thị Hồng Nhung" not in page.content()
    page.goto(f"{live_station.url}/p/{proc.slug}/q/{first['id']}")
    assert "Lê Thị Hồng Nhung" not in page.content()


@pytest.mark.browser
def test_tone_marks_go_where_vietnamese_puts_them(live_station, page):
    page.goto(live_station.url + "/")
    cases = [("nguyên", "nga", "nguyễn"), ("thương", "huyen", "thường"), ("hoa", "huyen", "hoà"),
             ("mua", "sac", "múa"), ("ngoai", "huyen", "ngoài"), ("toan", "sac", "toán"), ("quy", "sac", "quý"),
             ("gia", "sac", "giá"), ("gi", "huyen", "gì"), ("Nguyễn", "sac", "Nguyến"), ("mưa", "nang", "mựa"),
             ("Lê", "nang", "Lệ"), ("khoe", "hoi", "khoẻ"), ("123", "sac", "123")]
    for word, tone, expected in cases:
        assert page.evaluate("([w, t]) => window.dvcKeyboard.applyTone(w, t)", [word, tone]) == expected, word


@pytest.mark.browser
@pytest.mark.slow
def test_on_screen_keyboard_types_vietnamese_and_never_hides_the_field(live_station, page, catalog):
    proc = catalog["dang-ky-khai-tu"]
    page.set_viewport_size({"width": 1080, "height": 1200})
    page.goto(f"{live_station.url}/p/{proc.slug}")
    page.get_by_role("button", name="Bắt đầu").click()
    page.wait_for_url(re.compile(r"/q/"))
    text_field = next(f for f in proc.pages[0]["fields"] if f["type"] in ("text", "name"))
    field = page.locator(f"[name='{text_field['name']}']")
    field.click()
    keyboard = page.locator("#osk")
    assert keyboard.is_visible()
    for key in ["shift", "n", "g", "u", "y", "ê", "n", "tone:nga", "space", "shift", "a", "n"]:
        keyboard.locator(f"[data-key='{key}']").click()
    assert field.input_value() == "Nguyễn An"
    assert page.evaluate("document.activeElement.name") == text_field["name"]
    keyboard.locator("[data-key='back']").click()
    assert field.input_value() == "Nguyễn A"
    field_box, board_box = field.bounding_box(), keyboard.bounding_box()
    assert field_box["y"] + field_box["height"] <= board_box["y"]

    # A date field gets the number pad, and stays above it even low on a short screen.
    page.set_viewport_size({"width": 1080, "height": 700})
    date_page = next(p for p in proc.pages if p["fields"][0]["type"] == "date" and "when" not in p)
    page.goto(f"{live_station.url}/p/{proc.slug}/q/{date_page['id']}")
    if "/q/" not in page.url:
        pytest.skip("date page not reachable without earlier answers")
    year = page.locator(f"[name='{date_page['fields'][0]['name']}__year']")
    year.click()
    assert keyboard.get_attribute("data-mode") == "numbers"
    assert keyboard.locator("[data-key='q']").count() == 0
    for key in "1990":
        keyboard.locator(f"[data-key='{key}']").click()
    assert year.input_value() == "1990"
    year_box, board_box = year.bounding_box(), keyboard.bounding_box()
    assert year_box["y"] + year_box["height"] <= board_box["y"]
    keyboard.locator("[data-key='done']").click()
    assert not keyboard.is_visible()
