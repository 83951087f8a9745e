"""Reading one page's answers from a form: normalise (NFC, spaces), then check by field type.

Each check returns an error as ``(message_key, params)`` or, for a definition's own pattern, the
definition's ``{vi, en}`` message; the page shows it next to the field and in the error summary.
"""
import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from .catalog import DEFAULT_MAX_LENGTH, Procedure

_PHONE = re.compile(r"^0\d{9,10}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_ALLOWED_CONTROL = {"\n", "\t"}


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


def _read_date(field: dict, form) -> Reading:
    name = field["name"]
    parts = {p: normalise(form.get(f"{name}__{p}", ""))[:8] for p in ("day", "month", "year")}
    if not any(parts.values()):
        return Reading(None, parts, None if not field.get("required", True) else ("error_required", {}))
    if not all(parts.values()):
        return Reading(None, parts, ("error_date_incomplete", {}))
    if not all(v.isascii() and v.isdigit() for v in parts.values()):
        return Reading(None, parts, ("error_date_invalid", {}))
    try:
        value = date(int(parts["year"]), int(parts["month"]), int(parts["day"]))
    except ValueError:
        return Reading(None, parts, ("error_date_invalid", {}))
    if not 1900 <= value.year <= 2100:
        return Reading(None, parts, ("error_date_invalid", {}))
    rule, today = field.get("date", "any"), date.today()
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
    raw = form.get(field["name"], "")
    raw = raw if isinstance(raw, str) else ""
    text = normalise(raw, multiline=kind == "textarea")
    shown = text[:2000]
    if _has_bad_characters(text):
        return Reading(None, shown, ("error_bad_characters", {}))
    if not text:
        if not field.get("required", True):
            return Reading(None, "")
        key = "error_required_choice" if kind == "choice" else "error_required"
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
        if not (text.isascii() and text.isdigit() and len(text) == 4):
            return Reading(None, shown, ("error_year", {}))
        year, this_year, rule = int(text), date.today().year, field.get("date", "any")
        low = this_year if rule == "future" else 1900
        high = this_year if rule == "past" else 2100
        if not low <= year <= high:
            return Reading(None, shown, ("error_integer_range", {"min": low, "max": high}))
        return Reading(year, text)
    if kind == "phone":
        digits = re.sub(r"[\s.\-()]", "", text)
        if digits.startswith("+84"):
            digits = "0" + digits[3:]
        if not (digits.isascii() and _PHONE.match(digits)):
            return Reading(None, shown, ("error_phone", {}))
        return Reading(digits, digits)
    if kind == "id_number":
        digits = text.replace(" ", "")
        if not (digits.isascii() and digits.isdigit() and len(digits) == 12):
            return Reading(None, shown, ("error_id_number", {}))
        return Reading(digits, digits)
    limit = field.get("max_length", DEFAULT_MAX_LENGTH.get(kind, 200))
    if len(text) > limit:
        return Reading(None, shown, ("error_too_long", {"n": limit}))
    if len(text) < field.get("min_length", 0):
        return Reading(None, shown, ("error_too_short", {"n": field["min_length"]}))
    if kind == "email" and not _EMAIL.match(text):
        return Reading(None, shown, ("error_email", {}))
    if "pattern" in field and not re.fullmatch(field["pattern"], text):
        return Reading(None, shown, field["pattern_message"])
    return Reading(text, text)


def shown_from_value(field: dict, value) -> object:
    """What the form shows for a value already stored (for coming back to a page)."""
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
