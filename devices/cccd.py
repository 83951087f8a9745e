"""What a Vietnamese citizen ID card (CCCD) holds, as data: EF.COM, DG1 (TD1 MRZ), the Vietnam-specific
DG13, and the QR code printed on the card.

DG13 (tag 6D) is a list of SEQUENCEs, each ``INTEGER field-number`` followed by its value(s) as
UTF8String (or another string type); field 13 holds the father's and the mother's names one after the
other. Parsing goes by field number, so missing fields are simply absent and unknown numbers are kept
aside under ``extra`` without failing.
"""
import unicodedata
from datetime import date

from devices import card_tlv
from devices.card_errors import CardDataError, QrFormatError
from devices.mrz import parse_td1

# File identifiers in the eMRTD application, and the outer tag of each file.
EF_COM, EF_DG1, EF_DG2, EF_DG13, EF_SOD = 0x011E, 0x0101, 0x0102, 0x010D, 0x011D
EF_CARD_ACCESS = 0x011C  # in the MF, read before authentication; lists the PACE variants
FILE_TAGS = {EF_COM: 0x60, EF_DG1: 0x61, EF_DG2: 0x75, EF_DG13: 0x6D, EF_SOD: 0x77}
DG_NUMBERS = {EF_DG1: 1, EF_DG2: 2, EF_DG13: 13}
# EF.COM lists data groups by their tag.
TAG_TO_DG = {0x61: 1, 0x75: 2, 0x63: 3, 0x76: 4, 0x65: 5, 0x66: 6, 0x67: 7, 0x68: 8, 0x69: 9, 0x6A: 10,
             0x6B: 11, 0x6C: 12, 0x6D: 13, 0x6E: 14, 0x6F: 15, 0x70: 16}

# DG13 field numbers -> names used by the procedure catalog (PREFILL_SOURCES without "card.").
DG13_FIELDS = {
    1: "id_number", 2: "full_name", 3: "birth_date", 4: "sex", 5: "nationality", 6: "ethnicity",
    7: "religion", 8: "place_of_origin", 9: "residence", 10: "identifying_marks", 11: "issue_date",
    12: "expiry_date", 14: "spouse_name", 15: "old_id_number",
}
DG13_PARENTS = 13  # father's name, then mother's name
DATE_FIELDS = ("birth_date", "issue_date", "expiry_date")
_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x1A: "ascii", 0x04: "utf-8", 0x1E: "utf-16-be"}


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def vn_date_to_iso(text: str) -> str | None:
    """'dd/mm/yyyy' (or ddmmyyyy, dd-mm-yyyy) -> 'yyyy-mm-dd'; None when it is not a real date."""
    digits = text.strip().replace("/", "").replace("-", "").replace(".", "")
    if len(digits) != 8 or not digits.isascii() or not digits.isdigit():
        return None
    try:
        return date(int(digits[4:]), int(digits[2:4]), int(digits[:2])).isoformat()
    except ValueError:
        return None


def _strings(node: card_tlv.Tlv) -> list[str]:
    """Every string leaf under node, in order."""
    if node.constructed:
        return [s for child in node.children for s in _strings(child)]
    codec = _STRING_TAGS.get(node.tag)
    if codec is None:
        return []
    try:
        return [nfc(node.value.decode(codec))]
    except UnicodeDecodeError:
        return [nfc(node.value.decode(codec, errors="replace"))]


def _field_entries(node: card_tlv.Tlv):
    """Yield (field number, [strings]) for each SEQUENCE that starts with a small INTEGER."""
    for child in node.children:
        if not child.constructed:
            continue
        first = child.children[0] if child.children else None
        if first is not None and first.tag == 0x02 and not first.constructed and 1 <= len(first.value) <= 2:
            number = int.from_bytes(first.value, "big")
            yield number, [s for rest in child.children[1:] for s in _strings(rest)]
        else:
            yield from _field_entries(child)


def parse_dg13(data: bytes) -> dict:
    """DG13 -> {catalog name: value}; dates as ISO strings when they are dates. Unknown fields go to
    ``extra`` keyed by number. Raises CardDataError when the bytes are not a DG13 at all."""
    root = card_tlv.parse_file(data, 0x6D)
    fields: dict = {}
    extra: dict = {}
    for number, values in _field_entries(root):
        if number == DG13_PARENTS:
            if len(values) > 0 and values[0]:
                fields["father_name"] = values[0]
            if len(values) > 1 and values[1]:
                fields["mother_name"] = values[1]
            continue
        text = " ".join(v for v in values if v)
        name = DG13_FIELDS.get(number)
        if name is None:
            if text:
                extra[str(number)] = text
            continue
        if not text:
            continue
        if name in DATE_FIELDS:
            text = vn_date_to_iso(text) or text
        fields[name] = text
    # Public descriptions of the CCCD chip differ on whether the old 9-digit number is field 15 or 16.
    old = extra.get("16", "")
    if "old_id_number" not in fields and len(old) in (9, 12) and old.isascii() and old.isdigit():
        fields["old_id_number"] = extra.pop("16")
    if extra:
        fields["extra"] = extra
    return fields


