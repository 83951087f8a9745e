"""The receipt a citizen takes home: giấy tiếp nhận hồ sơ và hẹn trả kết quả, a document of the one-stop
process (devices/printer.py only prints it).

The whole receipt is drawn as one 1-bit image with a TrueType font that has every Vietnamese glyph,
because the code pages inside receipt printers cannot be trusted with Vietnamese (few have it, and those
disagree). The same image is sent to the printer as raster graphics and shown on screen as a PNG, so
what the citizen sees when the printer fails is exactly what the printer would have given them.

The printed words are in kiosk/messages_receipt.toml. The paper is bilingual whatever the screen's
language: a label prints as "Vietnamese / English", the title and the closing lines as a Vietnamese
line and an English one.
"""
import io
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo

import qrcode
from PIL import Image, ImageDraw, ImageFont

from devices.printer import PAPER_WIDTH_PX
from devices.vietqr import PaymentAccount, ascii_message

from .i18n import MESSAGES

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian fonts-dejavu-core
FONT_FILES = {
    "regular": "DejaVuSans.ttf",
    "bold": "DejaVuSans-Bold.ttf",
    "mono": "DejaVuSansMono-Bold.ttf",
}



def _vi(key: str) -> str:
    return MESSAGES[key]["vi"]


def _en(key: str) -> str:
    return MESSAGES[key]["en"]


def bilingual(key: str) -> str:
    """A label as printed: "Người nộp / Applicant"."""
    return f"{_vi(key)} / {_en(key)}"


