"""The receipt after a submit: printed in the background, or shown on screen when it cannot be, and the
dossier safe whatever the printer does."""
import io
import re
import sqlite3

import zxingcpp
from PIL import Image

from tests.support.fake_printer import FakeNetworkPrinter
from kiosk.app import create_app

from .escpos_decoder import decode, printed_image
from .wizard import answer_all, submit, submit_one as _submit_one


def _qr_texts(image):
    return {b.text for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)}


def _rows(app, sql):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql).fetchall()


def test_submit_prints_a_receipt_whose_qr_is_the_tracking_url(tmp_path, catalog):
    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        client, proc, code = _submit_one(app, catalog)
        page = printed_image(decode(printer.data))
    assert f"http://127.0.0.1:8080/track/{code}" in _qr_texts(page)
    done = client.get("/done")
    assert "Đã in giấy tiếp nhận hồ sơ" in done.text and "receipt-preview" not in done.text
    assert _rows(app, "SELECT requested_by, status, ok FROM receipt_prints") == [("citizen", "ok", 1)]
    assert ("receipt.printed",) in _rows(app, "SELECT action FROM audit_events")


def test_only_the_masked_name_and_number_reach_the_printer(tmp_path, catalog):
    # kiosk/receipt_document.py draws what it is given; kiosk/receipts.py hands it the masked forms only.
    from kiosk.core.db import connect
    from kiosk.receipts import receipt_for

    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    _client, proc, code = _submit_one(app, catalog)
    conn = connect(app.config["DATABASE"])
    (sid,) = conn.execute("SELECT submission_id FROM dossiers WHERE tracking_code = ?", (code,)).fetchone()
    receipt = receipt_for(conn, app.config["PAYLOAD_KEY"], app.config["STATION"], proc, sid, "http://x/track",
                          app.extensions["calendar"])
    assert receipt.applicant_masked == "Nguyễn V** A*" and receipt.id_masked == "********2345"


def test_paper_out_shows_the_receipt_on_screen_and_keeps_the_dossier(tmp_path, catalog):
    with FakeNetworkPrinter("paper_out") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        client, proc, code = _submit_one(app, catalog)
    done = client.get("/done")
    assert "Không in được giấy tiếp nhận: Máy in hết giấy." in done.text
    assert "Hồ sơ của bạn vẫn đã được nộp an toàn" in done.text
    assert 'src="/done/receipt.png"' in done.text
    png = client.get("/done/receipt.png")
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert f"http://127.0.0.1:8080/track/{code}" in _qr_texts(Image.open(io.BytesIO(png.data)))
    assert _rows(app, "SELECT status, ok FROM receipt_prints") == [("paper_out", 0)]
    assert _rows(app, "SELECT tracking_code, status FROM dossiers") == [(code, "queued")]
    assert _rows(app, "SELECT state FROM outbox") == [("pending",)]


def test_a_printer_that_is_switched_off_costs_the_citizen_no_wait(tmp_path, catalog):
    from tests.support.fake_printer import unused_port
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "devices": {"printer": "network"},
                      "printer": {"host": "127.0.0.1", "port": unused_port(), "timeout_s": 1.0}})
    client, proc, code = _submit_one(app, catalog)
    assert "Máy in không phản hồi" in client.get("/done").text


def test_while_printing_the_page_asks_again(tmp_path, catalog):
    with FakeNetworkPrinter("ok", answer_delay_s=0.6) as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        client = app.test_client()
        proc = catalog["dang-ky-khai-tu"]
        answer_all(client, proc)
        submit(client, proc)
        pending = client.get("/done/printing", headers={"HX-Request": "true"})
        assert 'hx-trigger="every 1s"' in pending.text and "Đang in giấy tiếp nhận" in pending.text
        app.extensions["receipts"].wait()
    finished = client.get("/done/printing", headers={"HX-Request": "true"})
    assert "every 1s" not in finished.text and "Đã in" in finished.text


