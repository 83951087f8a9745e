"""The address answer through the pages (Flask's test client, no JavaScript): the province from the list,
the commune found by a search without tone marks ("Tìm" shows the same page again), the street typed;
refused answers say what to fix; the card's old three-level residence converted, its wording kept in the
dossier; an old ward split between new communes offered as a choice."""
import html
import logging
import re
from urllib.parse import urlsplit

import pytest

from kiosk.core import dossiers, drafts
from tests.conftest import csrf_token
from tests.support.samples import form_for_page
from tests.wizard import answer, deal_with_papers, start, submit

CARD_ADDRESS = "Số 12 Lê Lợi, Phường Bến Thành, Quận 1, TP. Hồ Chí Minh"
SPLIT_WARD = "Số 1 Tràng Tiền, Phường Tràng Tiền, Quận Hoàn Kiếm, Hà Nội"  # now Hoàn Kiếm or Cửa Nam


def page_of(proc, field_name: str) -> dict:
    return next(p for p in proc.pages if any(f["name"] == field_name for f in p["fields"]))


def walk_to(client, proc, field_name: str) -> str:
    """Answer the pages before the one asking ``field_name`` with the sample answers; its path."""
    path, target = start(client, proc.slug), page_of(proc, field_name)["id"]
    while not path.endswith(f"/q/{target}"):
        response = answer(client, path, form_for_page(proc.page(path.rsplit("/", 1)[1])))
        assert response.status_code == 303, (path, response.text[:1500])
        path = urlsplit(response.headers["Location"]).path
    return path


def finish(client, proc, path: str):
    """From ``path`` on: the sample answers, the papers, consent; the submitted dossier's answers."""
    while "/q/" in path:
        response = answer(client, path, form_for_page(proc.page(path.rsplit("/", 1)[1])))
        assert response.status_code == 303, (path, response.text[:1500])
        path = urlsplit(response.headers["Location"]).path
    assert deal_with_papers(client, path) == f"/p/{proc.slug}/check"
    check = client.get(f"/p/{proc.slug}/check")
    response = submit(client, proc)
    assert response.status_code == 303 and response.headers["Location"].endswith("/done")
    return check.text


def sealed_answers(app) -> dict:
    with app.app_context():
        from kiosk.web import get_db
        [(submission_id,)] = get_db().execute("SELECT submission_id FROM dossiers").fetchall()
        return dossiers.open_payload(get_db(), app.config["PAYLOAD_KEY"], submission_id)["answers"]


def shown_values(text: str) -> dict:
    """What a citizen who presses "continue" sends from this page: inputs with a value, the checked radio,
    the selected option."""
    values = {}
    for tag in re.findall(r"<input\b[^>]*>", text):
        name, value = re.search(r'name="([^"]+)"', tag), re.search(r'value="([^"]*)"', tag)
        if not name or not value or name.group(1) == "csrf_token":
            continue
        if 'type="radio"' in tag and " checked" not in tag:
            continue
        values[name.group(1)] = html.unescape(value.group(1))
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', text, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', body)
        if chosen:
            values[name] = chosen.group(1)
    return values


def post(client, path: str, form: dict):
    page = client.get(path)
    return client.post(path, data={"csrf_token": csrf_token(page.text), **form})


# --- the picker ----------------------------------------------------------------------------------------

def test_province_search_choose_and_street_without_javascript(app, client, catalog, caplog):
    caplog.set_level(logging.DEBUG)
    proc = catalog["dang-ky-khai-tu"]
    name = "deceased_residence"
    path = walk_to(client, proc, name)
    page = client.get(path)
    assert page.status_code == 200
    assert page.text.count('<option value="') == 35  # "choose" and the 34 provinces
    assert ">Thành phố Hồ Chí Minh</option>" in page.text and ">Tỉnh Bình Dương<" not in page.text
    assert f'name="address_search" value="{name}"' in page.text and "Tôi có địa chỉ cũ" in page.text
    assert f'<label class="label" for="{name}">Tỉnh, thành phố</label>' in page.text

    found = post(client, path, {f"{name}__province": "79", f"{name}__q": "ben thanh",
                                f"{name}__street": "Số 12 Lê Lợi", "address_search": name})
    assert found.status_code == 200  # the same page again, nothing answered yet
    assert f'value="26743"' in found.text and "Phường Bến Thành</label>" in found.text
    assert '<option value="79" selected>' in found.text and 'value="ben thanh"' in found.text
    assert 'value="Số 12 Lê Lợi"' in found.text  # what was typed is kept
    assert "Tìm thấy 1 xã, phường ở Thành phố Hồ Chí Minh" in found.text

    chosen = post(client, path, {f"{name}__province": "79", f"{name}__commune": "26743",
                                 f"{name}__street": "Số 12 Lê Lợi"})
    assert chosen.status_code == 303  # a real answer: post/redirect/get
    again = client.get(path)  # coming back ("Thay đổi") shows the answer as chosen
    shown = shown_values(again.text)
    assert (shown[f"{name}__province"], shown[f"{name}__commune"], shown[f"{name}__street"]) == \
        ("79", "26743", "Số 12 Lê Lợi")
    check = finish(client, proc, urlsplit(chosen.headers["Location"]).path)
    assert "Số 12 Lê Lợi, Phường Bến Thành, Thành phố Hồ Chí Minh" in check
    value = sealed_answers(app)[name]
    assert value["province_code"] == "79" and value["commune_code"] == "26743"
    assert value["text"] == "Số 12 Lê Lợi, Phường Bến Thành, Thành phố Hồ Chí Minh"
    assert value["units_version"].startswith("vietnam-provinces ") and "old" not in value
    assert "Lê Lợi" not in caplog.text  # an address is personal data


