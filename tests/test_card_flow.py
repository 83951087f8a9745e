"""The card step of the citizen's path, through the real PC/SC path: pcscd (started by the session fixture)
+ vpcd + the simulated CCCD. The Flask test client walks it as a browser without JavaScript does (plain
posts, the "check again" link, and the htmx poll by its headers); one test drives headless Chromium."""
import copy
import logging
import re
import sqlite3
import time
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from kiosk.app import create_app
from kiosk.core import dossiers, sealing
from kiosk.card_views import reads_of
from tests.support.samples import form_for_page

from .conftest import LiveStation, csrf_token
from .test_accessibility import _check as check_accessibility
from .wizard import submit

try:
    from tests.card_fixtures import (card, card_state, csca_dir, insert_card, pcscd, profile,  # noqa: F401
                                     test_pki)
except ImportError:
    from card_fixtures import card, card_state, csca_dir, insert_card, pcscd, profile, test_pki  # noqa: F401

SLUG = "dang-ky-thuong-tru"  # asks name, birth date, ID number and residence: all on the card
NAME, NUMBER, BIRTH, EXPIRY = "Nguyễn Văn Thử", "001090012345", ("17", "5", "1990"), ("17", "5", "2030")
QR = f"{NUMBER}|012345678|{NAME}|17051990|Nam|Hà Nội|15042021"
POLL = {"HX-Request": "true", "HX-Trigger": "card-read"}


MADE = []  # the apps this test made: each has its own card reads


@pytest.fixture(autouse=True)
def no_read_left_over():
    """A read still waiting for a card must not take the next test's card."""
    yield
    while MADE:
        reads = reads_of(MADE.pop())
        reads.cancel_all()
        assert reads.wait_idle(5)


def make_app(tmp_path, **devices):
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "devices": {"card_wait_seconds": 5, **devices}})
    MADE.append(app)
    return app


@pytest.fixture
def app(tmp_path, csca_dir, pcscd):
    return make_app(tmp_path, csca_dir=str(csca_dir))


def rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def post(client, path, form):
    token = csrf_token(client.get(path).text)
    return client.post(path, data={"csrf_token": token, **form})


def give_key(client, number=NUMBER, slug=SLUG):
    """The number page, as typed on the number pad: the read starts (PACE needs nothing more)."""
    response = post(client, f"/p/{slug}/card", {"card_number": number})
    assert response.status_code == 303 and response.headers["Location"].endswith("/card/read")
    return response


def give_dates(client, birth=BIRTH, expiry=EXPIRY, slug=SLUG):
    """The read said the card needs BAC: the birth date and expiry pages (expiry None: "Không thời hạn")."""
    response = client.get(f"/p/{slug}/card/read")
    assert response.status_code == 303 and response.headers["Location"].endswith("/card/birth-date")
    page = client.get(f"/p/{slug}/card/birth-date")
    assert "cần thêm ngày sinh và ngày hết hạn" in page.text and "Bước 2 / 3" in page.text
    response = post(client, f"/p/{slug}/card/birth-date", dict(zip(
        ("birth_date__day", "birth_date__month", "birth_date__year"), birth)))
    assert response.status_code == 303 and response.headers["Location"].endswith("/card/expiry-date")
    form = ({"no_expiry": "1"} if expiry is None
            else dict(zip(("expiry_date__day", "expiry_date__month", "expiry_date__year"), expiry)))
    response = post(client, f"/p/{slug}/card/expiry-date", form)
    assert response.status_code == 303 and response.headers["Location"].endswith("/card/read")
    return response


def wait_for_state(client, slug=SLUG, timeout_s=10):
    """Poll until the read is over or asks for the dates (the poll then gets an HX-Redirect)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/p/{slug}/card/read", headers=POLL)
        if response.status_code == 204 and response.headers.get("HX-Redirect"):
            return response.headers["HX-Redirect"]
        if response.status_code == 200 and response.headers.get("HX-Retarget"):
            return response.text
        time.sleep(0.1)
    raise AssertionError("the card read did not finish")


def wait_for_read(client, slug=SLUG, timeout_s=10):
    """Poll as htmx does (every so often) until the read is over; returns the page that replaces the notice."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/p/{slug}/card/read", headers=POLL)
        assert response.status_code == 200
        if 'id="card-read"' not in response.text or response.headers.get("HX-Retarget"):
            assert response.headers["HX-Retarget"] == "#main" and "<html" not in response.text
            return response.text
        assert response.text.lstrip().startswith("<div id=\"card-read\"")  # only the notice while waiting
        time.sleep(0.1)
    raise AssertionError("the card read did not finish")