def test_station_without_printer_shows_the_receipt(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    client, proc, code = _submit_one(app, catalog, "dang-ky-khai-tu")
    done = client.get("/done")
    assert "Đây là giấy tiếp nhận hồ sơ của bạn" in done.text and "/done/receipt.png" in done.text
    assert _rows(app, "SELECT COUNT(*) FROM receipt_prints") == [(0,)]
    image = Image.open(io.BytesIO(client.get("/done/receipt.png").data))
    assert re.search(code, " ".join(_qr_texts(image)))


def test_receipt_picture_belongs_to_the_session_that_submitted(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    _submit_one(app, catalog, "dang-ky-khai-tu")
    stranger = app.test_client()
    assert stranger.get("/done/receipt.png").status_code == 404
    assert stranger.get("/done/printing").status_code == 404


# -- the same picture on paper and on screen ------------------------------------------------------------

PAYMENT = {"bank_bin": "970436", "account": "0071000123456", "account_name": "UBND PHUONG MAU",
           "bank_name": "Vietcombank"}
RESULT_COUNTER = {"result_address": "Quầy số 3, số 10 đường Mẫu Thử, phường Sài Gòn", "hotline": "1900 0000",
                  "agency": "UBND phường Sài Gòn"}


def _vietqr_amount(payload: str) -> str:
    fields, i = {}, 0
    while i < len(payload):
        tag, size = payload[i:i + 2], int(payload[i + 2:i + 4])
        fields[tag] = payload[i + 4:i + 4 + size]
        i += 4 + size
    return fields["54"]


def _same_picture(printed: Image.Image, png: bytes) -> Image.Image:
    """The on-screen PNG is the printed picture, dot for dot."""
    screen = Image.open(io.BytesIO(png))
    assert screen.size == printed.size
    assert screen.convert("1").tobytes() == printed.convert("1").tobytes()
    return screen


def _drawn(app, proc, code):
    """The lines of a dossier's receipt as the station composes it (kiosk.receipts.compose)."""
    from kiosk.core.db import connect
    from kiosk.receipts import compose, receipt_for

    conn = connect(app.config["DATABASE"])
    try:
        (sid,) = conn.execute("SELECT submission_id FROM dossiers WHERE tracking_code = ?", (code,)).fetchone()
        receipt = receipt_for(conn, app.config["PAYLOAD_KEY"], app.config["STATION"], proc, sid,
                              f"http://127.0.0.1:8080/track/{code}", app.extensions["calendar"])
    finally:
        conn.close()
    return receipt, compose(app.config["STATION"], receipt)


def test_the_screen_shows_the_printed_receipt_with_its_payment_code_at_the_papers_width(tmp_path, catalog):
    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config(paper_mm=58),
                          "payment": PAYMENT, "station": RESULT_COUNTER})
        client, proc, code = _submit_one(app, catalog)  # a procedure with a fee, at a kiosk
        printed = printed_image(decode(printer.data))
    assert printed.width == 384
    screen = _same_picture(printed, client.get("/done/receipt.png").data)
    url = f"http://127.0.0.1:8080/track/{code}"
    for picture in (printed, screen):
        codes = _qr_texts(picture)
        assert url in codes and len(codes) == 2
        [payload] = codes - {url}
        (fee,) = _rows(app, "SELECT fee_due_vnd FROM dossiers")[0]
        assert fee > 0 and _vietqr_amount(payload) == str(fee)
    receipt, drawn = _drawn(app, proc, code)
    assert drawn.image.tobytes() == printed.convert("1").tobytes()
    assert drawn.text("agency") == "UBND PHƯỜNG SÀI GÒN"
    assert drawn.text("competent_agency").endswith(proc.agency["vi"])
    assert drawn.text("officer").endswith("Tự nộp tại ki-ốt / Self-service kiosk")
    assert "Tờ khai điện tử do người nộp tự khai tại ki-ốt" in drawn.text("documents")
    assert drawn.text("result_at").endswith("Trực tiếp / In person: " + RESULT_COUNTER["result_address"])
    assert drawn.text("hotline").endswith("1900 0000") and drawn.text("bank").endswith("Vietcombank")
    assert "Chưa nộp" in drawn.text("payment_state") and "dossier_code" not in drawn.parts()


