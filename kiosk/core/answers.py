"""Reading one page's answers from a form: normalise (NFC, spaces), then check by field type.

Each check returns an error as ``(message_key, params)`` or, for a definition's own pattern, the
definition's ``{vi, en}`` message; the page shows it next to the field and in the error summary.
"""
import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from . import address_answer
from .catalog import DEFAULT_MAX_LENGTH, Procedure

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_ALLOWED_CONTROL = {"\n", "\t"}

# --- the published rules the answers are checked by (docs/answers.md gives the sources) ---------------

# The first three digits of a personal identification number: the province of birth registration
# (annex of Thông tư 07/2016/TT-BCA, kept by Thông tư 59/2021/TT-BCA). The 2025 merger of provinces
# (NQ 202/2025/QH15) renumbers nothing already issued, so all 63 codes stay valid.
ID_PROVINCES = {
    "001": "Hà Nội", "002": "Hà Giang", "004": "Cao Bằng", "006": "Bắc Kạn", "008": "Tuyên Quang",
    "010": "Lào Cai", "011": "Điện Biên", "012": "Lai Châu", "014": "Sơn La", "015": "Yên Bái",
    "017": "Hòa Bình", "019": "Thái Nguyên", "020": "Lạng Sơn", "022": "Quảng Ninh", "024": "Bắc Giang",
    "025": "Phú Thọ", "026": "Vĩnh Phúc", "027": "Bắc Ninh", "030": "Hải Dương", "031": "Hải Phòng",
    "033": "Hưng Yên", "034": "Thái Bình", "035": "Hà Nam", "036": "Nam Định", "037": "Ninh Bình",
    "038": "Thanh Hóa", "040": "Nghệ An", "042": "Hà Tĩnh", "044": "Quảng Bình", "045": "Quảng Trị",
    "046": "Thừa Thiên Huế", "048": "Đà Nẵng", "049": "Quảng Nam", "051": "Quảng Ngãi", "052": "Bình Định",
    "054": "Phú Yên", "056": "Khánh Hòa", "058": "Ninh Thuận", "060": "Bình Thuận", "062": "Kon Tum",
    "064": "Gia Lai", "066": "Đắk Lắk", "067": "Đắk Nông", "068": "Lâm Đồng", "070": "Bình Phước",
    "072": "Tây Ninh", "074": "Bình Dương", "075": "Đồng Nai", "077": "Bà Rịa - Vũng Tàu",
    "079": "Hồ Chí Minh", "080": "Long An", "082": "Tiền Giang", "083": "Bến Tre", "084": "Trà Vinh",
    "086": "Vĩnh Long", "087": "Đồng Tháp", "089": "An Giang", "091": "Kiên Giang", "092": "Cần Thơ",
    "093": "Hậu Giang", "094": "Sóc Trăng", "095": "Bạc Liêu", "096": "Cà Mau",
}

# Mobile prefixes in use after the 2018 move to 10 digits (QĐ 798/QĐ-BTTTT and the carriers' lists):
# Viettel 032-039, 086, 096-098; VinaPhone 081-085, 088, 091, 094; MobiFone 070, 076-079, 089, 090, 093;
# Vietnamobile 052, 056, 058, 092; Gmobile 059, 099; Itelecom 087; Reddi 055.
MOBILE_PREFIXES = frozenset({
    "032", "033", "034", "035", "036", "037", "038", "039", "086", "096", "097", "098",
    "081", "082", "083", "084", "085", "088", "091", "094",
    "070", "076", "077", "078", "079", "089", "090", "093",
    "052", "056", "058", "092", "059", "099", "087", "055",
})
# The 2018 conversion table: an old 11-digit mobile number keeps its last 7 digits behind a new prefix.
OLD_MOBILE_PREFIXES = {
    "0162": "032", "0163": "033", "0164": "034", "0165": "035", "0166": "036", "0167": "037", "0168": "038",
    "0169": "039", "0120": "070", "0121": "079", "0122": "077", "0126": "076", "0128": "078",
    "0123": "083", "0124": "084", "0125": "085", "0127": "081", "0129": "082",
    "0186": "056", "0188": "058", "0199": "059",
}
# Landline area codes after the 2017 renumbering (Thông tư 22/2014/TT-BTTTT): "02" and the rest of the
# code, 11 digits in all (024 and 028 with 8 subscriber digits, the others with 7).
LANDLINE_AREAS = frozenset({"024", "028"} | {f"02{n}" for n in (
    "03 04 05 06 07 08 09 10 11 12 13 14 15 16 18 19 20 21 22 25 26 27 28 29 32 33 34 35 36 37 38 39 "
    "51 52 54 55 56 57 58 59 60 61 62 63 69 70 71 72 73 74 75 76 77 90 91 92 93 94 96 97 99").split()})