class FormValues(HTMLParser):
    """The values a question page shows (what a citizen who just presses "continue" sends)."""

    def __init__(self, html):
        super().__init__()
        self.values, self._textarea = {}, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and a["name"] != "csrf_token":
            if a.get("type") == "radio":
                if "checked" in a:
                    self.values[a["name"]] = a["value"]
            elif a.get("value"):
                self.values[a["name"]] = a["value"]
        elif tag == "textarea":
            self._textarea = a["name"]

    def handle_data(self, data):
        if self._textarea and data.strip():
            self.values[self._textarea] = data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None


def walk_questions(client, proc, first_path):
    """Answer every question: what is already shown (the card's values) is kept, the rest is sampled."""
    path, prefilled = first_path, set()
    while "/q/" in path:
        page = client.get(path)
        assert page.status_code == 200
        if "Lấy từ thẻ căn cước" in page.text:
            prefilled.add(path.rsplit("/", 1)[1])
        form = {**form_for_page(proc.page(path.rsplit("/", 1)[1])), **FormValues(page.text).values}
        response = client.post(path, data={"csrf_token": csrf_token(page.text), **form})
        assert response.status_code == 303, response.text[:1000]
        path = urlsplit(response.headers["Location"]).path
    assert path == f"/p/{proc.slug}/check"
    return prefilled


def sealed_answers(app, submission_id):
    with app.app_context():
        from kiosk.web import get_db
        return dossiers.open_payload(get_db(), app.config["PAYLOAD_KEY"], submission_id)["answers"]


# --- the whole application -----------------------------------------------------------------------------

