"""The citizen's path through the Flask test client: every route, full page and htmx partial."""
import re
import sqlite3

import pytest

from kiosk.core import audit, dossiers, tracking_code

from .conftest import csrf_token
from .wizard import answer, answer_all, start, submit

HX = {"HX-Request": "true"}


def rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def test_start_page_lists_every_procedure(client, catalog):
    page = client.get("/")
    assert page.status_code == 200
    assert "Bạn muốn làm thủ tục gì?" in page.text
    for proc in catalog.values():
        assert proc.name["vi"] in page.text
    assert page.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("query,expected,absent", [
    ("khai sinh", "Đăng ký khai sinh", "Đăng ký thường trú"),
    ("thuong tru", "Đăng ký thường trú", "Đăng ký khai sinh"),   # without tone marks
    ("LÝ LỊCH", "lý lịch tư pháp", "Đăng ký khai tử"),
])
def test_search_finds_with_or_without_tone_marks(client, query, expected, absent):
    page = client.get("/", query_string={"q": query})
    assert expected in page.text
    assert absent not in page.text


def test_search_as_htmx_partial_returns_only_the_list(client):
    page = client.get("/", query_string={"q": "khai"}, headers={**HX, "HX-Trigger": "search"})
    assert page.status_code == 200
    assert page.text.lstrip().startswith('<div id="procedure-list"')
    assert "<html" not in page.text
    assert "Đăng ký khai sinh" in page.text and "Đăng ký khai tử" in page.text


def test_search_with_no_result_says_so(client):
    page = client.get("/", query_string={"q": "xyzzy"})
    assert "Không tìm thấy thủ tục nào khớp với “xyzzy”" in page.text


def test_category_filter(client, catalog):
    page = client.get("/", query_string={"category": "cu-tru"})
    for proc in catalog.values():
        assert (proc.name["vi"] in page.text) == (proc.category == "cu-tru")


def test_boosted_navigation_gets_main_only(client, catalog):
    proc = next(iter(catalog.values()))
    full = client.get(f"/p/{proc.slug}")
    partial = client.get(f"/p/{proc.slug}", headers=HX)
    assert "<html" in full.text and "<html" not in partial.text
    assert "<title>" in partial.text and proc.name["vi"] in partial.text


def test_overview_shows_fee_documents_and_code(client, catalog):
    for proc in catalog.values():
        page = client.get(f"/p/{proc.slug}")
        assert proc.code in page.text
        for doc in proc.documents:
            assert doc["vi"] in page.text
        if proc.fee["amount_vnd"]:
            assert f"{proc.fee['amount_vnd']:,}".replace(",", ".") in page.text


def test_unknown_procedure_is_a_friendly_404(client):
    page = client.get("/p/khong-co")
    assert page.status_code == 404
    assert "Không tìm thấy trang" in page.text


@pytest.mark.parametrize("slug", ["dang-ky-khai-sinh", "dang-ky-thuong-tru", "cap-phieu-ly-lich-tu-phap",
                                  "xac-nhan-tinh-trang-hon-nhan", "doi-giay-phep-lai-xe", "dang-ky-khai-tu"])
def test_whole_application_is_queued_in_one_transaction(app, client, catalog, slug):
    proc = catalog[slug]
    answer_all(client, proc)
    check = client.get(f"/p/{slug}/check")
    assert "Kiểm tra lại thông tin trước khi nộp" in check.text
    assert "Nguyễn Văn An" in check.text or "0912345678" in check.text

    response = submit(client, proc)
    assert response.status_code == 303 and response.headers["Location"].endswith("/done")
    done = client.get("/done")
    code = re.search(r"data-tracking-code>([^<]+)<", done.text).group(1)
    assert tracking_code.is_valid(code)
    assert "<svg" in done.text  # the QR of the tracking page

    [(submission_id, status, sealed, stored_code)] = rows(
        app, "SELECT submission_id, status, payload_sealed, tracking_code FROM dossiers")
    assert (status, stored_code) == ("queued", code)
    assert rows(app, "SELECT state FROM outbox WHERE submission_id = ?", submission_id) == [("pending",)]
    assert rows(app, "SELECT action, subject FROM audit_events") == [("dossier.submitted", submission_id)]
    assert rows(app, "SELECT COUNT(*) FROM drafts") == [(0,)]
    # Personal data is sealed at rest, and opens to exactly what was answered.
    assert b"Nguy" not in sealed and "Nguyễn".encode() not in sealed
    with app.app_context():
        from kiosk.web import get_db
        document = dossiers.open_payload(get_db(), app.config["PAYLOAD_KEY"], submission_id)
    assert document["procedure"] == {"code": proc.code, "slug": slug, "version": proc.version}
    answered = {f["name"] for p in proc.pages for f in p["fields"]}
    assert set(document["answers"]) <= answered and document["answers"]