@dataclass
class Receipt:
    """What is printed for one submitted dossier. The applicant's name and ID number come masked (the
    caller masks them: a full name or number never reaches the printer, its log or its memory)."""

    station_name: str
    agency: str
    procedure_name: str
    procedure_code: str
    applicant_masked: str | None
    id_masked: str | None
    submitted_at: datetime
    processing_days: int
    fee_vnd: int
    tracking_code: str
    tracking_url: str
    # Where the station is: the dates on the receipt are the citizen's local dates.
    timezone: str = "Asia/Ho_Chi_Minh"
    # Public holidays (nghỉ lễ) that do not count as working days, when the station knows them.
    holidays: tuple[date, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.submitted_at.tzinfo is None or self.submitted_at.utcoffset() is None:
            raise ValueError("Receipt.submitted_at must be timezone-aware")
        if self.processing_days < 0:
            raise ValueError("Receipt.processing_days cannot be negative")
        if self.fee_vnd < 0:
            raise ValueError("Receipt.fee_vnd cannot be negative")

    @property
    def local_submitted_at(self) -> datetime:
        return self.submitted_at.astimezone(ZoneInfo(self.timezone))

    @property
    def appointment(self) -> date:
        return appointment_date(self.local_submitted_at, self.processing_days, self.holidays)


def appointment_date(submitted_at: datetime | date, processing_days: int, holidays: Iterable[date] = ()) -> date:
    """The day the result is due: ``processing_days`` working days after the day of submission.

    Saturdays, Sundays and ``holidays`` are not working days. 0 days means the same day (a procedure
    settled at the counter); a dossier handed in on a Friday with 1 day is due on Monday. A datetime is
    taken on its own calendar day, so pass it in the station's timezone.
    """
    if processing_days < 0:
        raise ValueError("processing_days cannot be negative")
    day = submitted_at.date() if isinstance(submitted_at, datetime) else submitted_at
    closed = set(holidays)
    remaining = processing_days
    while remaining > 0:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in closed:
            remaining -= 1
    return day


def format_vnd(amount: int) -> str:
    """50000 -> '50.000 đồng' (Vietnamese groups thousands with dots)."""
    return f"{amount:,}".replace(",", ".") + " " + _vi("receipt_currency")


def format_day(day: date) -> str:
    return f"{_vi(f'receipt_weekday_{day.weekday()}')}, {day:%d/%m/%Y}"


def payment_message(receipt: Receipt) -> str:
    """The transfer content of the payment QR: the tracking code, so the payment finds its dossier."""
    return ascii_message(f"DVC {receipt.tracking_code}")


@lru_cache(maxsize=64)
def font(kind: str, size: int) -> ImageFont.FreeTypeFont:
    path = FONT_DIR / FONT_FILES[kind]
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        raise FileNotFoundError(
            f"{path} is missing: receipts need the DejaVu fonts (apt-get install fonts-dejavu-core)"
        ) from None


# The tallest Vietnamese letters carry two marks above a capital (Ấ, Ễ, Ở); the font's ascent does
# not cover them, so lines are spaced by the glyphs' real extents or the marks are cut off.
_TALL = "ẤẦẨẪẬẾỀỂỄỆỐỒỔỖỘỚỜỞỠỢỨỪỬỮỰÝỲỶỸĐ"
_DEEP = "gjpqyỴỵẠỌỤ"


@lru_cache(maxsize=64)
def line_extent(kind: str, size: int) -> tuple[int, int]:
    """(height above the baseline, depth below it) that every Vietnamese line of this font fits in."""
    face = font(kind, size)
    ascent, descent = face.getmetrics()
    above = max(ascent, -face.getbbox(_TALL, anchor="ls")[1])
    below = max(descent, face.getbbox(_DEEP, anchor="ls")[3])
    return above + 1, below + 1


def qr_image(data: str, side_px: int) -> Image.Image:
    """A QR code (error correction M, 4-module quiet zone) whose modules are whole dots, about
    ``side_px`` wide: a thermal head cannot print half a dot, and scaling would blur the modules.
    Modules are never smaller than 3 dots, so a very long text gives a code wider than ``side_px``."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=1, border=4)
    code.add_data(data)
    code.make(fit=True)
    modules = code.modules_count + 2 * code.border
    code.box_size = max(3, side_px // modules)  # 3 dots = 0.375 mm, the least a phone reads from thermal paper
    return code.make_image(fill_color="black", back_color="white").get_image().convert("L")


class _Layout:
    """Stacks lines of text and images down a strip of paper ``width`` dots wide."""

    def __init__(self, width: int):
        if width < 200:
            raise ValueError(f"a receipt needs at least 200 dots of width, not {width}")
        self.width = width
        self.margin = max(6, width // 48)
        self.inner = width - 2 * self.margin
        self.base = max(20, min(26, round(width / 22)))
        self.small = round(self.base * 0.8)
        self.blocks: list[Image.Image] = []

    def _wrap(self, text: str, face: ImageFont.FreeTypeFont, width: int) -> list[str]:
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line = ""
            for word in paragraph.split():
                while face.getlength(word) > width:  # a word wider than the paper: break it
                    cut = len(word)
                    while cut > 1 and face.getlength(word[:cut]) > width:
                        cut -= 1
                    if line:
                        lines.append(line)
                        line = ""
                    lines.append(word[:cut])
                    word = word[cut:]
                candidate = f"{line} {word}" if line else word
                if face.getlength(candidate) <= width:
                    line = candidate
                else:
                    lines.append(line)
                    line = word
            lines.append(line)
        return lines

    def text(self, text: str, size: int | None = None, kind: str = "regular", align: str = "left") -> None:
        size = size or self.base
        face = font(kind, size)
        above, below = line_extent(kind, size)
        for line in self._wrap(unicodedata.normalize("NFC", text), face, self.inner):
            strip = Image.new("L", (self.width, above + below + size // 8), 255)
            length = face.getlength(line)
            x = {"left": self.margin, "center": (self.width - length) / 2, "right": self.width - self.margin - length}[align]
            ImageDraw.Draw(strip).text((x, above), line, font=face, fill=0, anchor="ls")
            self.blocks.append(strip)

    def field(self, label: str, value: str) -> None:
        """A label and its value on one line when they fit, else the value in bold below its label."""
        label_face, value_face = font("regular", self.small), font("bold", self.base)
        label, value = unicodedata.normalize("NFC", label), unicodedata.normalize("NFC", value)
        gap = self.base
        if label_face.getlength(label) + gap + value_face.getlength(value) <= self.inner:
            above, below = (max(pair) for pair in zip(line_extent("regular", self.small), line_extent("bold", self.base)))
            strip = Image.new("L", (self.width, above + below + self.base // 8), 255)
            draw = ImageDraw.Draw(strip)
            baseline = above
            draw.text((self.margin, baseline), label, font=label_face, fill=0, anchor="ls")
            draw.text((self.width - self.margin, baseline), value, font=value_face, fill=0, anchor="rs")
            self.blocks.append(strip)
        else:
            self.text(label, self.small)
            self.text(value, self.base, "bold")

    def big(self, text: str, kind: str = "mono") -> None:
        """One line as large as fits across the paper (the tracking code)."""
        size = self.base * 3
        while size > self.base and font(kind, size).getlength(text) > self.inner:
            size -= 1
        self.text(text, size, kind, align="center")

    def image(self, picture: Image.Image) -> None:
        if picture.width > self.width:  # a cropped QR code would not scan: better to say so
            raise ValueError(f"an image {picture.width} dots wide does not fit paper {self.width} dots wide")
        strip = Image.new("L", (self.width, picture.height), 255)
        strip.paste(picture.convert("L"), ((self.width - picture.width) // 2, 0))
        self.blocks.append(strip)

    def space(self, height: int | None = None) -> None:
        self.blocks.append(Image.new("L", (self.width, height or self.base // 2), 255))

    def rule(self) -> None:
        strip = Image.new("L", (self.width, self.base), 255)
        y = self.base // 2
        draw = ImageDraw.Draw(strip)
        for x in range(self.margin, self.width - self.margin, 8):
            draw.line((x, y, min(x + 4, self.width - self.margin), y), fill=0, width=2)
        self.blocks.append(strip)

    def render(self) -> Image.Image:
        height = sum(block.height for block in self.blocks)
        page = Image.new("L", (self.width, height), 255)
        y = 0
        for block in self.blocks:
            page.paste(block, (0, y))
            y += block.height
        # Threshold rather than dither: text edges stay crisp and QR modules stay solid.
        return page.point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)


def _payment_account(payment) -> PaymentAccount | None:
    if payment is None or isinstance(payment, PaymentAccount):
        return payment
    if isinstance(payment, Mapping):
        return PaymentAccount(**{k: str(v) for k, v in payment.items() if k in PaymentAccount.__dataclass_fields__})
    raise TypeError("payment must be a PaymentAccount, a [payment] mapping or None")


def render_receipt_image(receipt: Receipt, width_px: int, payment: PaymentAccount | Mapping | None = None) -> Image.Image:
    """The receipt as a 1-bit image exactly ``width_px`` dots wide (384 for 58 mm paper, 576 for 80 mm).

    ``payment`` is the station's payment account; a VietQR for the fee is drawn only when there is an
    account and a fee to pay.
    """
    payment = _payment_account(payment)
    page = _Layout(width_px)
    page.space()
    page.text(receipt.station_name, page.base, "bold", "center")
    page.text(receipt.agency, page.small, align="center")
    page.rule()
    page.text(_vi("receipt_title"), round(page.base * 1.1), "bold", "center")
    page.text(_en("receipt_title"), page.small, align="center")
    page.rule()

    page.text(bilingual("receipt_procedure"), page.small)
    page.text(receipt.procedure_name, page.base, "bold")
    if receipt.procedure_code:
        page.field(bilingual("receipt_procedure_code"), receipt.procedure_code)
    page.field(bilingual("receipt_applicant"), receipt.applicant_masked or "—")
    page.field(bilingual("receipt_id_number"), receipt.id_masked or "—")
    submitted = receipt.local_submitted_at
    page.field(bilingual("receipt_submitted"), f"{submitted:%H:%M} {submitted:%d/%m/%Y}")
    page.field(bilingual("receipt_result_on"), format_day(receipt.appointment))
    page.field(bilingual("receipt_fee"), format_vnd(receipt.fee_vnd) if receipt.fee_vnd else bilingual("receipt_free"))
    page.rule()

    page.text(bilingual("receipt_tracking_code"), page.small, "bold", "center")
    page.big(receipt.tracking_code)
    page.image(qr_image(receipt.tracking_url, round(page.inner * 0.45)))
    page.text(_vi("receipt_scan_to_track"), page.small, align="center")
    page.text(_en("receipt_scan_to_track"), page.small, align="center")
    page.text(receipt.tracking_url, round(page.small * 0.9), align="center")

    if payment is not None and receipt.fee_vnd > 0:
        message = payment_message(receipt)
        page.rule()
        page.text(bilingual("receipt_pay_fee"), page.small, "bold", "center")
        page.image(qr_image(payment.payload(receipt.fee_vnd, message), round(page.inner * 0.55)))
        page.text(_vi("receipt_pay_scan"), page.small, align="center")
        page.field(bilingual("receipt_amount"), format_vnd(receipt.fee_vnd))
        page.field(bilingual("receipt_account"), payment.account)
        if payment.account_name:
            page.field(bilingual("receipt_account_holder"), payment.account_name)
        page.field(bilingual("receipt_transfer_content"), message)

    page.rule()
    page.text(_vi("receipt_keep"), page.small, align="center")
    page.text(_en("receipt_keep"), page.small, align="center")
    page.space()
    return page.render()


def render_receipt_png(receipt: Receipt, width_px: int = PAPER_WIDTH_PX[80], payment=None) -> bytes:
    """The same receipt as a PNG, for the screen when the printer cannot print it."""
    buffer = io.BytesIO()
    render_receipt_image(receipt, width_px, payment).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render_test_page(width_px: int, station_name: str, details: Iterable[tuple[str, str]]) -> Image.Image:
    """A printer test page: every Vietnamese vowel with every tone, the paper's edges and a QR code.
    ``details`` are (label, value) lines; a label is printed as given (see :func:`bilingual`). The specimen
    lines below are font samples, not words to translate."""
    page = _Layout(width_px)
    page.space()
    page.text(bilingual("receipt_test_page"), page.base, "bold", "center")
    page.text(station_name, page.small, align="center")
    page.rule()
    for label, value in details:
        page.field(label, value)
    page.rule()
    vowels = "aăâeêioôơuưy"
    for base in (vowels, vowels.upper()):
        for tone in ("", "\u0300", "\u0301", "\u0309", "\u0303", "\u0323"):
            page.text(" ".join(unicodedata.normalize("NFC", c + tone) for c in base), page.small)
    page.text("đ Đ — Cộng hòa Xã hội Chủ nghĩa Việt Nam", page.small)
    page.text("Độc lập - Tự do - Hạnh phúc", page.small, "bold")
    page.rule()
    edges = Image.new("L", (width_px, page.base), 255)
    ImageDraw.Draw(edges).rectangle((0, 0, width_px - 1, page.base - 1), outline=0, width=2)
    page.image(edges)
    page.text(f"{width_px} dots", page.small, align="center")
    page.image(qr_image("https://dichvucong.gov.vn", round(page.inner * 0.4)))
    page.space()
    return page.render()
