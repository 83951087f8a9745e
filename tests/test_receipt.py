"""The receipt: appointment dates, masking, and the image (which is both the print and the preview)."""
import io
import unicodedata
from datetime import date, datetime, timedelta, timezone

import holidays
import pytest
import zxingcpp
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from kiosk.receipt_document import FONT_FILES, appointment_date, font, format_vnd, render_receipt_image, render_receipt_png
from tests.bench.receipt_bench import sample_receipt
from devices.vietqr import PaymentAccount
from kiosk.core.masking import mask_id, mask_name

VN = timezone(timedelta(hours=7))
FRIDAY = date(2026, 11, 27)
PAYMENT = PaymentAccount("970436", "0071000123456", "UBND PHUONG BEN NGHE")


make_receipt = sample_receipt


# -- appointment date ---------------------------------------------------------------------------
def test_zero_days_is_the_same_day():
    assert appointment_date(FRIDAY, 0) == FRIDAY
    # Handed in on a Saturday: it counts from the next working day (tests/test_calendar.py has the rules).
    assert appointment_date(FRIDAY + timedelta(days=1), 0) == FRIDAY + timedelta(days=3)


def test_friday_plus_one_is_monday():
    monday = appointment_date(FRIDAY, 1)
    assert monday.weekday() == 0 and monday - FRIDAY == timedelta(days=3)


def test_weekends_are_skipped():
    monday = FRIDAY + timedelta(days=3)
    assert appointment_date(monday, 5) == monday + timedelta(days=7)
    assert appointment_date(FRIDAY, 6) == FRIDAY + timedelta(days=10)  # two weekends
    assert appointment_date(FRIDAY + timedelta(days=1), 1) == monday + timedelta(days=1)  # handed in on Saturday


def test_holidays_are_skipped():
    monday = FRIDAY + timedelta(days=3)
    assert appointment_date(FRIDAY, 1, holidays=[monday]) == monday + timedelta(days=1)


def test_datetime_counts_from_its_own_day_in_office_hours():
    assert appointment_date(datetime(2026, 11, 27, 10, 0, tzinfo=VN), 1).weekday() == 0
    assert appointment_date(datetime(2026, 11, 27, 23, 59, tzinfo=VN), 1).weekday() == 1  # after closing


def test_negative_days_are_refused():
    with pytest.raises(ValueError):
        appointment_date(FRIDAY, -1)


VN_HOLIDAYS = holidays.country_holidays("VN", years=range(2019, 2037))


def _working(day: date) -> bool:
    """The package's own word (not the calendar's): a weekday that is no holiday, or a Saturday worked."""
    return day in VN_HOLIDAYS.weekend_workdays or (day.weekday() < 5 and day not in VN_HOLIDAYS)


@given(start=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 1, 1)), days=st.integers(0, 60))
def test_appointment_is_exactly_n_working_days_later(start, days):
    due = appointment_date(start, days)
    working_days_between = sum(1 for k in range(1, (due - start).days + 1) if _working(start + timedelta(days=k)))
    # A day off counts from the next working day, which is then the first of the count.
    assert working_days_between == days + (0 if _working(start) else 1)
    assert _working(due)


def test_receipt_counts_from_the_local_day_of_submission():
    # 10:30 UTC on Friday is 17:30 in Hà Nội, after office hours: a 0-day procedure is due on Monday
    # (in UTC it would have been that Friday).
    late = make_receipt(submitted_at=datetime(2026, 11, 27, 10, 30, tzinfo=timezone.utc), processing_days=0)
    assert late.appointment == FRIDAY + timedelta(days=3)


def test_naive_submission_time_is_refused():
    with pytest.raises(ValueError):
        make_receipt(submitted_at=datetime(2026, 11, 27, 16, 5))