@pytest.mark.parametrize("form, words", [
    ({"province": "", "q": "ben thanh"}, "Hãy chọn tỉnh, thành phố trước"),
    ({"province": "79", "q": ""}, "Hãy gõ vài chữ của tên xã, phường"),
    ({"province": "79", "q": "khong co dau"}, "Không tìm thấy xã, phường nào ở Thành phố Hồ Chí Minh"),
    ({"province": "01", "q": "HOAN KIEM"}, "Phường Hoàn Kiếm</label>"),
    ({"province": "48", "q": "đà"}, "Tìm thấy"),
])
def test_the_search_says_what_it_found(client, catalog, form, words):
    proc = catalog["dang-ky-khai-tu"]
    name = "deceased_residence"
    path = walk_to(client, proc, name)
    response = post(client, path, {**{f"{name}__{k}": v for k, v in form.items()}, "address_search": name})
    assert response.status_code == 200
    assert words in html.unescape(response.text)


@pytest.mark.parametrize("form, words", [
    ({}, "Hãy chọn tỉnh hoặc thành phố của địa chỉ này."),
    ({"province": "99", "commune": "26743", "street": "Số 1"}, "Hãy chọn tỉnh hoặc thành phố"),
    ({"province": "79", "street": "Số 1"}, "Hãy tìm và chọn xã, phường hoặc đặc khu thuộc Thành phố Hồ Chí Minh."),
    ({"province": "01", "commune": "26743", "street": "Số 1"},
     "Xã, phường đã chọn không thuộc Thành phố Hà Nội. Hãy tìm và chọn lại."),
    ({"province": "79", "commune": "26743"}, "Hãy ghi số nhà và tên đường, hoặc tên thôn, ấp, tổ dân phố."),
    ({"province": "79", "commune": "26743", "street": "Số 1\x00"}, "không dùng được"),
    ({"province": "79", "commune": "26743", "street": "x" * 201}, "200"),
])
def test_refused_answers_say_what_to_fix(client, catalog, form, words):
    proc = catalog["dang-ky-khai-tu"]
    name = "deceased_residence"
    path = walk_to(client, proc, name)
    response = post(client, path, {f"{name}__{k}": v for k, v in form.items()})
    assert response.status_code == 422
    assert "<title>Lỗi:" in response.text and 'class="error-summary"' in response.text
    assert words in html.unescape(response.text)


# --- old addresses -------------------------------------------------------------------------------------

def put_card_residence(app, client, residence: str) -> None:
    """The card step's result as the draft keeps it (``_card``), without a card reader."""
    with client.session_transaction() as session:
        draft_id = session["draft"]["id"]
    with app.app_context():
        from kiosk.web import get_db
        assert drafts.save(get_db(), app.config["PAYLOAD_KEY"], draft_id, {"_card": {"residence": residence}})


def test_card_residence_is_converted_and_its_old_wording_kept(app, client, catalog):
    proc = catalog["xac-nhan-tinh-trang-hon-nhan"]
    name = "applicant_residence"
    start(client, proc.slug)
    put_card_residence(app, client, CARD_ADDRESS)
    path = walk_to_again(client, proc, name)
    page = client.get(path)
    text = html.unescape(page.text)
    assert "Lấy từ thẻ căn cước" in text
    assert f"Địa chỉ cũ: {CARD_ADDRESS}" in text and "đơn vị hành chính mới" in text
    shown = shown_values(page.text)
    assert shown[f"{name}__province"] == "79" and shown[f"{name}__commune"] == "26743"
    assert shown[f"{name}__street"] == "Số 12 Lê Lợi" and shown[f"{name}__from_old"] == CARD_ADDRESS

    response = client.post(path, data={"csrf_token": csrf_token(page.text), **shown})  # "continue" as shown
    assert response.status_code == 303
    finish(client, proc, urlsplit(response.headers["Location"]).path)
    value = sealed_answers(app)[name]
    assert value["commune"] == "Phường Bến Thành" and value["province"] == "Thành phố Hồ Chí Minh"
    assert value["old"] == CARD_ADDRESS and value["street"] == "Số 12 Lê Lợi"