def test_whole_application_with_the_card_prefilling_name_and_id(app, client, catalog, card, caplog):
    caplog.set_level(logging.DEBUG)
    proc = catalog[SLUG]
    overview = client.get(f"/p/{SLUG}")
    assert "Đọc thẻ căn cước để điền sẵn" in overview.text and "Bắt đầu" in overview.text
    number_page = client.get(f"/p/{SLUG}/card")
    assert 'inputmode="numeric"' in number_page.text and "<h1>Số căn cước của bạn</h1>" in number_page.text
    give_key(client)  # the number alone: this card opens with PACE, no dates asked
    result = wait_for_read(client)
    assert "<h1>Đã đọc thẻ căn cước</h1>" in result
    assert 'data-card-verified="yes"' in result and "Thông tin đã được xác thực" in result
    # Shown masked: anyone standing near the kiosk sees only part of it.
    assert "Nguyễn V** T**" in result and "********2345" in result and ">1990<" in result
    assert NAME not in result and NUMBER not in result and "17/05/1990" not in result
    assert "Họ và tên của bạn" in result and "Nơi thường trú" in result  # what will be filled in
    # The plain page (no JavaScript) says the same.
    assert "Dùng thông tin này" in client.get(f"/p/{SLUG}/card/read").text

    page = client.get(f"/p/{SLUG}/card/read")
    response = client.post(f"/p/{SLUG}/card/use", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 303
    first = urlsplit(response.headers["Location"]).path
    assert first == f"/p/{SLUG}/q/{proc.pages[0]['id']}"
    assert f'value="{NAME}"' in client.get(first).text

    prefilled = walk_questions(client, proc, first)
    assert {"ho-ten", "ngay-sinh", "so-dinh-danh", "noi-thuong-tru-hien-tai"} <= prefilled
    response = submit(client, proc)
    assert response.status_code == 303 and response.headers["Location"].endswith("/done")
    [(submission_id,)] = rows(app, "SELECT submission_id FROM dossiers")
    answers = sealed_answers(app, submission_id)
    assert answers["applicant_name"] == NAME
    assert answers["applicant_id_number"] == NUMBER
    assert answers["applicant_birth_date"] == "1990-05-17"
    # The card's old residence, converted to the new units; its wording kept beside (kiosk/core/address_convert.py).
    assert answers["current_residence"]["street"].startswith("Số 1")
    assert answers["current_residence"]["old"].startswith("Số 1")
    assert "_card" not in answers  # the card's own copy ends with the draft
    assert rows(app, "SELECT COUNT(*) FROM drafts") == [(0,)]
    # Nothing personal in the log, nothing of the key or the card left in memory.
    for secret in (NUMBER, "090012345", "Nguyễn", "1990-05-17", "17/05/1990"):
        assert secret not in caplog.text
    assert reads_of(app)._keys == {} and reads_of(app)._jobs == {}


def test_card_data_is_only_in_the_sealed_draft_and_the_key_only_in_memory_during_the_card_step(app, client,
                                                                                                card):
    give_key(client)
    with client.session_transaction() as session:
        draft_id = session["draft"]["id"]
    wait_for_read(client)
    job = reads_of(app)._jobs[draft_id]
    assert job.key is None  # the job's copy is gone once the read ended
    page = client.get(f"/p/{SLUG}/card/read")
    client.post(f"/p/{SLUG}/card/use", data={"csrf_token": csrf_token(page.text)})
    assert job.fields == {} and draft_id not in reads_of(app)._jobs and draft_id not in reads_of(app)._keys
    [(sealed,)] = rows(app, "SELECT answers_sealed FROM drafts")
    assert "Nguyễn".encode() not in sealed and NUMBER.encode() not in sealed
    # "Finish" wipes the draft; a key being typed for it goes too.
    post(client, f"/p/{SLUG}/card", {"card_number": NUMBER})
    with client.session_transaction() as session:
        draft_id = session["draft"]["id"]
    assert reads_of(app)._keys[draft_id][1]["number"] == NUMBER
    client.post("/end", data={"csrf_token": csrf_token(client.get("/").text)})
    assert draft_id not in reads_of(app)._keys and rows(app, "SELECT COUNT(*) FROM drafts") == [(0,)]


# --- what goes wrong -----------------------------------------------------------------------------------

def test_wrong_dates_on_a_bac_card_say_so_and_correcting_them_works(client, insert_card, test_pki):
    from devices.card_profile import build_profile
    sim = insert_card(build_profile(pki=test_pki, pace_parameter_id=None))  # no PACE: the dates are needed
    give_key(client)
    assert wait_for_state(client).endswith("/card/birth-date")
    give_dates(client, birth=("18", "5", "1990"))
    failed = wait_for_read(client)
    assert "<h1>Chưa đọc được thẻ</h1>" in failed and 'data-card-error="AccessDeniedError"' in failed
    assert "không khớp với thẻ" in failed and "Traceback" not in failed
    assert f'href="/p/{SLUG}/card/birth-date"' in failed and "Kiểm tra lại các số" in failed
    response = post(client, f"/p/{SLUG}/card/birth-date", dict(zip(
        ("birth_date__day", "birth_date__month", "birth_date__year"), BIRTH)))
    response = post(client, f"/p/{SLUG}/card/expiry-date", dict(zip(
        ("expiry_date__day", "expiry_date__month", "expiry_date__year"), EXPIRY)))
    assert response.headers["Location"].endswith("/card/read")
    assert "Dùng thông tin này" in wait_for_read(client)
    assert sim.wrong_keys == 1


def test_two_wrong_tries_and_the_citizen_is_sent_to_staff_not_to_a_third(client, card):
    give_key(client, number="001090012346")  # PACE refuses it: one wrong try
    assert wait_for_state(client).endswith("/card/birth-date")
    give_dates(client)  # BAC with the wrong number: the second
    failed = wait_for_read(client)
    assert 'data-card-error="TooManyTriesError"' in failed and "nhờ nhân viên" in failed
    assert "Thử lại" not in failed and "Kiểm tra lại các số" not in failed
    assert "Tiếp tục mà không dùng thẻ" in failed
    assert card.wrong_keys == 2
    # Asking again on this card tries nothing on the chip.
    apdus = card.apdu_count
    post(client, f"/p/{SLUG}/card/retry", {})
    assert 'data-card-error="TooManyTriesError"' in wait_for_read(client) and card.apdu_count == apdus


def test_a_chip_that_has_blocked_reading_says_so(client, insert_card, test_pki):
    from devices.card_profile import build_profile
    insert_card(build_profile(pki=test_pki, auth_tries=0))
    give_key(client)
    failed = wait_for_read(client)
    assert 'data-card-error="CardBlockedError"' in failed and "tạm khóa" in failed and "Thử lại" not in failed


def test_a_card_with_no_expiry_is_read_with_the_no_expiry_choice(client, insert_card, test_pki):
    from devices.card_profile import SYNTHETIC_PERSON, build_profile
    person = {**SYNTHETIC_PERSON, "no_expiry": True}
    insert_card(build_profile(person, pki=test_pki, pace_parameter_id=None))
    give_key(client)
    assert wait_for_state(client).endswith("/card/birth-date")
    page = client.get(f"/p/{SLUG}/card/expiry-date")
    assert page.status_code == 303  # no birth date yet: back to the start of the key
    give_dates(client, expiry=None)  # the "Không thời hạn" button, no date
    assert "Dùng thông tin này" in wait_for_read(client)
    page = client.get(f"/p/{SLUG}/card/expiry-date")
    assert "Thẻ của tôi ghi “Không thời hạn”" in page.text and "data-no-expiry" in page.text


def test_a_card_that_stops_answering_frees_the_kiosk_for_the_next_citizen(tmp_path, csca_dir, insert_card,
                                                                        profile):
    app = make_app(tmp_path, csca_dir=str(csca_dir))
    first, second = app.test_client(), app.test_client()
    stuck = insert_card(profile)
    stuck.inject("silent", after=8)
    started = time.monotonic()
    give_key(first)
    failed = wait_for_read(first)
    assert time.monotonic() - started < 6  # the APDU deadline (3 s), not the card's whim
    assert 'data-card-error="CardNotAnsweringError"' in failed and "Thẻ không trả lời" in failed
    assert "Thử lại" in failed
    stuck.pull_out()
    card_state(False)
    insert_card(profile)  # the next citizen's card
    started = time.monotonic()
    give_key(second)
    assert "Dùng thông tin này" in wait_for_read(second)
    assert time.monotonic() - started < 5


def wait_for_notice(client, slug=SLUG, timeout_s=5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/p/{slug}/card/read", headers=POLL)
        if "data-card-notice" in response.text:
            return response.text
        time.sleep(0.05)
    raise AssertionError("no notice while waiting")


def test_card_pulled_out_mid_read_then_going_on_without_it(tmp_path, catalog, csca_dir, card):
    client = make_app(tmp_path, csca_dir=str(csca_dir), card_wait_seconds=2).test_client()
    card.inject("remove", after=9)  # inside DG13
    give_key(client)
    # While the read still has time, the notice says what happened and waits for the card to come back.
    assert "Thẻ đã bị nhấc ra trong khi đọc" in wait_for_notice(client)
    failed = wait_for_read(client)
    assert 'data-card-error="CardRemovedError"' in failed and "Thẻ đã bị nhấc ra trong khi đọc" in failed
    page = client.get(f"/p/{SLUG}/card/read")
    response = client.post(f"/p/{SLUG}/card/skip", data={"csrf_token": csrf_token(page.text)})
    first = urlsplit(response.headers["Location"]).path
    assert response.status_code == 303 and first.endswith(f"/q/{catalog[SLUG].pages[0]['id']}")
    question = client.get(first)
    assert question.status_code == 200 and "Lấy từ thẻ căn cước" not in question.text
    walk_questions(client, catalog[SLUG], first)
    assert submit(client, catalog[SLUG]).status_code == 303


def test_card_pulled_out_and_put_back_the_read_goes_on(client, card, insert_card, profile):
    card.inject("remove", after=9)
    give_key(client)
    wait_for_notice(client)
    insert_card(profile)  # no need to type the key again
    assert "Dùng thông tin này" in wait_for_read(client)


def test_no_card_on_the_reader(tmp_path, pcscd):
    card_state(False)
    app = make_app(tmp_path, card_wait_seconds=1)
    client = app.test_client()
    give_key(client)
    # htmx's poll gets "no change" (204, nothing swapped) while the notice it shows is still right.
    assert client.get(f"/p/{SLUG}/card/read?shown=waiting", headers=POLL).status_code == 204
    waiting = client.get(f"/p/{SLUG}/card/read")  # without JavaScript: the notice and a link
    assert "Đặt thẻ lên đầu đọc…" in waiting.text and "Kiểm tra lại" in waiting.text
    failed = wait_for_read(client)
    assert 'data-card-error="NoCardError"' in failed and "Chưa có thẻ trên đầu đọc" in failed


def test_cancelling_while_waiting_stops_the_read_at_once(tmp_path, catalog, pcscd):
    card_state(False)
    app = make_app(tmp_path, card_wait_seconds=60)
    client = app.test_client()
    give_key(client)
    waiting = client.get(f"/p/{SLUG}/card/read")
    assert "Huỷ, tự nhập thông tin" in waiting.text
    started = time.monotonic()
    response = client.post(f"/p/{SLUG}/card/skip", data={"csrf_token": csrf_token(waiting.text)})
    assert response.status_code == 303 and "/q/" in response.headers["Location"]
    assert reads_of(app).wait_idle(3) and time.monotonic() - started < 3
    assert client.get(f"/p/{SLUG}/card/read").status_code == 303  # nothing left to show


def test_no_such_reader(tmp_path, pcscd):
    client = make_app(tmp_path, card_reader="Reader That Is Not There").test_client()
    give_key(client)
    failed = wait_for_read(client)
    assert 'data-card-error="NoReaderError"' in failed and "Không tìm thấy đầu đọc thẻ" in failed


def test_a_tampered_card_is_refused(client, insert_card, profile):
    tampered = copy.deepcopy(profile)
    dg13 = bytes.fromhex(tampered["files"]["010D"])
    tampered["files"]["010D"] = dg13.replace(NAME.encode(), "Nguyễn Văn Giả".encode()).hex()
    insert_card(tampered)
    give_key(client)
    failed = wait_for_read(client)
    assert 'data-card-error="CardTamperedError"' in failed and "có thể đã bị sửa đổi" in failed
    assert "Dùng thông tin này" not in failed and "Giả" not in failed


def test_without_csca_the_data_is_offered_as_not_verified(tmp_path, card):
    client = make_app(tmp_path).test_client()
    give_key(client)
    result = wait_for_read(client)
    assert 'data-card-verified="no"' in result and "Chưa xác thực được thông tin này" in result
    assert "Dùng thông tin này" in result


def test_key_pages_check_what_is_typed(tmp_path, pcscd):
    card_state(False)
    client = make_app(tmp_path, card_wait_seconds=1).test_client()
    response = post(client, f"/p/{SLUG}/card", {"card_number": "12345"})
    assert response.status_code == 422 and "<title>Lỗi:" in response.text and "12 chữ số" in response.text
    post(client, f"/p/{SLUG}/card", {"card_number": "0010 9001 2345"})
    response = post(client, f"/p/{SLUG}/card/birth-date", {"birth_date__day": "31", "birth_date__month": "2",
                                                          "birth_date__year": "1990"})
    assert response.status_code == 422 and "Ngày không có thật" in response.text
    assert 'value="31"' in response.text  # what was typed stays


# --- the QR on the card's front ------------------------------------------------------------------------

def test_qr_from_the_scanner_fills_number_and_birth_date(client, card):
    page = client.get(f"/p/{SLUG}/card/qr")
    assert page.status_code == 200 and "autofocus" in page.text
    bad = client.post(f"/p/{SLUG}/card/qr", data={"csrf_token": csrf_token(page.text), "qr": "hello|world"})
    assert bad.status_code == 422 and "<title>Lỗi:" in bad.text and "không phải mã QR của thẻ căn cước" in bad.text
    response = client.post(f"/p/{SLUG}/card/qr", data={"csrf_token": csrf_token(page.text), "qr": QR})
    assert response.status_code == 303 and response.headers["Location"].endswith("/card/read")
    assert "Dùng thông tin này" in wait_for_read(client)  # PACE: the QR's number is enough


def test_qr_on_a_card_that_needs_the_dates_asks_only_the_expiry(client, insert_card, test_pki):
    from devices.card_profile import build_profile
    insert_card(build_profile(pki=test_pki, pace_parameter_id=None))
    page = client.get(f"/p/{SLUG}/card/qr")
    response = client.post(f"/p/{SLUG}/card/qr", data={"csrf_token": csrf_token(page.text), "qr": QR})
    assert response.status_code == 303
    assert wait_for_state(client).endswith("/card/expiry-date")
    expiry = client.get(f"/p/{SLUG}/card/expiry-date")
    # The number and birth date came from the QR; the expiry is the estimate, for the citizen to confirm.
    assert "********2345" in expiry.text and "ước tính" in expiry.text and "Bước 2 / 2" in expiry.text
    assert 'value="17"' in expiry.text and 'value="2030"' in expiry.text
    response = client.post(f"/p/{SLUG}/card/expiry-date", data={"csrf_token": csrf_token(expiry.text),
                                                                "expiry_date__day": "17", "expiry_date__month": "5",
                                                                "expiry_date__year": "2030"})
    assert response.status_code == 303
    assert "Dùng thông tin này" in wait_for_read(client)


def test_qr_scanned_into_the_number_field_is_taken_as_the_qr(client, card):
    response = post(client, f"/p/{SLUG}/card", {"card_number": QR})
    assert response.status_code == 303 and response.headers["Location"].endswith("/card/read")
    assert "Dùng thông tin này" in wait_for_read(client)


def test_no_card_step_when_the_station_has_no_reader(tmp_path):
    client = make_app(tmp_path, card_reader="none").test_client()
    overview = client.get(f"/p/{SLUG}")
    assert "Bắt đầu" in overview.text and "Đọc thẻ căn cước" not in overview.text
    assert client.get(f"/p/{SLUG}/card").status_code == 404


def test_english(client):
    client.get("/lang/en")
    page = client.get(f"/p/{SLUG}/card")
    assert "Your ID card number" in page.text


# --- in Chromium ---------------------------------------------------------------------------------------

@pytest.mark.browser
def test_card_read_in_the_browser_prefills_and_submits(tmp_path, page, catalog, csca_dir, insert_card, profile):
    station = LiveStation(tmp_path / "live")
    with open(station.station_file, "a", encoding="utf-8") as f:
        f.write(f'[devices]\ncsca_dir = "{csca_dir}"\ncard_wait_seconds = 20\n')
    station.start()
    try:
        proc = catalog[SLUG]
        page.goto(f"{station.url}/p/{SLUG}")
        page.get_by_role("link", name="Đọc thẻ căn cước để điền sẵn").click()
        page.get_by_role("button", name="Tiếp tục").click()  # nothing typed: the error state
        page.locator(".error-summary").wait_for()
        assert page.title().startswith("Lỗi:")
        problems = []
        check_accessibility(page, "card number with error", problems)
        page.get_by_label("Số căn cước của bạn").fill(NUMBER)
        page.get_by_role("button", name="Tiếp tục").click()
        page.locator("#card-read").wait_for()
        assert page.locator("h1").inner_text() == "Đặt thẻ lên đầu đọc…"
        check_accessibility(page, "waiting for the card", problems)
        insert_card(profile)
        page.locator("[data-card-verified], [data-card-error]").wait_for(timeout=10000)  # htmx polled
        assert page.locator("[data-card-verified]").count(), page.locator("main").inner_text()
        assert "Nguyễn V** T**" in page.locator("main").inner_text()
        check_accessibility(page, "card read", problems)
        assert problems == []
        page.get_by_role("button", name="Dùng thông tin này").click()
        page.wait_for_url(re.compile(r"/q/ho-ten$"))
        assert page.locator("input[name=applicant_name]").input_value() == NAME
        for _ in range(len(proc.pages)):
            if not re.search(r"/q/[^/]+$", page.url):
                break
            page_id = page.url.rsplit("/", 1)[1]
            page.locator("h1").first.wait_for()
            for field in proc.page(page_id)["fields"]:
                # The card's old residence names a made-up ward: the province and street come converted,
                # the commune is searched and chosen as a citizen would.
                name = field["name"]
                if field["type"] == "address" and not page.locator(f"[name='{name}__commune']:checked").count():
                    page.locator(f"select[name='{name}__province']").select_option("01")
                    page.locator(f"[name='{name}__q']").fill("hoan kiem")
                    page.locator(f"button[name='address_search'][value='{name}']").click()
                    page.locator(f"input[type=radio][name='{name}__commune'][value='00070']").check()
            for name, value in form_for_page(proc.page(page_id)).items():
                if name.endswith(("__province", "__commune")):
                    continue
                target = page.locator(f"input[type=radio][name='{name}'][value='{value}']")
                if target.count():
                    target.check()
                elif not page.locator(f"[name='{name}']").input_value():
                    page.locator(f"[name='{name}']").fill(value)
            before = page.url
            page.get_by_role("button", name="Tiếp tục").click()
            page.wait_for_function("url => location.href !== url", arg=before)
        page.wait_for_url(re.compile(r"/check$"))
        page.get_by_role("link", name="Tiếp tục").click()
        page.get_by_label("Tôi cam đoan và đồng ý").check()
        page.get_by_role("button", name="Nộp hồ sơ").click()
        page.wait_for_url(re.compile(r"/done$"))
    finally:
        station.stop()
    key = sealing.load_or_create_key(station.data_dir / "var" / "payload.key")
    with sqlite3.connect(station.database) as conn:
        [(submission_id, sealed)] = conn.execute("SELECT submission_id, payload_sealed FROM dossiers").fetchall()
    answers = sealing.open_sealed(key, sealed, submission_id)["answers"]
    assert answers["applicant_name"] == NAME and answers["applicant_id_number"] == NUMBER


@pytest.mark.browser
def test_qr_scanner_keystrokes_in_the_browser_then_not_using_the_card(tmp_path, page, catalog, csca_dir, card):
    station = LiveStation(tmp_path / "live")
    with open(station.station_file, "a", encoding="utf-8") as f:
        f.write(f'[devices]\ncsca_dir = "{csca_dir}"\ncard_wait_seconds = 20\n')
    station.start()
    try:
        page.goto(f"{station.url}/p/{SLUG}/card")
        page.get_by_role("link", name="Quét mã QR ở mặt trước thẻ").click()
        page.wait_for_url(re.compile(r"/card/qr$"))
        problems = []
        check_accessibility(page, "QR", problems)
        # A keyboard-wedge scanner types into whatever has the focus, then presses Enter: no touch first.
        page.keyboard.type(QR)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/card/read$"))
        page.get_by_role("button", name="Không dùng, tự nhập").click()
        page.wait_for_url(re.compile(r"/q/ho-ten$"))
        assert page.locator("input[name=applicant_name]").input_value() == ""
        assert problems == []
    finally:
        station.stop()


@pytest.mark.parametrize("devices,message", [
    ({"csca_dir": "/no/such/folder"}, "devices.csca_dir"),
    ({"card_wait_seconds": 0}, "devices.card_wait_seconds"),
    ({"card_wait_seconds": "30"}, "devices.card_wait_seconds"),
])
def test_card_settings_are_checked_at_start(tmp_path, devices, message):
    from kiosk.core.config import ConfigError
    with pytest.raises(ConfigError, match=message):
        create_app({"paths": {"data": str(tmp_path / "var")}, "devices": devices})


def test_a_long_verified_name_is_prefilled_and_accepted(app, client, catalog, insert_card, test_pki):
    from devices.card_profile import SYNTHETIC_PERSON, build_profile
    long_name = "Nguyễn " + " ".join(["Hoàng Thị Phương Thảo"] * 8)  # 175 characters, as some names run
    assert 150 < len(long_name) <= 200
    insert_card(build_profile({**SYNTHETIC_PERSON, "full_name": long_name}, pki=test_pki))
    give_key(client)
    assert "Dùng thông tin này" in wait_for_read(client)
    page = client.get(f"/p/{SLUG}/card/read")
    response = client.post(f"/p/{SLUG}/card/use", data={"csrf_token": csrf_token(page.text)})
    first = urlsplit(response.headers["Location"]).path
    walk_questions(client, catalog[SLUG], first)
    assert submit(client, catalog[SLUG]).status_code == 303
    [(submission_id,)] = rows(app, "SELECT submission_id FROM dossiers")
    assert sealed_answers(app, submission_id)["applicant_name"] == long_name
