"""The receipt carries what the one-stop form carries (Mẫu 01 of Thông tư 01/2018/TT-VPCP, the "Giấy tiếp
nhận hồ sơ và hẹn trả kết quả"), in that order, on 58 and 80 mm paper.

There is no OCR here: the drawing code returns the lines it drew (``DrawnReceipt.lines``, each under the
receipt item it belongs to, with its ink's box), the tests assert on those, and check the pixels that the
boxes describe (nothing outside the paper's margins, every line's ink where its box says).
"""
import pytest
import zxingcpp
from PIL import Image

from devices.vietqr import PaymentAccount
from kiosk.core.catalog import load_catalog
from kiosk.receipt_document import RECEIPT_PARTS, draw_receipt, format_day
from tests.bench.receipt_bench import SAMPLE_PAYMENT, counter_sample_receipt, sample_receipt

WIDTHS = {58: 384, 80: 576}
PAYMENT = PaymentAccount(**SAMPLE_PAYMENT)


def decoded(image: Image.Image) -> list[str]:
    return sorted(b.text for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode))


def vietqr_fields(payload: str) -> dict[str, str]:
    """The top-level EMVCo data objects of a VietQR payload (ID -> value)."""
    fields, i = {}, 0
    while i < len(payload):
        tag, size = payload[i:i + 2], int(payload[i + 2:i + 4])
        fields[tag] = payload[i + 4:i + 4 + size]
        i += 4 + size
    return fields


def lines_of(drawn, part: str) -> list[str]:
    return [line.text for line in drawn.lines if line.part == part and line.kind != "qr"]


@pytest.mark.parametrize("paper_mm", sorted(WIDTHS))
def test_a_kiosk_receipt_has_the_official_lines_in_order(paper_mm):
    receipt = sample_receipt()
    drawn = draw_receipt(receipt, WIDTHS[paper_mm], PAYMENT)
    assert drawn.parts() == [
        "national_name", "national_motto", "agency", "competent_agency", "unit", "station",
        "title", "tracking_code",
        "applicant", "id_number", "procedure", "procedure_code", "documents", "received_at", "result_due",
        "result_at", "fee", "payment_state", "officer", "hotline",
        "tracking_qr", "payment_qr", "bank", "account", "account_holder", "amount", "transfer_content", "keep",
    ]
    # The national heading and the receiving unit each on one line, as the form prints them.
    assert lines_of(drawn, "national_name") == ["CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"]
    assert lines_of(drawn, "national_motto") == ["Độc lập - Tự do - Hạnh phúc"]
    assert lines_of(drawn, "unit") == ["BỘ PHẬN TIẾP NHẬN VÀ TRẢ KẾT QUẢ"]
    # The receiving agency named (the station's setting), the procedure's competent agency below it.
    assert drawn.text("agency") == "UBND PHƯỜNG SÀI GÒN"
    assert drawn.text("competent_agency") == ("Cơ quan giải quyết / Deciding authority: Ủy ban nhân dân cấp xã "
                                              "nơi cư trú của người cha hoặc người mẹ")
    assert drawn.text("station") == receipt.station_name
    assert drawn.text("title").startswith("GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ")
    assert lines_of(drawn, "tracking_code")[-1] == "K01-261127-0007-X"
    assert drawn.text("applicant") == "Tiếp nhận hồ sơ của / Received from Nguyễn V** A*"
    assert drawn.text("id_number") == "Số giấy tờ / ID ********2345"
    assert drawn.text("procedure") == "Nội dung yêu cầu giải quyết / Request Đăng ký khai sinh"
    assert drawn.text("documents") == ("Giấy tờ đã nhận / Documents received 1. Tờ khai điện tử do người nộp tự "
                                       "khai tại ki-ốt / Electronic application filled in at the kiosk")
    assert drawn.text("received_at") == "Thời gian nhận hồ sơ / Received at 16 giờ 05 phút, ngày 27/11/2026"
    assert drawn.text("result_due") == f"Thời gian trả kết quả / Result due {format_day(receipt.appointment)}"
    assert drawn.text("result_at") == ("Đăng ký nhận kết quả tại / Result returned Trực tiếp / In person: "
                                       "Quầy số 3, số 10 đường Mẫu Thử, phường Sài Gòn, TP. Hồ Chí Minh")
    assert drawn.text("fee") == "Phí, lệ phí / Fee 50.000 đồng"
    assert drawn.text("payment_state") == "Hình thức nộp / Payment Chưa nộp: quét mã VietQR bên dưới / Not paid: scan the VietQR below"
    assert drawn.text("officer") == "Người tiếp nhận / Received by Tự nộp tại ki-ốt / Self-service kiosk"
    assert drawn.text("hotline") == "Đường dây nóng / Hotline 1900 0000"
    assert drawn.text("bank") == "Ngân hàng / Bank Vietcombank"
    assert drawn.text("account") == "Tài khoản / Account 0071000123456"
    assert drawn.text("amount") == "Số tiền / Amount 50.000 đồng"
    assert drawn.text("transfer_content") == "Nội dung / Content DVC K012611270007X"
    # Both codes are drawn and both scan: the tracking URL, and the fee's VietQR for the same amount.
    assert drawn.codes("tracking_qr") == [receipt.tracking_url]
    [payload] = drawn.codes("payment_qr")
    assert payload == PAYMENT.payload(50000, "DVC K01-261127-0007-X") and vietqr_fields(payload)["54"] == "50000"
    assert decoded(drawn.image) == sorted(drawn.codes())


