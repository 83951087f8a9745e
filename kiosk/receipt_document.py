"""The receipt a citizen takes home: giấy tiếp nhận hồ sơ và hẹn trả kết quả, a document of the one-stop
process (devices/printer.py only prints it). It carries what the official form carries (Mẫu 01 of Thông tư
01/2018/TT-VPCP), in the form's order, fitted to 58 or 80 mm paper (``RECEIPT_PARTS``); ``draw_receipt``
returns the picture with the lines it drew, which is what the tests and docs/printer.md read.

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
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping
from zoneinfo import ZoneInfo

import qrcode
from PIL import Image, ImageDraw, ImageFont

from devices.printer import PAPER_WIDTH_PX
from devices.vietqr import PaymentAccount, ascii_message

from .core import calendar as workdays
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
    # The station's working days and office hours (kiosk.core.calendar): the appointment follows them.
    calendar: workdays.WorkCalendar = workdays.DEFAULT
    # What Mẫu 01 (Thông tư 01/2018/TT-VPCP) carries besides. ``agency`` above is the receiving agency
    # (the station's ``station.agency``); the procedure's competent agency is printed below it.
    competent_agency: str = ""
    central_code: str | None = None  # mã hồ sơ, once the central has acknowledged the dossier
    documents: tuple[str, ...] = ()  # documents received (the counter's checklist), in order
    documents_declared: bool = False  # at a kiosk: the citizen's electronic declaration is what was received
    delivery: str | None = None  # "in_person", "post", or None when not known (the payload was purged)
    result_address: str = ""  # where the result is collected in person (``station.result_address``)
    fee_paid_vnd: int = 0  # taken in cash at the counter (the ledger)
    officer: str | None = None  # the receiving officer's display name; None: self-service at a kiosk
    hotline: str = ""

    def __post_init__(self):
        if self.submitted_at.tzinfo is None or self.submitted_at.utcoffset() is None:
            raise ValueError("Receipt.submitted_at must be timezone-aware")
        if self.processing_days < 0:
            raise ValueError("Receipt.processing_days cannot be negative")
        if self.fee_vnd < 0:
            raise ValueError("Receipt.fee_vnd cannot be negative")
        if self.fee_paid_vnd < 0:
            raise ValueError("Receipt.fee_paid_vnd cannot be negative")
        if self.delivery not in (None, "in_person", "post"):
            raise ValueError("Receipt.delivery must be in_person, post or None")
        self.documents = tuple(self.documents)

    @property
    def fee_to_pay_vnd(self) -> int:
        """What is still to be paid (the amount of the payment QR): the fee less what was taken in cash."""
        return max(0, self.fee_vnd - self.fee_paid_vnd)

    @property
    def local_submitted_at(self) -> datetime:
        return self.submitted_at.astimezone(ZoneInfo(self.timezone))

    @property
    def appointment(self) -> date:
        return appointment_date(self.local_submitted_at, self.processing_days, self.calendar)


def appointment_date(submitted_at: datetime | date, processing_days: int,
                     calendar: "workdays.WorkCalendar | None" = None, holidays: Iterable[date] = ()) -> date:
    """The day the result is due: kiosk.core.calendar.result_due with the station's ``calendar`` (public
    holidays, the station's days off and working Saturdays, office hours; the defaults' when None),
    ``holidays`` as extra days off.

    A day alone counts as received in office hours; a datetime is taken in the station's time zone, so
    one received after closing time or on a day off counts from the next working day.
    """
    calendar = (calendar or workdays.DEFAULT).with_days_off(holidays)
    if not isinstance(submitted_at, datetime):
        submitted_at = datetime.combine(submitted_at, time.min, tzinfo=calendar.zone)
    return workdays.result_due(submitted_at, processing_days, calendar).date()


def format_vnd(amount: int) -> str:
    """50000 -> '50.000 đồng' (Vietnamese groups thousands with dots)."""
    return f"{amount:,}".replace(",", ".") + " " + _vi("receipt_currency")


def format_day(day: date) -> str:
    return f"{_vi(f'receipt_weekday_{day.weekday()}')}, {day:%d/%m/%Y}"


def format_received(moment: datetime) -> str:
    """The time a dossier was received as the form says it: '16 giờ 05 phút, ngày 27/11/2026'."""
    return _vi("receipt_at_time").format(hour=f"{moment:%H}", minute=f"{moment:%M}", day=f"{moment:%d/%m/%Y}")


def both(key: str, **values) -> str:
    """A value printed in both languages: "Miễn phí / Free"."""
    return f"{_vi(key).format(**values)} / {_en(key).format(**values)}"


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


@dataclass(frozen=True)
class DrawnLine:
    """One line drawn on a receipt, as the drawing code was given it: what tests and the docs read instead
    of OCR. ``part`` names the item of the receipt it belongs to (:data:`RECEIPT_PARTS`); ``box`` is its
    ink (left, top, right, bottom) on the page, in dots. A QR code is a line of kind ``qr`` whose text is
    what it encodes."""

    part: str
    text: str
    kind: str
    size: int
    box: tuple[int, int, int, int]


@dataclass
class DrawnReceipt:
    """A receipt's picture and the lines drawn on it, top to bottom."""

    image: Image.Image
    lines: list[DrawnLine]

    def parts(self) -> list[str]:
        """The receipt's items in the order they are printed."""
        return list(dict.fromkeys(line.part for line in self.lines))

    def text(self, part: str) -> str:
        """The text of one item, its lines joined by spaces (lines break only between words)."""
        return " ".join(line.text for line in self.lines if line.part == part and line.kind != "qr")

    def codes(self, part: str | None = None) -> list[str]:
        """What the QR codes drawn (of one item) encode."""
        return [line.text for line in self.lines if line.kind == "qr" and part in (None, line.part)]