# Apostrophes and hyphens that names carry ("H' Hen Niê", "Ksor H'Bia", "Lê-Nguyễn"); typed as they are.
_NAME_MARKS = frozenset("'’ʼ-‐")
_TIME = re.compile(r"(\d{1,2})\s*(?:(?:h|g|giờ|:|\.)\s*(?:(\d{1,2})\s*(?:p|ph|phút)?)?)")


@dataclass
class Reading:
    value: object = None          # the clean value to store (None when empty or wrong)
    shown: object = ""            # what to put back in the form when the page is shown again
    error: object = None          # (message_key, params) or a {vi, en} dict


def normalise(text: str, multiline: bool = False) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    if multiline:
        return "\n".join(" ".join(line.split()) for line in text.strip().split("\n"))
    return " ".join(text.split())


def _has_bad_characters(text: str) -> bool:
    # Control, format, private-use, surrogate and unassigned code points have no place in a dossier.
    return any(unicodedata.category(ch)[0] == "C" and ch not in _ALLOWED_CONTROL for ch in text)


def id_birth(number: str) -> tuple[int, str]:
    """The year of birth and the sex ("nam"/"nu") a personal identification number says: its 4th digit
    is the century and sex (0/1 male/female born 1900-1999, 2/3 2000-2099, 4/5 2100-2199, ...), its 5th
    and 6th the last two digits of the year (Thông tư 59/2021/TT-BCA, art. 7)."""
    digit = int(number[3])
    return 1900 + 100 * (digit // 2) + int(number[4:6]), ("nam", "nu")[digit % 2]


def _read_id_number(text: str) -> Reading:
    digits = re.sub(r"[\s.\-]", "", text)
    if not (digits.isascii() and digits.isdigit() and len(digits) == 12):
        return Reading(None, text, ("error_id_number", {}))
    if digits[:3] not in ID_PROVINCES:
        return Reading(None, text, ("error_id_province", {"code": digits[:3]}))
    year, _ = id_birth(digits)
    if year > date.today().year:  # 2/3 with a year not yet come, or a century digit 4 to 9
        return Reading(None, text, ("error_id_century", {"digit": digits[3], "year": year}))
    return Reading(digits, digits)


def _read_phone(text: str) -> Reading:
    digits = re.sub(r"[\s.\-()]", "", text)
    for country in ("+84", "0084"):
        if digits.startswith(country):
            digits = "0" + digits[len(country):].removeprefix("0")
    if not (digits.isascii() and digits.isdigit()):
        return Reading(None, text, ("error_phone", {}))
    if len(digits) == 11 and digits[:4] in OLD_MOBILE_PREFIXES:
        new = OLD_MOBILE_PREFIXES[digits[:4]] + digits[4:]
        return Reading(None, text, ("error_phone_old", {"old": digits, "new": f"{new[:4]} {new[4:7]} {new[7:]}"}))
    mobile = len(digits) == 10 and digits[:3] in MOBILE_PREFIXES
    landline = len(digits) == 11 and (digits[:3] in ("024", "028") or digits[:4] in LANDLINE_AREAS)
    if not (mobile or landline) or set(digits[3:]) == {"0"}:
        return Reading(None, text, ("error_phone", {}))
    return Reading(digits, digits)


def _read_name(text: str) -> Reading:
    """Letters of any script (with their combining marks), spaces, apostrophes and hyphens; the case and
    the apostrophe as typed ("H' Hen Niê", "Ksor H'Bia", "Nay Y Blang")."""
    if any(ch.isdigit() for ch in text):
        return Reading(None, text, ("error_name_digits", {}))
    wrong = next((ch for ch in text if not (ch.isalpha() or unicodedata.category(ch)[0] == "M"
                                             or ch == " " or ch in _NAME_MARKS)), None)
    if wrong is not None:
        return Reading(None, text, ("error_name_symbols", {"char": wrong}))
    if not text[0].isalpha():
        return Reading(None, text, ("error_name_start", {}))
    return Reading(text, text)


def _read_time(text: str) -> Reading:
    """ "9h30", "9 giờ 30", "9g30", "09:30", "21h", "9 giờ" -> "09:30" (24-hour clock)."""
    match = _TIME.fullmatch(text.casefold())
    if match is None:
        return Reading(None, text, ("error_time", {}))
    hour, minute = int(match[1]), int(match[2] or 0)
    if hour > 23 or minute > 59:
        return Reading(None, text, ("error_time_range", {}))
    value = f"{hour:02d}:{minute:02d}"
    return Reading(value, value)


def _four_digit_example(short: str, rule: str = "any") -> int:
    """The year a two-digit "50" most likely means, to show in the message (1950, or 2010 for "10")."""
    recent = 2000 + int(short)
    return recent if recent <= date.today().year or rule == "future" else 1900 + int(short)


def _read_date(field: dict, form) -> Reading:
    name = field["name"]
    parts = {p: normalise(form.get(f"{name}__{p}", ""))[:8] for p in ("day", "month", "year")}
    if not any(parts.values()):
        return Reading(None, parts, None if not field.get("required", True) else ("error_required", {}))
    if not all(parts.values()):
        return Reading(None, parts, ("error_date_incomplete", {}))
    if not all(v.isascii() and v.isdigit() for v in parts.values()):
        return Reading(None, parts, ("error_date_invalid", {}))
    rule, today = field.get("date", "any"), date.today()
    year, month, day = int(parts["year"]), int(parts["month"]), int(parts["day"])
    if len(parts["year"]) <= 2:
        return Reading(None, parts, ("error_year_short", {"example": _four_digit_example(parts["year"], rule)}))
    if not 1 <= month <= 12:
        return Reading(None, parts, ("error_date_month", {}))
    if not 1900 <= year <= 2100:
        return Reading(None, parts, ("error_date_year_range", {}))
    try:
        value = date(year, month, day)
    except ValueError:
        last = (date(year + month // 12, month % 12 + 1, 1) - date(year, month, 1)).days
        return Reading(None, parts, ("error_date_day", {"month": month, "year": year, "days": last}))
    if rule == "past" and value > today:
        return Reading(None, parts, ("error_date_past", {}))
    if rule == "future" and value < today:
        return Reading(None, parts, ("error_date_future", {}))
    return Reading(value.isoformat(), parts)


def read_field(field: dict, form) -> Reading:
    """The answer to ``field`` in ``form`` (a MultiDict or dict of strings)."""
    kind = field["type"]
    if kind == "date":
        return _read_date(field, form)
    if kind == "address":
        return Reading(*address_answer.read(field, form))
    raw = form.get(field["name"], "")
    raw = raw if isinstance(raw, str) else ""
    text = normalise(raw, multiline=kind == "textarea")
    shown = text[:2000]
    if _has_bad_characters(text):
        return Reading(None, shown, ("error_bad_characters", {}))
    if not text:
        if not field.get("required", True):
            return Reading(None, "")
        key = "error_select" if kind == "choice" else "error_required"
        return Reading(None, "", (key, {}))
    if kind == "choice":
        if text not in {o["value"] for o in field["options"]}:
            return Reading(None, "", ("error_choice", {}))
        return Reading(text, text)
    if kind == "integer":
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            return Reading(None, shown, ("error_integer", {}))
        number = int(text)
        low, high = field.get("min", 0), field.get("max", 999_999_999)
        if not low <= number <= high:
            return Reading(None, shown, ("error_integer_range", {"min": low, "max": high}))
        return Reading(number, str(number))
    if kind == "year":
        rule = field.get("date", "any")
        if text.isascii() and text.isdigit() and len(text) <= 2:
            return Reading(None, shown, ("error_year_short", {"example": _four_digit_example(text, rule)}))
        if not (text.isascii() and text.isdigit() and len(text) == 4):
            return Reading(None, shown, ("error_year", {}))
        year, this_year = int(text), date.today().year
        low = this_year if rule == "future" else 1900
        high = this_year if rule == "past" else 2100
        if not low <= year <= high:
            return Reading(None, shown, ("error_integer_range", {"min": low, "max": high}))
        return Reading(year, text)
    if kind == "phone":
        return _read_phone(shown)
    if kind == "id_number":
        return _read_id_number(shown)
    if kind == "time":
        return _read_time(shown)
    limit = field.get("max_length", DEFAULT_MAX_LENGTH.get(kind, 200))
    if len(text) > limit:
        return Reading(None, shown, ("error_too_long", {"n": limit}))
    if len(text) < field.get("min_length", 0):
        return Reading(None, shown, ("error_too_short", {"n": field["min_length"]}))
    if kind == "name":
        return _read_name(text)
    if kind == "email" and not _EMAIL.match(text):
        return Reading(None, shown, ("error_email", {}))
    if "pattern" in field and not re.fullmatch(field["pattern"], text):
        return Reading(None, shown, field["pattern_message"])
    return Reading(text, text)


# --- across fields: the ID number against the date of birth and the sex ---------------------------------

_SEXES = {"nam": {"vi": "nam", "en": "male"}, "nu": {"vi": "nữ", "en": "female"}}
_CARD_PERSON = ("card.id_number", "card.birth_date", "card.sex")


def _persons(field: dict) -> set[str]:
    """Whose ID number, birth date or sex a field asks: the fields prefilled from the card are one person,
    and so are the fields named ``<who>_id_number``, ``<who>_birth_date``, ``<who>_birth_year``,
    ``<who>_sex`` (``applicant_…``, ``deceased_…``, ``mother_…``)."""
    persons = {"card"} if field.get("prefill") in _CARD_PERSON else set()
    for suffix in ("_id_number", "_birth_date", "_birth_year", "_sex"):
        if field["name"].endswith(suffix):
            persons.add(field["name"].removesuffix(suffix))
    return persons


def _sex_of(field: dict, value) -> str | None:
    option = next((o for o in field.get("options", ()) if o["value"] == value), None)
    label = option["vi"].casefold() if option else ""
    return "nam" if label == "nam" else "nu" if label in ("nữ", "nu") else None


def cross_check(proc: Procedure, answers: dict, page: dict) -> dict:
    """Errors between answers, each on a field of ``page`` (the page just read; its answers are already in
    ``answers``): an ID number whose century/sex digit and year digits disagree with the same person's
    date or year of birth or sex. The error goes on the ID number when it is on this page, else on the
    other answer; its params name the other question, so the citizen knows which two to compare."""
    on_page = {f["name"] for f in page["fields"]}
    given = active_answers(proc, answers)
    fields = [f for p in active_pages(proc, answers) for f in p["fields"]]
    errors = {}
    for id_field in (f for f in fields if f["type"] == "id_number" and given.get(f["name"])):
        number = given[id_field["name"]]
        id_year, id_sex = id_birth(number)
        for other in fields:
            value = given.get(other["name"])
            if other is id_field or value is None or not _persons(id_field) & _persons(other):
                continue
            if other["type"] in ("date", "year"):
                year = int(str(value)[:4])
                if year == id_year:
                    continue
                params = {"id_year": id_year, "digit": number[3], "yy": number[4:6], "year": year}
                kinds = ("error_id_year_mismatch", "error_birth_year_mismatch")
            elif other["type"] == "choice" and (other["name"].endswith("_sex") or other.get("prefill") == "card.sex"):
                sex = _sex_of(other, value)
                if sex is None or sex == id_sex:
                    continue
                params = {"digit": number[3], "id_sex": _SEXES[id_sex], "sex": _SEXES[sex]}
                kinds = ("error_id_sex_mismatch", "error_sex_mismatch")
            else:
                continue
            if id_field["name"] in on_page:
                errors.setdefault(id_field["name"], (kinds[0], {**params, "other": other["label"]}))
            elif other["name"] in on_page:
                errors.setdefault(other["name"], (kinds[1], {**params, "other": id_field["label"]}))
    return errors


def shown_from_value(field: dict, value) -> object:
    """What the form shows for a value already stored (for coming back to a page)."""
    if field["type"] == "address":  # a stored address, or an old one's wording (the card's) converted
        return address_answer.shown_from_value(value)
    if value is None:
        return {"day": "", "month": "", "year": ""} if field["type"] == "date" else ""
    if field["type"] == "date":
        year, month, day = value.split("-")
        return {"day": str(int(day)), "month": str(int(month)), "year": year}
    return str(value)


def display(field: dict, value, lang: str) -> str:
    """An answer as a person reads it on the check page."""
    if value is None or value == "":
        return ""
    if field["type"] == "address":
        return address_answer.display(value)
    if field["type"] == "date":
        year, month, day = value.split("-")
        return f"{day}/{month}/{year}"
    if field["type"] == "choice":
        option = next((o for o in field["options"] if o["value"] == value), None)
        return option[lang] if option else str(value)
    return str(value)


# --- which pages apply ---------------------------------------------------------------------------------

def is_active(page: dict, answers: dict) -> bool:
    when = page.get("when")
    return when is None or answers.get(when["field"]) == when["equals"]


def active_pages(proc: Procedure, answers: dict) -> list[dict]:
    return [p for p in proc.pages if is_active(p, answers)]


def is_answered(page: dict, answers: dict) -> bool:
    return all(f["name"] in answers for f in page["fields"])


def first_unanswered(proc: Procedure, answers: dict) -> dict | None:
    return next((p for p in active_pages(proc, answers) if not is_answered(p, answers)), None)


def active_answers(proc: Procedure, answers: dict) -> dict:
    """Only the answers of pages that apply: a page switched off by a later change leaves nothing behind."""
    return {f["name"]: answers.get(f["name"]) for p in active_pages(proc, answers) for f in p["fields"]}
