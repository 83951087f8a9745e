"""What a Vietnamese citizen ID card (CCCD) holds, as data: EF.COM, DG1 (TD1 MRZ), the Vietnam-specific
DG13, and the QR code printed on the card.

DG13 (tag 6D) on issued cards wraps ``INTEGER version, OID 1.0.10646.1.0.8, SET OF fields`` in a
SEQUENCE (as public readers decoded it from real cards); older synthetic cards put the fields directly
under 6D. Each field is a SEQUENCE ``INTEGER field-number`` followed by its value as UTF8String or
PrintableString (or another string type); field 13 nests the father's and the mother's names, field 14
the spouse's.
``parse_dg13`` reads either layout strictly by field number into a ``Dg13``: missing fields are absent,
unknown numbers are kept raw, and a value without its field's shape is listed as unreadable, never
guessed.
"""
import dataclasses
import re
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
DG13_PARENTS = 13  # nested SEQUENCE { father's name, mother's name }
DG13_SPOUSE = 14  # nested SEQUENCE { spouse's name }
DATE_FIELDS = ("birth_date", "issue_date", "expiry_date")
NAME_FIELDS = ("full_name", "father_name", "mother_name", "spouse_name")
# What a card may carry empty (then the field is simply absent); any other field must have its shape.
MAY_BE_EMPTY = ("nationality", "ethnicity", "religion", "place_of_origin", "residence", "identifying_marks",
                "old_id_number", "father_name", "mother_name", "spouse_name")
MAX_NAME, MAX_TEXT = 200, 500
NO_EXPIRY_TEXT = "Không thời hạn"
DG13_VERSION = 1
DG13_OID = bytes.fromhex("28D316010008")  # 1.0.10646.1.0.8, the UTF-8 marker of the wrapped layout
_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x1A: "ascii", 0x04: "utf-8", 0x1E: "utf-16-be"}
_NULL, _INTEGER, _OID, _SEQUENCE, _SET = 0x05, 0x02, 0x06, 0x30, 0x31


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


@dataclasses.dataclass
class Dg13:
    """What DG13 gave.

    ``fields``: catalog name -> NFC text, dates ISO; only values that have their field's shape.
    ``no_expiry``: field 12 reads "Không thời hạn" (then there is no ``expiry_date``).
    ``unknown``: field number -> the DER bytes of its value element(s), for numbers we do not know
    (16 included). ``unreadable``: catalog names of known fields present on the card whose value did
    not fit (the kiosk asks for them instead). ``layout``: "wrapped" (as issued) or "flat".
    The repr leaves out the personal data, so a Dg13 in a log or a traceback shows none.
    """

    fields: dict = dataclasses.field(default_factory=dict, repr=False)
    no_expiry: bool = False
    unknown: dict[int, bytes] = dataclasses.field(default_factory=dict, repr=False)
    unreadable: list[str] = dataclasses.field(default_factory=list)
    layout: str = "wrapped"


def _elements(data: bytes) -> list[tuple[card_tlv.Tlv, bytes]]:
    """The TLVs one after another in data, each with its bytes exactly as encoded."""
    out, i = [], 0
    while i < len(data):
        node, end = card_tlv.parse_one(data, i)
        out.append((node, data[i:end]))
        i = end
    return out


def _field_number(node: card_tlv.Tlv) -> int | None:
    """The number of a field SEQUENCE (``30 L 02 01 n ...``), or None when node is not one."""
    if node.tag != _SEQUENCE or not node.constructed or not node.children:
        return None
    first = node.children[0]
    if first.tag != _INTEGER or first.constructed or not 1 <= len(first.value) <= 4:
        return None
    return int.from_bytes(first.value, "big", signed=True)