def test_every_question_page_works_as_htmx_partial(client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    visited = answer_all(client, proc, headers=HX)
    for path in visited:
        page = client.get(path, headers=HX)
        assert page.status_code == 200
        assert "<html" not in page.text and "<form" in page.text


def test_missing_answer_shows_error_summary_and_keeps_nothing(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    path = start(client, proc.slug)
    response = answer(client, path, {})
    assert response.status_code == 422
    assert "<title>Lỗi:" in response.text
    assert 'class="error-summary"' in response.text and "Có vấn đề cần sửa" in response.text
    label = proc.page(path.rsplit("/", 1)[1])["fields"][0]["label"]["vi"]
    assert f"Hãy điền: {label}" in response.text
    assert client.get(f"/p/{proc.slug}/check").headers["Location"].endswith(path)


def test_wrong_date_keeps_what_was_typed_with_a_clear_message(client, catalog):
    proc = catalog["dang-ky-khai-sinh"]
    date_page = next(p for p in proc.pages if p["fields"][0]["type"] == "date")
    start(client, proc.slug)
    name = date_page["fields"][0]["name"]
    response = answer(client, f"/p/{proc.slug}/q/{date_page['id']}",
                      {f"{name}__day": "31", f"{name}__month": "2", f"{name}__year": "2020"})
    assert response.status_code == 422
    assert "Ngày không có thật" in response.text
    assert 'value="31"' in response.text


def test_change_link_returns_to_check_answers(client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    check = client.get(f"/p/{proc.slug}/check")
    change_url = re.search(r'href="([^"]+change=1)"', check.text).group(1).replace("&amp;", "&")
    page_id = change_url.split("/q/")[1].split("?")[0]
    field = proc.page(page_id)["fields"][0]
    page = client.get(change_url)
    assert f'href="/p/{proc.slug}/check"' in page.text  # "back" goes to the check page
    from tests.support.samples import form_for_page
    form = form_for_page(proc.page(page_id))
    if field["type"] == "text":
        form[field["name"]] = "Trần Thị Bình"
    response = client.post(f"/p/{proc.slug}/q/{page_id}",
                           data={"csrf_token": csrf_token(page.text), "change": "1", **form})
    assert response.status_code == 303 and response.headers["Location"].endswith("/check")
    if field["type"] == "text":
        assert "Trần Thị Bình" in client.get(f"/p/{proc.slug}/check").text


def test_conditional_pages_follow_the_answer(client, catalog):
    proc = catalog["dang-ky-khai-sinh"]
    conditional = next(p for p in proc.pages if "when" in p)
    trigger_name = conditional["when"]["field"]
    trigger = next(f for f in proc.fields() if f["name"] == trigger_name)
    other = next(o["value"] for o in trigger["options"] if o["value"] != conditional["when"]["equals"])
    visited = answer_all(client, proc, overrides={trigger_name: {trigger_name: other}})
    assert f"/p/{proc.slug}/q/{conditional['id']}" not in visited
    assert client.get(f"/p/{proc.slug}/q/{conditional['id']}").status_code == 303

    # Changing the answer so the page applies asks it before going back to the check page.
    trigger_page = next(p for p in proc.pages if any(f["name"] == trigger_name for f in p["fields"]))
    page = client.get(f"/p/{proc.slug}/q/{trigger_page['id']}?change=1")
    response = client.post(f"/p/{proc.slug}/q/{trigger_page['id']}", data={
        "csrf_token": csrf_token(page.text), "change": "1", trigger_name: conditional["when"]["equals"]})
    assert f"/q/{conditional['id']}" in response.headers["Location"]


def test_submit_needs_consent(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    page = client.get(f"/p/{proc.slug}/submit")
    response = client.post(f"/p/{proc.slug}/submit", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 422
    assert "Hãy đánh dấu ô “Tôi cam đoan và đồng ý”" in response.text
    assert rows(app, "SELECT COUNT(*) FROM dossiers") == [(0,)]


def test_pressing_submit_twice_makes_one_dossier(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    page = client.get(f"/p/{proc.slug}/submit")
    form = {"csrf_token": csrf_token(page.text), "consent": "yes"}
    first = client.post(f"/p/{proc.slug}/submit", data=form)
    second = client.post(f"/p/{proc.slug}/submit", data=form)
    assert first.headers["Location"].endswith("/done") and second.headers["Location"].endswith("/done")
    assert rows(app, "SELECT COUNT(*) FROM dossiers") == [(1,)]
    assert rows(app, "SELECT COUNT(*) FROM outbox") == [(1,)]


def test_question_without_a_draft_goes_to_the_overview(client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    response = client.get(f"/p/{proc.slug}/q/{proc.pages[0]['id']}")
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/p/{proc.slug}")


def test_form_without_csrf_token_is_refused_kindly(client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    response = client.post(f"/p/{proc.slug}/start")
    assert response.status_code == 400
    assert "Phiên làm việc đã hết hạn" in response.text and "Traceback" not in response.text


def test_english_switch(client, catalog):
    response = client.get("/lang/en?next=/p/dang-ky-khai-tu")
    assert response.status_code == 303 and response.headers["Location"] == "/p/dang-ky-khai-tu"
    page = client.get("/p/dang-ky-khai-tu")
    assert catalog["dang-ky-khai-tu"].name["en"] in page.text and "Start now" in page.text
    assert '<html lang="en">' in page.text
    assert client.get("/lang/vi?next=//evil.example").headers["Location"] == "/"


def test_end_of_session_forgets_the_draft(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    start(client, proc.slug)
    assert rows(app, "SELECT COUNT(*) FROM drafts") == [(1,)]
    home = client.get("/")
    response = client.post("/end", data={"csrf_token": csrf_token(home.text)})
    assert response.status_code == 303 and response.headers["Clear-Site-Data"] == '"storage"'
    assert rows(app, "SELECT COUNT(*) FROM drafts") == [(0,)]
    assert client.get(f"/p/{proc.slug}/check").status_code == 303


def test_tracking_page(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    submit(client, proc)
    code = re.search(r"data-tracking-code>([^<]+)<", client.get("/done").text).group(1)
    typed = code.replace("-", " ").lower()
    response = client.get("/track", query_string={"code": typed})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/track/{code}")
    page = client.get(f"/track/{code}")
    assert "Đã nhận hồ sơ, đang chờ gửi đến cơ quan giải quyết" in page.text and proc.name["vi"] in page.text
    assert "Nguyễn" not in page.text  # no personal data on a page anyone with the code can open

    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    assert "Mã tra cứu chưa đúng" in client.get("/track", query_string={"code": wrong}).text
    other = tracking_code.make("T01", "200101", 1)
    assert "Không tìm thấy hồ sơ" in client.get("/track", query_string={"code": other}).text
    assert client.get(f"/track/{other}").status_code == 404
    assert client.get("/track", query_string={"code": ""}).status_code == 422


def test_unexpected_error_shows_a_calm_page_without_trace(app, client, monkeypatch):
    from kiosk import citizen
    monkeypatch.setattr(citizen, "_search", lambda *a: 1 / 0)
    response = client.get("/")
    assert response.status_code == 500
    assert "Xin lỗi, đã có trục trặc" in response.text
    assert "ZeroDivisionError" not in response.text and "Traceback" not in response.text


def test_submitted_dossier_cannot_be_edited(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    submit(client, proc)
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="immutable"):
            conn.execute("UPDATE dossiers SET procedure_code = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_events")


def test_audit_chain_detects_an_edited_event(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    for _ in range(3):
        answer_all(client, proc)
        submit(client, proc)
    conn = sqlite3.connect(app.config["DATABASE"])
    assert audit.verify(conn) == []
    conn.execute("DROP TRIGGER audit_no_update")  # what someone with the file in hand could do
    conn.execute("UPDATE audit_events SET actor = 'someone' WHERE seq = 2")
    assert audit.verify(conn) == ["event 2: content changed after it was written"]


def test_every_page_serves_full_and_htmx_partial(client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    visited = answer_all(client, proc)
    paths = ["/", f"/p/{proc.slug}", *visited, f"/p/{proc.slug}/check", f"/p/{proc.slug}/submit", "/track"]
    pages = {}
    for path in paths:
        full, partial = client.get(path), client.get(path, headers=HX)
        assert full.status_code == partial.status_code == 200, path
        assert full.text.startswith("<!doctype html>") and "<html" not in partial.text, path
        assert partial.text.lstrip().startswith("<title>"), path
        pages[path] = partial.text
    submit(client, proc)
    done = client.get("/done", headers=HX)
    assert "<html" not in done.text and "data-tracking-code" in done.text
    code = re.search(r"data-tracking-code>([^<]+)<", done.text).group(1)
    track = client.get(f"/track/{code}", headers=HX)
    assert track.status_code == 200 and "<html" not in track.text


def test_year_fields_refuse_the_future(client, catalog):
    proc = catalog["dang-ky-khai-sinh"]
    page = next(p for p in proc.pages if any(f["type"] == "year" for f in p["fields"]))
    start(client, proc.slug)
    from datetime import date

    from tests.support.samples import form_for_page
    form = form_for_page(page)
    year_field = next(f["name"] for f in page["fields"] if f["type"] == "year")
    form[year_field] = str(date.today().year + 1)
    response = answer(client, f"/p/{proc.slug}/q/{page['id']}", form)
    assert response.status_code == 422 and f"Hãy nhập số từ 1900 đến {date.today().year}" in response.text


def test_answers_are_prefilled_from_a_card_read_into_the_draft(app, client, catalog):
    from kiosk.core import drafts
    from kiosk.core.db import connect
    proc = catalog["dang-ky-khai-sinh"]
    start(client, proc.slug)
    with client.session_transaction() as session:
        draft_id = session["draft"]["id"]
    conn = connect(app.config["DATABASE"])
    drafts.save(conn, app.config["PAYLOAD_KEY"], draft_id,
                {"_card": {"full_name": "TRẦN THỊ BÌNH", "id_number": "079190001234"}})
    conn.close()
    name_page = next(p for p in proc.pages if p["fields"][0].get("prefill") == "card.full_name")
    page = client.get(f"/p/{proc.slug}/q/{name_page['id']}")
    assert 'value="TRẦN THỊ BÌNH"' in page.text and "Lấy từ thẻ căn cước" in page.text
    # Prefilled is only offered: the answer is the citizen's once they continue.
    other = next(p for p in proc.pages if p["fields"][0].get("prefill") is None and p["fields"][0]["type"] == "text")
    assert "Lấy từ thẻ căn cước" not in client.get(f"/p/{proc.slug}/q/{other['id']}").text


def test_the_confirmation_qr_decodes_to_the_tracking_url():
    import zxingcpp
    from PIL import Image, ImageDraw

    from kiosk.web import qr_svg
    url = "http://127.0.0.1:8080/track/K01-261128-0042-1"
    svg = str(qr_svg(url))
    side = float(re.search(r'viewBox="0 0 ([\d.]+)', svg).group(1))
    # The path is one square per dark module: "Mx,yHx2Vy2Hxz".
    squares = [tuple(map(float, m)) for m in re.findall(r"M([\d.]+),([\d.]+)H([\d.]+)V([\d.]+)", svg)]
    assert len(squares) > 100
    scale = 10
    image = Image.new("L", (int(side * scale), int(side * scale)), 255)
    draw = ImageDraw.Draw(image)
    for x1, y1, x2, y2 in squares:
        draw.rectangle([x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1], fill=0)
    assert [b.text for b in zxingcpp.read_barcodes(image)] == [url]
