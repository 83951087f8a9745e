"""Machine readable zone (ICAO 9303 parts 3 and 5): check digits, the BAC key string, and the TD1 MRZ of DG1."""
from datetime import date

from devices.card_errors import CardDataError

_WEIGHTS = (7, 3, 1)
_MRZ_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ<")


def _char_value(ch: str) -> int:
    if ch.isdigit():
        return int(ch)
    if "A" <= ch <= "Z":
        return ord(ch) - ord("A") + 10
    if ch == "<":
        return 0
    raise CardDataError(f"character {ch!r} is not allowed in an MRZ")


def check_digit(field: str) -> str:
    """The ICAO 9303 check digit of an MRZ field: weights 7-3-1, letters A=10..Z=35, filler '<' = 0."""
    return str(sum(_char_value(ch) * _WEIGHTS[i % 3] for i, ch in enumerate(field)) % 10)


def yymmdd(d: date) -> str:
    return d.strftime("%y%m%d")


def bac_document_number(cccd_number: str) -> str:
    """The document number on the chip of a CCCD: the last 9 digits of the 12-digit number."""
    digits = cccd_number.strip()
    if len(digits) != 12 or not digits.isascii() or not digits.isdigit():
        raise CardDataError("a CCCD number has 12 digits", code="id_number_digits")
    return digits[-9:]


def mrz_key_string(document_number: str, birth: date, expiry: date | None) -> str:
    """The MRZ information the BAC keys come from: number + check, birth + check, expiry + check.

    expiry None is a card with no expiry ("Không thời hạn"): its MRZ field is taken to be six fillers
    with the ordinary check digit ("0"), as ICAO 9303 fills an unused field. Unconfirmed on real cards."""
    number = document_number.upper()
    if len(number) < 9:
        number = number.ljust(9, "<")
    b, e = yymmdd(birth), (yymmdd(expiry) if expiry is not None else "<<<<<<")
    return number + check_digit(number) + b + check_digit(b) + e + check_digit(e)


def _mrz_date(text: str, *, future: bool) -> str | None:
    """YYMMDD -> ISO date. Birth dates are in the past, expiry dates usually after 2000."""
    if len(text) != 6 or not text.isdigit():
        return None
    yy, mm, dd = int(text[:2]), int(text[2:4]), int(text[4:])
    this_year = date.today().year % 100
    century = 2000 if (future or yy <= this_year) else 1900
    try:
        return date(century + yy, mm, dd).isoformat()
    except ValueError:
        return None


def parse_td1(mrz: str) -> dict:
    """Parse a TD1 MRZ (3 lines of 30 characters, given as one 90-character string or with newlines).

    Returns the fields and whether each check digit holds; raises CardDataError when it is not a TD1 MRZ.
    """
    text = mrz.replace("\n", "").replace("\r", "")
    if len(text) != 90 or not set(text) <= _MRZ_CHARS:
        raise CardDataError("not a TD1 MRZ")
    l1, l2, l3 = text[:30], text[30:60], text[60:]
    number = l1[5:14]
    birth, expiry = l2[0:6], l2[8:14]
    composite = l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29]
    checks = {
        "document_number": check_digit(number) == l1[14],
        "birth_date": check_digit(birth) == l2[6],
        "expiry_date": check_digit(expiry) == l2[14],
        "composite": check_digit(composite) == l2[29],
    }
    surname, _, given = l3.partition("<<")
    return {
        "document_code": l1[0:2].rstrip("<"),
        "issuing_state": l1[2:5].rstrip("<"),
        "document_number": number.rstrip("<"),
        "optional_data_1": l1[15:30].rstrip("<"),
        "birth_date": _mrz_date(birth, future=False),
        "sex": {"M": "M", "F": "F"}.get(l2[7], "X"),
        "expiry_date": _mrz_date(expiry, future=True),
        "nationality": l2[15:18].rstrip("<"),
        "optional_data_2": l2[18:29].rstrip("<"),
        "name": " ".join(p for p in (surname.replace("<", " ").strip(), given.replace("<", " ").strip()) if p),
        "checks": checks,
    }


def build_td1(*, document_number: str, optional_1: str, birth: date, sex: str, expiry: date | None,
              nationality: str, optional_2: str, surname: str, given: str, issuing_state: str = "VNM",
              document_code: str = "ID") -> str:
    """A TD1 MRZ with correct check digits (used to make synthetic test cards)."""
    number = document_number.ljust(9, "<")[:9]
    l1 = (document_code.ljust(2, "<") + issuing_state + number + check_digit(number)
          + optional_1.ljust(15, "<"))[:30]
    b, e = yymmdd(birth), (yymmdd(expiry) if expiry is not None else "<<<<<<")
    l2 = b + check_digit(b) + sex + e + check_digit(e) + nationality + optional_2.ljust(11, "<")[:11]
    composite = l1[5:30] + l2[0:7] + l2[8:15] + l2[18:29]
    l2 += check_digit(composite)
    l3 = (surname.replace(" ", "<") + "<<" + given.replace(" ", "<")).ljust(30, "<")[:30]
    return l1 + l2 + l3