def test_without_a_printer_the_screen_shows_the_80_mm_receipt_with_its_payment_code(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}, "payment": PAYMENT})
    client, proc, code = _submit_one(app, catalog)
    screen = Image.open(io.BytesIO(client.get("/done/receipt.png").data))
    assert screen.width == 576
    assert len(_qr_texts(screen)) == 2
    _receipt, drawn = _drawn(app, proc, code)
    assert screen.convert("1").tobytes() == drawn.image.tobytes()


def test_the_on_screen_width_is_the_printers(tmp_path):
    from kiosk.receipts import paper_width_px

    assert paper_width_px({"devices": {"printer": "none"}, "printer": {"paper_mm": 58}}) == 576
    assert paper_width_px({"devices": {"printer": "network"}, "printer": {"host": "p", "paper_mm": 58}}) == 384
    assert paper_width_px({"devices": {"printer": "network"},
                           "printer": {"host": "p", "profile": "TM-T88V", "paper_mm": 58}}) == 512
    assert paper_width_px({"devices": {"printer": "network"}, "printer": {"host": "p", "paper_mm": 57}}) == 576


def test_a_counter_receipt_on_paper_and_on_the_staff_screen(tmp_path, catalog):
    from .test_agent import _add, _finish, _login, _station

    proc = catalog["cap-phieu-ly-lich-tu-phap"]
    with FakeNetworkPrinter("ok") as printer:
        app = _station(tmp_path, **{**printer.config(paper_mm=58), "payment": PAYMENT,
                                    "station": {"kind": "counter", "id": "BD01", **RESULT_COUNTER}})
        _add(app, "minh", name="Trần Văn Minh")
        client = app.test_client()
        _login(client, "minh")
        answer_all(client, proc)
        done = _finish(client, proc, delivery="post", address="Số 5 ngõ 12 phố Huế, Hà Nội")
        assert done.status_code == 303
        code = done.headers["Location"].rsplit("/", 1)[1]
        app.extensions["receipts"].wait()
        printed = printed_image(decode(printer.data))
    staff_screen = _same_picture(printed, client.get(f"/agent/d/{code}/receipt.png").data)
    assert _qr_texts(staff_screen) == {f"http://127.0.0.1:8080/track/{code}"}  # paid in cash: no payment code
    _receipt, drawn = _drawn(app, proc, code)
    assert drawn.image.tobytes() == printed.convert("1").tobytes()
    assert drawn.text("officer") == "Người tiếp nhận / Received by Trần Văn Minh"
    required = [d["vi"] for d in proc.documents if d["required"]]
    listed = drawn.text("documents")
    assert all(f"{n}. {doc}" in listed for n, doc in enumerate(required, 1))
    assert "Qua bưu chính" in drawn.text("result_at")
    assert "Số 5 ngõ 12" not in " ".join(line.text for line in drawn.lines)  # the address stays off the paper
    assert drawn.text("payment_state").endswith("Đã nộp tiền mặt / Paid in cash")


def test_a_reprint_after_sync_carries_the_dossier_code_and_survives_the_purge(tmp_path, catalog):
    from kiosk.core import dossiers
    from kiosk.core.db import connect, write_transaction

    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config(), "payment": PAYMENT})
        client, proc, code = _submit_one(app, catalog)
        conn = connect(app.config["DATABASE"])
        (sid,) = conn.execute("SELECT submission_id FROM dossiers").fetchone()
        with write_transaction(conn):
            dossiers.record_central_code(conn, sid, "000.00.12.H29-261127-0001")
        printer.clear()
        app.extensions["receipts"].request(conn, _drawn(app, proc, code)[0], sid, actor="test")
        app.extensions["receipts"].wait()
        printed = printed_image(decode(printer.data))
    _receipt, drawn = _drawn(app, proc, code)
    assert drawn.text("dossier_code") == "Mã hồ sơ / Dossier code 000.00.12.H29-261127-0001"
    _same_picture(printed, client.get("/done/receipt.png").data)
    with write_transaction(conn):
        dossiers.purge_payload(conn, sid)
    conn.close()
    receipt, drawn = _drawn(app, proc, code)
    assert receipt.applicant_masked == "Nguyễn V** A*"  # from the dossier's row once the payload is gone
    assert "documents" not in drawn.parts() and "result_at" not in drawn.parts()
    assert drawn.text("dossier_code").endswith("000.00.12.H29-261127-0001")