def _field_entries(root: card_tlv.Tlv) -> tuple[str, list[card_tlv.Tlv]]:
    """The layout and the field SEQUENCEs of a DG13.

    Wrapped (as issued): ``6D { 30 { INTEGER version, OID, SET OF fields } }``; the wrapper is told by
    its OID or its SET, and another version or OID is tolerated, but without the SET there is nothing
    to read. Flat (older synthetic cards): the field SEQUENCEs directly under 6D."""
    for child in root.children:
        if child.tag == _SEQUENCE and child.constructed and any(
                c.tag == _OID or (c.tag == _SET and c.constructed) for c in child.children):
            for part in child.children:
                if part.tag == _SET and part.constructed:
                    return "wrapped", part.children
            raise CardDataError("DG13 header without its SET of fields")
    entries = [c for c in root.children if _field_number(c) is not None]
    if root.children and not entries:
        raise CardDataError("DG13 holds no numbered fields")
    return "flat", entries


def _text(node: card_tlv.Tlv) -> str | None:
    """A string element as NFC text ('' for an empty one or NULL); None when it is not readable text:
    another type, bytes invalid in its encoding, or control or replacement characters."""
    if node.constructed:
        return None
    if node.tag == _NULL and not node.value:
        return ""
    codec = _STRING_TAGS.get(node.tag)
    if codec is None:
        return None
    try:
        text = nfc(node.value.decode(codec))
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(ch) == "Cc" or ch == "\ufffd" for ch in text):
        return None
    return text


def _card_date(text: str) -> str | None:
    """'dd/MM/yyyy' (or with - or . between, or ddMMyyyy) -> ISO; None unless it is a real date."""
    match = re.fullmatch(r"(\d\d)([/.-]?)(\d\d)\2(\d{4})", text, re.ASCII)
    if match is None:
        return None
    try:
        return date(int(match[4]), int(match[3]), int(match[1])).isoformat()
    except ValueError:
        return None


def says_no_expiry(text: str) -> bool:
    folded = " ".join(unicodedata.normalize("NFC", text).casefold().split())
    return folded in ("không thời hạn", "khong thoi han")


def _digits(text: str, lengths: tuple[int, ...]) -> str | None:
    return text if len(text) in lengths and text.isascii() and text.isdigit() else None


def _shaped(name: str, text: str) -> str | None:
    """The value of a known field in its catalog form, or None when text does not have its shape.
    (Field 12's no-expiry text is handled by the caller.)"""
    if name == "id_number":
        return _digits(text, (12,))
    if name == "old_id_number":
        return _digits(text, (9, 12))
    if name in DATE_FIELDS:
        return _card_date(text)
    if name == "sex":
        # Case tolerated, and "Nu" for cards that write PrintableString (which has no "ữ").
        return {"nam": "Nam", "nữ": "Nữ", "nu": "Nữ"}.get(text.casefold())
    if name in NAME_FIELDS:
        return text if len(text) <= MAX_NAME and not any(ch.isdigit() for ch in text) else None
    return text if len(text) <= MAX_TEXT else None


def _slots(values: list[card_tlv.Tlv]) -> list[card_tlv.Tlv]:
    """The values of field 13 or 14: inside their nested SEQUENCE, or directly in the field."""
    if len(values) == 1 and values[0].tag == _SEQUENCE and values[0].constructed:
        return values[0].children
    return values


