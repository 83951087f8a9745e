"""An address written in the units before 1 July 2025 (ward or commune, district, province: as printed on
cards issued before mid-2025, or typed) turned into the units of now (kiosk/core/units.py).

The old address is read by the maintained package ``vietnamadminunits`` (its parser of the 63-province
addresses and its table of which old ward became which new commune). Its own ``convert_address`` is not
called: for an old ward split between several new communes it asks a web geocoding service where the
street is, and an address is personal data that never leaves the station. Here a split ward is
``ambiguous`` instead, with the new communes it went to, for the citizen to choose.

Nothing here logs: the text is a person's address.
"""
import functools
import re
import unicodedata
from dataclasses import dataclass

from . import units

CERTAIN, AMBIGUOUS, FAILED = "certain", "ambiguous", "failed"
_DISTRICT_WORD = re.compile(r"\b(quan|huyen|thi xa)\b")
_UNIT_WORDS = {"phuong", "xa", "thi tran", "thi xa", "quan", "huyen", "tinh", "thanh pho", "tp", "p", "q", "x",
               "dac khu"}
MAX_TEXT = 500  # longer text is no address (the card's residence is at most 500 characters)


@dataclass(frozen=True)
class Conversion:
    status: str                        # CERTAIN, AMBIGUOUS or FAILED
    old: str                           # the wording converted, normalised (NFC, spaces)
    province: units.Province | None    # the new province, when known (also when the commune is not)
    communes: tuple = ()               # CERTAIN: the one new commune; AMBIGUOUS: the candidates, likeliest first
    street: str = ""                   # house number and street (or village), as written
    converted: bool = True             # False when the text was already in the new units

    @property
    def commune(self) -> units.Commune | None:
        return self.communes[0] if self.status == CERTAIN else None


def _key(text: str, accented: bool = False) -> str:
    """The converter's keys: lower case, letters and digits only, tone marks kept or not."""
    text = unicodedata.normalize("NFC", text).casefold()
    if not accented:
        text = units.fold(text)
    return re.sub(r"[\W_]+", "", text)


@functools.lru_cache(maxsize=1)
def _province_keys() -> dict:
    """The converter's key of each new province ("thanhphohochiminh", "tinhcaobang") -> Province."""
    return {_key(p.name): p for p in units.provinces()}


@functools.lru_cache(maxsize=1)
def _commune_keys() -> dict:
    """(province code, the converter's key of a new commune) -> Commune. Where two communes of a province
    fold alike ("Xã Tân Thành", "Xã Tân Thạnh") the converter keys them with their tone marks."""
    keys: dict = {}
    for p in units.provinces():
        for c in units.communes_of(p.code):
            keys.setdefault((p.code, _key(c.name)), []).append(c)
            keys[(p.code, _key(c.name, accented=True))] = [c]
    return {k: v[0] for k, v in keys.items() if len(v) == 1}


def _converter():
    from vietnamadminunits import ParseMode, parse_address
    from vietnamadminunits.converter import converter_2025
    return parse_address, ParseMode, converter_2025


def _street(found, old: str) -> str:
    """The street part the parser found, in the citizen's own letters (the parser title-cases it)."""
    if not isinstance(found, str) or not found.strip():
        return ""
    found = " ".join(found.split())
    at = old.casefold().find(found.casefold())
    return old[at:at + len(found)] if at >= 0 and old[at:at + len(found)].casefold() == found.casefold() else found


def convert(text: str) -> Conversion:
    """The new units of an address ``text`` in the old ones (or already in the new ones). Never raises
    on any text: what cannot be read is FAILED (with the province when that much is known)."""
    old = " ".join(unicodedata.normalize("NFC", text if isinstance(text, str) else "").split())
    if not old or len(old) > MAX_TEXT or not any(ch.isalpha() for ch in old):
        return Conversion(FAILED, old, None)
    try:
        return _convert(old)
    except Exception:  # a fault in the package's parser must not stop the page: the citizen picks instead
        return Conversion(FAILED, old, None)


def _convert(old: str) -> Conversion:
    parse_address, mode, data = _converter()
    legacy = parse_address(old, mode=mode.LEGACY, keep_street=True, level=3)
    new_province_key = next((k for k, olds in data.DICT_PROVINCE.items()
                             if legacy.province_key and legacy.province_key in olds), None)
    province = _province_keys().get(new_province_key)
    if legacy.ward_key and province is not None:
        key = f"{legacy.province_key}_{legacy.district_key}_{legacy.ward_key}"
        whole = next((k for k, olds in data.DICT_PROVINCE_WARD_NO_DIVIDED.get(new_province_key, {}).items()
                      if key in olds), None)
        street = _street(legacy.street, old)
        if whole is not None:
            commune = _commune_keys().get((province.code, whole))
            if commune is not None:
                return Conversion(CERTAIN, old, province, (commune,), street)
        split = data.DICT_PROVINCE_WARD_DIVIDED.get(new_province_key, {}).get(key, [])
        ordered = sorted(split, key=lambda w: not w.get("isDefaultNewWard"))
        candidates = tuple(dict.fromkeys(c for w in ordered
                                         if (c := _commune_keys().get((province.code, w["newWardKey"])))))
        if len(candidates) == 1:
            return Conversion(CERTAIN, old, province, candidates, street)
        if candidates:
            return Conversion(AMBIGUOUS, old, province, candidates, street)
    # No old ward read: perhaps the address is already in the new units ("Phường Bến Thành, TP. HCM"),
    # unless it names an old district ("Huyện Củ Chi" is no address of "Xã Củ Chi")...
    current = parse_address(old, mode=mode.FROM_2025, keep_street=True, level=2)
    now_province = _province_keys().get(current.province_key)
    names_district = legacy.district_key and _DISTRICT_WORD.search(units.fold(old))
    # ... or an old province merged into another ("Tỉnh Hải Dương" is no address of "Phường Hải Dương").
    names_old_province = legacy.province_key and legacy.province_key != new_province_key
    if current.ward_key and now_province is not None and not names_district and not names_old_province:
        commune = _commune_keys().get((now_province.code, current.ward_key))
        if commune is not None:
            return Conversion(CERTAIN, old, now_province, (commune,), _street(current.street, old),
                              converted=False)
    return Conversion(FAILED, old, province or now_province, street=_street_guess(old))


def _street_guess(old: str) -> str:
    """The first part of an address the parser could not read ("Số 1 Đường X, Phường Y, ..."), when it
    names no unit: the citizen sees it in the street box and corrects it; a guess never decides a unit."""
    first, *rest = old.split(",")
    words = units.fold(first).split()
    if not rest or not words or words[0] in _UNIT_WORDS or " ".join(words[:2]) in _UNIT_WORDS:
        return ""
    return first.strip()