def walk_to_again(client, proc, field_name: str) -> str:
    """From the draft already started: answer the pages before ``field_name``'s; its path."""
    path, target = f"/p/{proc.slug}/q/{proc.pages[0]['id']}", page_of(proc, field_name)["id"]
    while not path.endswith(f"/q/{target}"):
        response = answer(client, path, form_for_page(proc.page(path.rsplit("/", 1)[1])))
        assert response.status_code == 303, (path, response.text[:1500])
        path = urlsplit(response.headers["Location"]).path
    return path


def test_card_residence_in_a_split_ward_offers_the_new_communes(app, client, catalog):
    proc = catalog["xac-nhan-tinh-trang-hon-nhan"]
    name = "applicant_residence"
    start(client, proc.slug)
    put_card_residence(app, client, SPLIT_WARD)
    path = walk_to_again(client, proc, name)
    page = client.get(path)
    text = html.unescape(page.text)
    assert f"Nơi ở cũ “{SPLIT_WARD}” nay thuộc một trong các xã, phường dưới đây" in text
    assert "Phường Hoàn Kiếm</label>" in text and "Phường Cửa Nam</label>" in text
    shown = shown_values(page.text)
    assert f"{name}__commune" not in shown  # the citizen chooses: nothing is chosen for them
    refused = client.post(path, data={"csrf_token": csrf_token(page.text), **shown})
    assert refused.status_code == 422 and "Hãy tìm và chọn xã, phường" in html.unescape(refused.text)
    assert "Phường Cửa Nam</label>" in refused.text  # the choice is still offered
    chosen = client.post(path, data={"csrf_token": csrf_token(page.text), **shown, f"{name}__commune": "00070"})
    assert chosen.status_code == 303
    finish(client, proc, urlsplit(chosen.headers["Location"]).path)
    value = sealed_answers(app)[name]
    assert value["commune"] == "Phường Hoàn Kiếm" and value["old"] == SPLIT_WARD
    assert value["text"] == "Số 1 Tràng Tiền, Phường Hoàn Kiếm, Thành phố Hà Nội"


def test_an_old_address_typed_is_converted_on_the_same_page(app, client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    name = "deceased_residence"
    path = walk_to(client, proc, name)
    converted = post(client, path, {f"{name}__old": "ấp 3, xã tân thông hội, huyện củ chi, tp hcm",
                                    "address_convert": name})
    assert converted.status_code == 200
    shown = shown_values(converted.text)
    assert shown[f"{name}__province"] == "79" and shown[f"{name}__street"] == "ấp 3"
    assert "Xã Củ Chi</label>" in converted.text and shown[f"{name}__commune"].isdigit()

    for old, words in (("x", "Không chuyển được địa chỉ “x”"), ("", "Hãy gõ địa chỉ cũ vào ô"),
                       ("Tỉnh Hà Giang", "nay thuộc Tỉnh Tuyên Quang")):
        response = post(client, path, {f"{name}__old": old, "address_convert": name})
        assert response.status_code == 200 and words in html.unescape(response.text), old

    response = client.post(path, data={"csrf_token": csrf_token(converted.text), **shown})
    assert response.status_code == 303
    finish(client, proc, urlsplit(response.headers["Location"]).path)
    value = sealed_answers(app)[name]
    assert value["commune"] == "Xã Củ Chi" and value["old"] == "ấp 3, xã tân thông hội, huyện củ chi, tp hcm"


def test_an_address_on_the_patterns_of_every_procedure_is_in_the_new_units(catalog):
    """Every residence or address of a place in Viet Nam is asked as an address (places of birth and
    death, which may be a hospital, and residence histories stay text)."""
    asked = {(proc.slug, f["name"]) for proc in catalog.values() for f in proc.fields() if f["type"] == "address"}
    assert {("dang-ky-thuong-tru", "new_address"), ("dang-ky-thuong-tru", "current_residence"),
            ("doi-giay-phep-lai-xe", "delivery_address"), ("dang-ky-khai-sinh", "mother_residence"),
            ("dang-ky-khai-tu", "deceased_residence"), ("cap-phieu-ly-lich-tu-phap", "applicant_residence"),
            ("xac-nhan-tinh-trang-hon-nhan", "applicant_residence")} <= asked
    for proc in catalog.values():
        for field in proc.fields():
            if field["name"].endswith(("_residence", "_address")) or field["name"] == "new_address":
                assert field["type"] == "address", (proc.slug, field["name"])