@pytest.mark.parametrize("paper_mm", sorted(WIDTHS))
def test_a_counter_receipt_names_the_documents_the_officer_and_the_cash_and_needs_no_payment_code(paper_mm):
    receipt = counter_sample_receipt()
    drawn = draw_receipt(receipt, WIDTHS[paper_mm], PAYMENT)
    parts = drawn.parts()
    assert parts.index("tracking_code") < parts.index("dossier_code") < parts.index("applicant")
    assert drawn.text("dossier_code") == "Mã hồ sơ / Dossier code 000.00.12.H29-261127-0007"
    documents = lines_of(drawn, "documents")
    assert documents[0] == "Giấy tờ đã nhận / Documents received"
    starts = [line for line in documents[1:] if line[:2] in ("1.", "2.", "3.")]
    assert [line[:3] for line in starts] == ["1. ", "2. ", "3. "]
    assert drawn.text("documents") == ("Giấy tờ đã nhận / Documents received 1. Tờ khai đăng ký khai sinh theo mẫu "
                                       "2. Giấy chứng sinh (bản chính) 3. Giấy chứng nhận kết hôn của cha mẹ (bản sao)")
    assert drawn.text("officer") == "Người tiếp nhận / Received by Trần Thị Mẫu"
    assert drawn.text("result_at") == ("Đăng ký nhận kết quả tại / Result returned Qua bưu chính, đến địa chỉ đã "
                                       "đăng ký / By post, to the address given")
    assert drawn.text("payment_state") == "Hình thức nộp / Payment Đã nộp tiền mặt / Paid in cash"
    # Paid in cash: no payment code (paying twice must not be offered).
    assert "payment_qr" not in parts and "bank" not in parts
    assert decoded(drawn.image) == [receipt.tracking_url]


def test_a_fee_partly_paid_asks_for_the_rest_in_the_payment_code():
    receipt = counter_sample_receipt(fee_vnd=200000, fee_paid_vnd=150000)
    drawn = draw_receipt(receipt, 576, PAYMENT)
    assert drawn.text("payment_state") == ("Hình thức nộp / Payment Đã nộp tiền mặt 150.000 đồng, còn 50.000 đồng / "
                                           "150.000 đồng paid in cash, 50.000 đồng to pay")
    assert drawn.text("amount") == "Số tiền / Amount 50.000 đồng"
    [payload] = drawn.codes("payment_qr")
    assert vietqr_fields(payload)["54"] == "50000"
    assert decoded(drawn.image) == sorted([receipt.tracking_url, payload])


def test_lines_that_do_not_apply_are_left_out():
    receipt = sample_receipt(competent_agency="", central_code=None, hotline="", delivery=None,
                             documents_declared=False, fee_vnd=0)
    drawn = draw_receipt(receipt, 384, PAYMENT)
    parts = drawn.parts()
    for absent in ("competent_agency", "dossier_code", "hotline", "result_at", "documents", "payment_state",
                   "payment_qr"):
        assert absent not in parts, absent
    assert drawn.text("fee") == "Phí, lệ phí / Fee Miễn phí / Free"
    assert decoded(drawn.image) == [receipt.tracking_url]


def test_without_a_result_address_or_a_bank_name_the_receipt_says_where_applied_and_the_bin():
    drawn = draw_receipt(sample_receipt(result_address=""), 576, {"bank_bin": "970436", "account": "0071000123456"})
    assert drawn.text("result_at").endswith("Trực tiếp tại nơi nộp hồ sơ / In person where you applied")
    assert drawn.text("bank") == "Ngân hàng / Bank BIN 970436"
    assert "account_holder" not in drawn.parts()


def test_every_part_drawn_is_a_known_item_in_the_documented_order():
    for receipt in (sample_receipt(), counter_sample_receipt(), counter_sample_receipt(fee_paid_vnd=1)):
        parts = draw_receipt(receipt, 384, PAYMENT).parts()
        assert [p for p in RECEIPT_PARTS if p in parts] == parts


# -- fitting the paper ----------------------------------------------------------------------------------

def _longest(texts):
    return max(texts, key=len)