# -- masking ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, masked",
    [
        ("Nguyễn Văn An", "Nguyễn V** A*"),
        ("Trần Thị Ngọc Ánh", "Trần T** N*** Á**"),
        ("  Lê   Ý  ", "Lê Ý"),
        ("Đặng", "Đ***"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_name(name, masked):
    assert mask_name(name) == masked


def test_mask_name_gives_the_same_result_for_decomposed_input():
    composed = "Nguyễn Văn Ước"
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert mask_name(decomposed) == mask_name(composed) == "Nguyễn V** Ư**"


def test_mask_name_never_leaves_a_lone_tone_mark():
    # Q with a dot below and an acute has no precomposed form: NFC leaves three code points.
    name = "Phạm Q\u0323\u0301uân"
    masked = mask_name(name)
    assert masked.startswith("Phạm Q\u0323\u0301")
    assert not any(unicodedata.combining(c) for c in masked.split()[1][len("Q\u0323\u0301"):])


@pytest.mark.parametrize(
    "number, masked",
    [("001099012345", "********2345"), ("C1234567", "****4567"), (" 0010 9901 2345 ", "********2345"), ("123", "***"), ("", ""), (None, "")],
)
def test_mask_id(number, masked):
    assert mask_id(number) == masked


# -- the image ----------------------------------------------------------------------------------
VOWELS = "aăâeêioôơuưy"
TONES = ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323")  # ngang, huyền, sắc, hỏi, ngã, nặng
VIETNAMESE_LETTERS = [unicodedata.normalize("NFC", v + t) for v in VOWELS + VOWELS.upper() for t in TONES] + ["đ", "Đ"]


@pytest.mark.parametrize("kind", sorted(FONT_FILES))
def test_every_vietnamese_letter_has_a_glyph_in_the_receipt_fonts(kind):
    face = font(kind, 24)

    def drawn(char: str) -> bytes:
        canvas = Image.new("L", (48, 48), 0)
        ImageDraw.Draw(canvas).text((6, 6), char, font=face, fill=255)
        return canvas.tobytes()

    missing = drawn("\ue000")  # a private-use character: the font's "missing glyph" box
    assert drawn("\ue001") == missing  # (so a missing letter would be caught this way)
    assert len(VIETNAMESE_LETTERS) == 146 and all(len(letter) == 1 for letter in VIETNAMESE_LETTERS)
    pictures = [drawn(letter) for letter in VIETNAMESE_LETTERS]
    assert missing not in pictures
    assert len(set(pictures)) == len(VIETNAMESE_LETTERS)  # and no two letters look the same



def decoded(image: Image.Image) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]


def black_fraction(image: Image.Image) -> float:
    return image.convert("L").histogram()[0] / (image.width * image.height)


@pytest.mark.parametrize("width", [384, 512, 576])
def test_receipt_image_is_one_bit_paper_wide_and_carries_both_codes(width):
    receipt = make_receipt()
    image = render_receipt_image(receipt, width, PAYMENT)
    assert image.mode == "1" and image.width == width
    assert width < image.height < 8 * width
    assert 0.03 < black_fraction(image) < 0.5
    codes = decoded(image)
    assert sorted(codes) == sorted([receipt.tracking_url, PAYMENT.payload(50000, "DVC K01-261127-0007-X")])


@pytest.mark.parametrize("fee, payment", [(0, PAYMENT), (50000, None)])
def test_no_payment_code_without_a_fee_or_an_account(fee, payment):
    receipt = make_receipt(fee_vnd=fee)
    image = render_receipt_image(receipt, 576, payment)
    assert decoded(image) == [receipt.tracking_url]
    with_payment = render_receipt_image(make_receipt(), 576, PAYMENT)
    assert image.height < with_payment.height


def test_payment_may_be_the_station_files_table():
    image = render_receipt_image(make_receipt(), 576, {"bank_bin": "970436", "account": "0071000123456"})
    assert len(decoded(image)) == 2


def test_receipt_without_citizen_details_still_renders():
    image = render_receipt_image(make_receipt(applicant_masked=None, id_masked=""), 384)
    assert decoded(image) == [make_receipt().tracking_url]


def test_long_text_wraps_inside_the_paper():
    long_name = "Cấp đổi giấy phép lái xe do ngành Giao thông vận tải cấp " * 3
    short = render_receipt_image(make_receipt(procedure_name="Khai sinh"), 384)
    long = render_receipt_image(make_receipt(procedure_name=long_name, station_name="X" * 120), 384)
    assert long.width == 384 and long.height > short.height


def test_png_preview_is_the_same_picture():
    receipt = make_receipt()
    png = render_receipt_png(receipt, 576, PAYMENT)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    preview = Image.open(io.BytesIO(png))
    assert preview.size == render_receipt_image(receipt, 576, PAYMENT).size
    assert preview.convert("1").tobytes() == render_receipt_image(receipt, 576, PAYMENT).tobytes()


def test_format_vnd():
    assert format_vnd(50000) == "50.000 đồng"
    assert format_vnd(1250000) == "1.250.000 đồng"
    assert format_vnd(500) == "500 đồng"


def test_a_qr_code_wider_than_the_paper_is_refused_not_cropped():
    with pytest.raises(ValueError, match="does not fit"):
        render_receipt_image(make_receipt(tracking_url="https://example.vn/" + "x" * 1500), 384)