def parse_dg13(data: bytes) -> Dg13:
    """DG13 -> Dg13, strictly by field number, in the wrapped layout real cards use or the flat one.

    Fields may be absent, reordered or unknown. A known field whose value does not have its shape (a
    12-digit ID number, a real dd/MM/yyyy date, "Nam"/"Nữ", a name without digits...), or that appears
    twice, is listed in ``unreadable`` and never put into ``fields``. Field 16 is unconfirmed (a
    16-character hex string on some cards) and stays raw in ``unknown``: reading it as the old ID number
    was a guess, and a wrong guess would put another field's data in front of the citizen.
    Raises CardDataError when the bytes are not a DG13 at all, and no other exception for any input."""
    root = card_tlv.parse_file(data, 0x6D)
    layout, entries = _field_entries(root)
    out = Dg13(layout=layout)
    by_number: dict[int, list[list[tuple[card_tlv.Tlv, bytes]]]] = {}
    for entry in entries:
        number = _field_number(entry)
        if number is not None:
            by_number.setdefault(number, []).append(_elements(entry.value)[1:])
    for number in sorted(by_number):
        occurrences = by_number[number]
        if number == DG13_PARENTS:
            names = ("father_name", "mother_name")
        elif number in DG13_FIELDS:
            names = (DG13_FIELDS[number],)
        else:
            # Duplicates stay concatenated: DER elements remain separable.
            out.unknown[number] = b"".join(raw for values in occurrences for _, raw in values)
            continue
        if len(occurrences) > 1:
            out.unreadable.extend(names)
            continue
        values = [node for node, _ in occurrences[0]]
        slots = _slots(values) if number in (DG13_PARENTS, DG13_SPOUSE) else values
        if len(slots) > len(names):
            out.unreadable.extend(names)
            continue
        for name, node in zip(names, slots + [None] * (len(names) - len(slots))):
            text = "" if node is None else _text(node)
            if text == "" and name in MAY_BE_EMPTY:
                continue
            value = _shaped(name, text) if text else None
            if value is None and name == "expiry_date" and text is not None and says_no_expiry(text):
                out.no_expiry = True
            elif value is None:
                out.unreadable.append(name)
            else:
                out.fields[name] = value
    return out


def _der_integer(n: int) -> bytes:
    return card_tlv.encode(_INTEGER, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


def build_dg13(values: dict, layout: str = "wrapped", string_type: int = 0x0C) -> bytes:
    """A DG13 for synthetic cards, in the wrapped layout of issued cards or the flat one.

    values uses the catalog names of parse_dg13; dates given ISO (or as dates) are stored dd/mm/yyyy, any
    other text as given (so a test card can carry what a parser does not expect). ``no_expiry`` True
    writes "Không thời hạn" in field 12; ``unknown`` {number: raw DER bytes} adds fields as they are.
    Fields go in number order; string_type is the tag of every string (0x0C UTF8String, 0x13
    PrintableString...). Raises ValueError for an unknown layout or string type, or text the string
    type cannot hold."""
    if layout not in ("wrapped", "flat"):
        raise ValueError(f"DG13 layout {layout!r}: 'wrapped' or 'flat'")
    codec = _STRING_TAGS.get(string_type)
    if codec is None:
        raise ValueError(f"DG13 string type {string_type:#x} is not one of {sorted(_STRING_TAGS)}")

    def text(value) -> bytes:
        return card_tlv.encode(string_type, str(value).encode(codec))

    def card_date(value) -> str:
        if isinstance(value, date):
            return value.strftime("%d/%m/%Y")
        try:
            return date.fromisoformat(value).strftime("%d/%m/%Y") if len(value) == 10 else value
        except ValueError:
            return value

    def entry(number: int, body: bytes) -> bytes:
        return card_tlv.encode(_SEQUENCE, _der_integer(number) + body)

    entries = []
    for number in range(1, 16):
        if number == DG13_PARENTS:
            if "father_name" in values or "mother_name" in values:
                parents = text(values.get("father_name", "")) + text(values.get("mother_name", ""))
                entries.append(entry(number, card_tlv.encode(_SEQUENCE, parents)))
            continue
        name = DG13_FIELDS[number]
        value = NO_EXPIRY_TEXT if name == "expiry_date" and values.get("no_expiry") else values.get(name)
        if value is None:
            continue
        if number == DG13_SPOUSE:
            entries.append(entry(number, card_tlv.encode(_SEQUENCE, text(value))))
        else:
            entries.append(entry(number, text(card_date(value) if name in DATE_FIELDS else value)))
    for number, raw in sorted(values.get("unknown", {}).items()):
        entries.append(entry(int(number), bytes(raw)))
    body = b"".join(entries)
    if layout == "wrapped":
        body = card_tlv.encode(_SEQUENCE, _der_integer(DG13_VERSION) + card_tlv.encode(_OID, DG13_OID)
                               + card_tlv.encode(_SET, body))
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