def _worst_case_receipt():
    """The longest names the catalog and the station file can give, on one receipt."""
    catalog = load_catalog().values()
    words = "Trung tâm Phục vụ hành chính công tỉnh Thừa Thiên Huế chi nhánh liên phường Nghiêng Đường Ễnh Ương"
    agency = (words + " ") * 3
    return sample_receipt(
        agency=agency[:200].strip(),  # station.agency: at most 200 characters
        competent_agency=_longest(p.agency["vi"] for p in catalog),
        procedure_name=_longest(p.name["vi"] for p in catalog),
        station_name=("Bưu điện văn hóa xã Quầy tiếp nhận và trả kết quả số 12 " * 4)[:200].strip(),
        documents=tuple(sorted((d["vi"] for p in catalog for d in p.documents), key=len)[-4:]),
        documents_declared=False,
        result_address=(agency * 2)[:200].strip(),
        officer="Tôn Nữ Hoàng Thị Ngọc Phương Quỳnh Anh Nguyễn Phước",
        hotline="+84 (0)28 3829 1234 - 1900 0000",
        central_code="000.00.12.H29-261127-0007-LONG",
        fee_paid_vnd=10000,
    )


@pytest.mark.parametrize("width", [384, 512, 576])
def test_no_text_overflows_the_paper_even_with_the_longest_names(width):
    receipt = _worst_case_receipt()
    drawn = draw_receipt(receipt, width, PAYMENT)
    image = drawn.image.convert("L")
    assert image.width == width
    margin = max(6, width // 48)
    # The lines as drawn: each one inside the paper, and only a dot of a glyph's overhang past the margin.
    for line in drawn.lines:
        left, top, right, bottom = line.box
        assert margin - 2 <= left and right <= width - margin + 2, line
    # The pixels: nothing at all near the paper's edges (text that overflowed would be cut there) ...
    edge = margin // 2
    for x0, x1 in ((0, edge), (width - edge, width)):
        assert image.crop((x0, 0, x1, image.height)).getextrema()[0] == 255, f"ink at the edge {x0}..{x1}"
    # ... and the ink of every row of text where the boxes of the lines on that row say, so the boxes
    # above describe the picture (a label and its value share a row).
    for line in drawn.lines:
        if line.kind == "qr":
            continue
        top, bottom = line.box[1], line.box[3]
        on_row = [other.box for other in drawn.lines if other.box[1] < bottom and other.box[3] > top]
        ink = image.crop((0, top, width, bottom)).point(lambda v: 255 - v).getbbox()
        assert ink is not None, line
        assert min(b[0] for b in on_row) - 1 <= ink[0] and ink[2] <= max(b[2] for b in on_row) + 1, line
    # The long names wrapped rather than shrank: every one of them is there, word for word.
    assert drawn.text("competent_agency").endswith(receipt.competent_agency)
    assert drawn.text("procedure").endswith(receipt.procedure_name)
    assert drawn.text("agency") == receipt.agency.upper()
    assert decoded(drawn.image) == sorted(drawn.codes())


def test_the_national_heading_fits_one_line_of_58_mm_paper():
    drawn = draw_receipt(sample_receipt(), 384)
    [name] = [line for line in drawn.lines if line.part == "national_name"]
    [unit] = [line for line in drawn.lines if line.part == "unit"]
    assert name.size >= 14 and unit.size >= 14  # still readable
    assert name.box[2] - name.box[0] <= 384 - 2 * 8


# -- the pictures in docs/printer.md --------------------------------------------------------------------

def test_the_pictures_in_the_docs_are_the_receipt_as_drawn_now(tmp_path):
    """docs/images/receipt-*.png are what the code draws (redraw: python -m tests.bench.receipt_bench docs).
    The result date is masked out: it follows the station's working-day calendar, not the layout."""
    from tests.bench.receipt_bench import DOC_IMAGES, doc_images

    doc = (DOC_IMAGES.parent / "printer.md").read_text("utf-8")
    receipts = {"kiosk": sample_receipt(), "counter": counter_sample_receipt()}
    for fresh in doc_images(tmp_path):
        committed = DOC_IMAGES / fresh.name
        assert f"images/{fresh.name}" in doc, f"docs/printer.md does not show {fresh.name}"
        assert committed.is_file(), f"{committed} is missing: python -m tests.bench.receipt_bench docs"
        name, paper = fresh.stem.split("-")[1:]
        drawn = draw_receipt(receipts[name], WIDTHS[int(paper.removesuffix("mm"))], PAYMENT)
        pictures = [Image.open(path).convert("L") for path in (fresh, committed)]
        assert pictures[0].size == pictures[1].size, f"{fresh.name} is out of date: python -m tests.bench.receipt_bench docs"
        for line in drawn.lines:
            if line.part == "result_due":
                for picture in pictures:
                    picture.paste(255, (0, line.box[1], picture.width, line.box[3] + 1))
        assert pictures[0].tobytes() == pictures[1].tobytes(), \
            f"{fresh.name} is out of date: python -m tests.bench.receipt_bench docs"