class _Layout:
    """Stacks lines of text and images down a strip of paper ``width`` dots wide, and keeps a list of the
    lines it drew (``lines``), each under the receipt item being drawn (``part``)."""

    def __init__(self, width: int):
        if width < 200:
            raise ValueError(f"a receipt needs at least 200 dots of width, not {width}")
        self.width = width
        self.margin = max(6, width // 48)
        self.inner = width - 2 * self.margin
        self.base = max(20, min(26, round(width / 22)))
        self.small = round(self.base * 0.8)
        self.blocks: list[Image.Image] = []
        self.lines: list[DrawnLine] = []
        self.part = ""
        self._height = 0

    def _add(self, strip: Image.Image) -> None:
        self.blocks.append(strip)
        self._height += strip.height

    def _record(self, text: str, kind: str, size: int, box) -> None:
        left, top, right, bottom = (round(v) for v in box)
        self.lines.append(DrawnLine(self.part, text, kind, size,
                                    (left, top + self._height, right, bottom + self._height)))

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

    def text(self, text: str, size: int | None = None, kind: str = "regular", align: str = "left",
             indent: int = 0, first: str = "") -> None:
        """``text`` wrapped across the paper. ``first`` (a list number) is drawn before the first line and
        the lines after it start ``indent`` dots in, under the text rather than the number."""
        size = size or self.base
        face = font(kind, size)
        above, below = line_extent(kind, size)
        wrapped = self._wrap(unicodedata.normalize("NFC", text), face, self.inner - indent)
        for number, line in enumerate(wrapped):
            if number == 0 and first:
                line = f"{first}{line}"
            strip = Image.new("L", (self.width, above + below + size // 8), 255)
            length = face.getlength(line)
            start = self.margin + (indent if number and first else 0)
            x = {"left": start, "center": (self.width - length) / 2, "right": self.width - self.margin - length}[align]
            draw = ImageDraw.Draw(strip)
            draw.text((x, above), line, font=face, fill=0, anchor="ls")
            if line:
                self._record(line, kind, size, draw.textbbox((x, above), line, font=face, anchor="ls"))
            self._add(strip)

    def fitted(self, text: str, size: int, kind: str = "bold", least: int = 12) -> None:
        """One centred line as large as ``size`` or as fits (down to ``least``; wrapped below that): the
        national heading and the names that the form prints on one line."""
        text = unicodedata.normalize("NFC", text)
        while size > least and font(kind, size).getlength(text) > self.inner:
            size -= 1
        self.text(text, size, kind, "center")

    def underline(self, text: str, size: int, kind: str = "bold") -> None:
        """A short rule under a centred line, as long as the line (the form's rule under the motto)."""
        length = min(self.inner, round(font(kind, size).getlength(unicodedata.normalize("NFC", text))))
        strip = Image.new("L", (self.width, 6), 255)
        left = (self.width - length) // 2
        ImageDraw.Draw(strip).line((left, 1, left + length, 1), fill=0, width=2)
        self._add(strip)

    def item(self, number: int, text: str, size: int | None = None) -> None:
        """A numbered line of a list, its later lines under its text."""
        size = size or self.small
        first = f"{number}. "
        self.text(text, size, indent=round(font("regular", size).getlength(first)), first=first)

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
            self._record(label, "regular", self.small,
                         draw.textbbox((self.margin, baseline), label, font=label_face, anchor="ls"))
            draw.text((self.width - self.margin, baseline), value, font=value_face, fill=0, anchor="rs")
            self._record(value, "bold", self.base,
                         draw.textbbox((self.width - self.margin, baseline), value, font=value_face, anchor="rs"))
            self._add(strip)
        else:  # the value below its label: a value longer than a line in smaller type
            self.text(label, self.small)
            self.text(value, self.base if value_face.getlength(value) <= self.inner else self.small, "bold")

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
        self._add(strip)

    def qr(self, data: str, side_px: int) -> None:
        """A QR code of ``data``, centred."""
        picture = qr_image(data, side_px)
        left = (self.width - picture.width) // 2
        self._record(data, "qr", picture.width, (left, 0, left + picture.width, picture.height))
        self.image(picture)

    def space(self, height: int | None = None) -> None:
        self._add(Image.new("L", (self.width, height or self.base // 2), 255))

    def rule(self) -> None:
        strip = Image.new("L", (self.width, self.base), 255)
        y = self.base // 2
        draw = ImageDraw.Draw(strip)
        for x in range(self.margin, self.width - self.margin, 8):
            draw.line((x, y, min(x + 4, self.width - self.margin), y), fill=0, width=2)
        self._add(strip)

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


# The items of a receipt, top to bottom, in the order of Mẫu 01 (Thông tư 01/2018/TT-VPCP) as far as a strip
# of paper allows: the form's two header columns are stacked (Quốc hiệu first), and its numbered lines
# follow the title. An item that does not apply is left out (no mã hồ sơ before sync, no payment code
# without a fee to pay). docs/printer.md shows each one.
RECEIPT_PARTS = (
    "national_name", "national_motto", "agency", "competent_agency", "unit", "station",
    "title", "tracking_code", "dossier_code",
    "applicant", "id_number", "procedure", "procedure_code", "documents", "received_at", "result_due",
    "result_at", "fee", "payment_state", "officer", "hotline",
    "tracking_qr", "payment_qr", "bank", "account", "account_holder", "amount", "transfer_content",
    "keep",
)


def _payment_state(receipt: Receipt, payment: PaymentAccount | None) -> str:
    """How the fee was paid, or how it is to be paid."""
    if receipt.fee_paid_vnd and not receipt.fee_to_pay_vnd:
        return both("receipt_paid_cash")
    if receipt.fee_paid_vnd:
        return both("receipt_paid_part", paid=format_vnd(receipt.fee_paid_vnd), left=format_vnd(receipt.fee_to_pay_vnd))
    return both("receipt_unpaid_transfer" if payment is not None else "receipt_unpaid_counter")


def _result_at(receipt: Receipt) -> str:
    if receipt.delivery == "post":
        return both("receipt_result_by_post")
    if receipt.result_address:
        return f"{both('receipt_result_in_person')}: {receipt.result_address}"
    return both("receipt_result_where_applied")


def draw_receipt(receipt: Receipt, width_px: int, payment: PaymentAccount | Mapping | None = None) -> DrawnReceipt:
    """The receipt as a 1-bit image exactly ``width_px`` dots wide (384 for 58 mm paper, 576 for 80 mm),
    with the lines drawn on it.

    ``payment`` is the station's payment account; a VietQR is drawn only when there is an account and a
    fee still to pay (a fee taken in cash at the counter needs none), for the amount still to pay.
    """
    payment = _payment_account(payment)
    page = _Layout(width_px)
    page.space()
    page.part = "national_name"
    page.fitted(_vi("receipt_national_name"), page.base)
    page.part = "national_motto"
    motto_size = min(page.base, max(12, round(page.base * 0.9)))
    page.fitted(_vi("receipt_national_motto"), motto_size)
    page.underline(_vi("receipt_national_motto"), motto_size)
    page.space()
    page.part = "agency"
    page.text(receipt.agency.upper(), page.base, "bold", "center")
    if receipt.competent_agency:
        page.part = "competent_agency"
        page.text(f"{bilingual('receipt_competent_agency')}: {receipt.competent_agency}", page.small, align="center")
    page.part = "unit"
    page.fitted(_vi("receipt_unit"), page.base)
    page.part = "station"
    page.text(receipt.station_name, page.small, align="center")
    page.rule()

    page.part = "title"
    page.text(_vi("receipt_title"), round(page.base * 1.1), "bold", "center")
    page.text(_en("receipt_title"), page.small, align="center")
    page.space()
    page.part = "tracking_code"
    page.text(bilingual("receipt_tracking_code"), page.small, "bold", "center")
    page.big(receipt.tracking_code)
    if receipt.central_code:
        page.part = "dossier_code"
        page.field(bilingual("receipt_dossier_code"), receipt.central_code)
    page.rule()

    page.part = "applicant"
    page.field(bilingual("receipt_applicant"), receipt.applicant_masked or "—")
    page.part = "id_number"
    page.field(bilingual("receipt_id_number"), receipt.id_masked or "—")
    page.part = "procedure"
    page.text(bilingual("receipt_procedure"), page.small)
    page.text(receipt.procedure_name, page.base, "bold")
    if receipt.procedure_code:
        page.part = "procedure_code"
        page.field(bilingual("receipt_procedure_code"), receipt.procedure_code)
    documents = receipt.documents or ((both("receipt_documents_kiosk"),) if receipt.documents_declared else ())
    if documents:
        page.part = "documents"
        page.text(bilingual("receipt_documents"), page.small)
        for number, document in enumerate(documents, 1):
            page.item(number, document)
    page.part = "received_at"
    page.field(bilingual("receipt_submitted"), format_received(receipt.local_submitted_at))
    page.part = "result_due"
    page.field(bilingual("receipt_result_on"), format_day(receipt.appointment))
    if receipt.delivery is not None:
        page.part = "result_at"
        page.field(bilingual("receipt_result_at"), _result_at(receipt))
    page.part = "fee"
    page.field(bilingual("receipt_fee"), format_vnd(receipt.fee_vnd) if receipt.fee_vnd else bilingual("receipt_free"))
    if receipt.fee_vnd:
        page.part = "payment_state"
        page.field(bilingual("receipt_payment_state"), _payment_state(receipt, payment))
    page.part = "officer"
    page.field(bilingual("receipt_officer"), receipt.officer or both("receipt_officer_kiosk"))
    if receipt.hotline:
        page.part = "hotline"
        page.field(bilingual("receipt_hotline"), receipt.hotline)
    page.rule()

    page.part = "tracking_qr"
    page.qr(receipt.tracking_url, round(page.inner * 0.45))
    page.text(_vi("receipt_scan_to_track"), page.small, align="center")
    page.text(_en("receipt_scan_to_track"), page.small, align="center")
    page.text(receipt.tracking_url, round(page.small * 0.9), align="center")

    if payment is not None and receipt.fee_to_pay_vnd > 0:
        message = payment_message(receipt)
        page.rule()
        page.part = "payment_qr"
        page.text(bilingual("receipt_pay_fee"), page.small, "bold", "center")
        page.qr(payment.payload(receipt.fee_to_pay_vnd, message), round(page.inner * 0.55))
        page.text(_vi("receipt_pay_scan"), page.small, align="center")
        page.part = "bank"
        page.field(bilingual("receipt_bank"), payment.bank_name or f"BIN {payment.bank_bin}")
        page.part = "account"
        page.field(bilingual("receipt_account"), payment.account)
        if payment.account_name:
            page.part = "account_holder"
            page.field(bilingual("receipt_account_holder"), payment.account_name)
        page.part = "amount"
        page.field(bilingual("receipt_amount"), format_vnd(receipt.fee_to_pay_vnd))
        page.part = "transfer_content"
        page.field(bilingual("receipt_transfer_content"), message)

    page.rule()
    page.part = "keep"
    page.text(_vi("receipt_keep"), page.small, align="center")
    page.text(_en("receipt_keep"), page.small, align="center")
    page.space()
    return DrawnReceipt(page.render(), page.lines)


def render_receipt_image(receipt: Receipt, width_px: int, payment: PaymentAccount | Mapping | None = None) -> Image.Image:
    """The receipt's picture alone (see :func:`draw_receipt`)."""
    return draw_receipt(receipt, width_px, payment).image


def png_bytes(image: Image.Image) -> bytes:
    """A receipt's picture as the PNG the screen shows."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render_receipt_png(receipt: Receipt, width_px: int = PAPER_WIDTH_PX[80], payment=None) -> bytes:
    """The same receipt as a PNG. The web app shows kiosk.receipts.on_screen_png, which composes it as
    the printer does (the station's paper width and payment account)."""
    return png_bytes(render_receipt_image(receipt, width_px, payment))


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