def build_dg13(values: dict) -> bytes:
    """The inverse of parse_dg13, for synthetic test cards. Dates are given ISO and stored dd/mm/yyyy."""
    def utf8(text: str) -> bytes:
        return card_tlv.encode(0x0C, nfc(text).encode("utf-8"))

    def field(number: int, *texts: str) -> bytes:
        return card_tlv.encode(0x30, card_tlv.encode(0x02, bytes([number])) + b"".join(utf8(t) for t in texts))

    body = b""
    for number in range(1, 17):
        if number == DG13_PARENTS:
            if "father_name" in values or "mother_name" in values:
                body += field(number, values.get("father_name", ""), values.get("mother_name", ""))
            continue
        name = DG13_FIELDS.get(number)
        if name and name in values:
            text = values[name]
            if name in DATE_FIELDS and len(text) == 10 and text[4] == "-":
                text = f"{text[8:10]}/{text[5:7]}/{text[:4]}"
            body += field(number, text)
    for number, text in values.get("extra", {}).items():
        body += field(int(number), text)
    return card_tlv.encode(0x6D, body)


def parse_dg1(data: bytes) -> dict:
    """DG1 (tag 61, MRZ in 5F1F) -> parsed TD1 fields."""
    root = card_tlv.parse_file(data, 0x61)
    for child in root.children:
        if child.tag == 0x5F1F:
            try:
                text = child.value.decode("ascii")
            except UnicodeDecodeError as exc:
                raise CardDataError("MRZ is not ASCII") from exc
            return parse_td1(text)
    raise CardDataError("DG1 without MRZ")


def build_dg1(mrz: str) -> bytes:
    return card_tlv.encode(0x61, card_tlv.encode(0x5F1F, mrz.encode("ascii")))


def parse_com(data: bytes) -> dict:
    """EF.COM -> {"lds_version", "unicode_version", "data_groups": [numbers]}."""
    root = card_tlv.parse_file(data, 0x60)
    out = {"lds_version": None, "unicode_version": None, "data_groups": []}
    for child in root.children:
        if child.tag == 0x5F01:
            out["lds_version"] = child.value.decode("ascii", errors="replace")
        elif child.tag == 0x5F36:
            out["unicode_version"] = child.value.decode("ascii", errors="replace")
        elif child.tag == 0x5C:
            out["data_groups"] = sorted(TAG_TO_DG[t] for t in child.value if t in TAG_TO_DG)
    return out


def build_com(data_group_tags: list[int]) -> bytes:
    return card_tlv.encode(0x60, card_tlv.encode(0x5F01, b"0107") + card_tlv.encode(0x5F36, b"040000")
                           + card_tlv.encode(0x5C, bytes(data_group_tags)))


# --- the QR code printed on the card --------------------------------------------------------------------

def _expiry_by_age(birth: date, issue: date | None) -> str | None:
    """The CCCD is renewed at 25, 40 and 60; a card issued in the 2 years before such an age runs to the
    next one, and one issued from 58 on does not expire (Luật Căn cước công dân 2014, Điều 21)."""
    if issue is None:
        return None
    age_at_issue = issue.year - birth.year - ((issue.month, issue.day) < (birth.month, birth.day))
    for age in (25, 40, 60):
        if age_at_issue < age - 2:
            try:
                return birth.replace(year=birth.year + age).isoformat()
            except ValueError:  # born on 29 February
                return date(birth.year + age, 3, 1).isoformat()
    return None


def parse_front_qr(text: str) -> dict:
    """The QR printed on a CCCD: ``number|old number|name|ddmmyyyy birth|sex|address|ddmmyyyy issue``.

    Returns number, old_number (None when empty), full_name, birth_date and issue_date (ISO), sex,
    address, and expiry_date_estimated (from the renewal ages; the chip key needs the real expiry, which
    the QR does not hold, so the kiosk should ask the citizen to confirm it). Raises QrFormatError.
    """
    if not isinstance(text, str):
        raise QrFormatError("QR text is not a string")
    parts = [nfc(p) for p in text.strip().split("|")]
    if len(parts) < 7:
        raise QrFormatError(f"{len(parts)} fields, expected 7")
    number, old, name, birth, sex, address, issue = parts[:7]
    if len(number) != 12 or not number.isascii() or not number.isdigit():
        raise QrFormatError("first field is not a 12-digit number")
    if old and not (old.isascii() and old.isdigit()):
        raise QrFormatError("old number is not digits")
    birth_iso = vn_date_to_iso(birth) if len(birth) == 8 else None
    if birth_iso is None:
        raise QrFormatError("birth date is not ddmmyyyy")
    issue_iso = vn_date_to_iso(issue) if len(issue) == 8 else None
    if issue and issue_iso is None:
        raise QrFormatError("issue date is not ddmmyyyy")
    if not name:
        raise QrFormatError("no name")
    return {
        "number": number,
        "old_number": old or None,
        "full_name": name,
        "birth_date": birth_iso,
        "sex": sex,
        "address": address,
        "issue_date": issue_iso,
        "expiry_date_estimated": _expiry_by_age(date.fromisoformat(birth_iso),
                                                date.fromisoformat(issue_iso) if issue_iso else None),
    }
