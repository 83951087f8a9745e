"""The ``address`` answer: a place in Viet Nam in the units of now, read from the address field's parts.

The form of an address field ``NAME`` sends ``NAME__province`` (a province's code, from a list of 34),
``NAME__q`` (words to find the commune by, without tone marks if the citizen likes), ``NAME__commune``
(a commune's code, chosen among those found), ``NAME__street`` (house number and street, or village),
``NAME__old`` (an address in the old units to convert, typed), ``NAME__from_old`` (the old wording the
picks were converted from, carried along) and ``NAME__offered`` (the codes of the communes offered, so an
error does not take the choice away). Two buttons re-show the page instead of answering it:
``address_search=NAME`` (find communes) and ``address_convert=NAME`` (convert the old address); the
question view (kiosk/citizen.py) sends them here, so the page works without JavaScript.

The value stored::

    {"province_code": "79", "province": "Thành phố Hồ Chí Minh", "commune_code": "26743",
     "commune": "Phường Bến Thành", "street": "Số 12 Lê Lợi", "units_version": "vietnam-provinces …",
     "text": "Số 12 Lê Lợi, Phường Bến Thành, Thành phố Hồ Chí Minh",
     "old": "Số 12 Lê Lợi, Phường Bến Thành, Quận 1, TP. Hồ Chí Minh"}   # only when converted

Functions here return ``(value, shown, error)``; kiosk.core.answers wraps them in its Reading.
"""
import unicodedata

from . import address_convert, units

STREET_MAX = 200
OLD_MAX = address_convert.MAX_TEXT
SEARCH_LIMIT = 30
PARTS = ("province", "q", "commune", "street", "old", "from_old", "offered")


def _clean(text) -> str:
    text = text if isinstance(text, str) else ""
    return " ".join(unicodedata.normalize("NFC", text).split())


def _bad(text: str) -> bool:
    return any(unicodedata.category(ch)[0] == "C" for ch in text)


def _parts(field: dict, form) -> dict:
    name = field["name"]
    return {part: _clean(form.get(f"{name}__{part}", ""))[:OLD_MAX + 100] for part in PARTS}


def _state(parts: dict, choices=(), note=None, open_old: bool = False) -> dict:
    """What the address form shows: the parts as typed, the provinces, the communes to choose among,
    and a note ((message key, params) or None) under the picker."""
    chosen = units.commune(parts["commune"])
    if not choices:  # the communes offered before (a search, a split ward), kept when the page is shown again
        offered = (units.commune(code) for code in parts["offered"].split()[:SEARCH_LIMIT])
        choices = [c for c in offered if c is not None and c.province_code == parts["province"]]
    listed = list(choices)
    if chosen is not None and chosen.province_code == parts["province"] and chosen not in listed:
        listed.insert(0, chosen)
    return {**parts, "provinces": units.provinces(), "choices": listed, "note": note,
            "open_old": open_old or bool(parts["old"])}


def empty_state() -> dict:
    return _state(dict.fromkeys(PARTS, ""))


def search(field: dict, form) -> dict:
    """The page again, with the communes of the chosen province that the search words name."""
    parts = _parts(field, form)
    province = units.province(parts["province"])
    if province is None:
        return _state(parts, note=("address_choose_province_first", {}))
    if not parts["q"]:
        return _state(parts, note=("address_type_to_search", {}))
    found = units.search_communes(province.code, parts["q"], limit=SEARCH_LIMIT)
    if not found:
        return _state(parts, note=("address_no_match", {"query": parts["q"], "province": province.name}))
    return _state(parts, found, note=("address_matches", {"n": len(found), "province": province.name}))


def _converted_state(old: str, parts: dict) -> dict:
    """The parts filled from converting ``old`` (the card's residence, or typed), with a note saying what
    came of it; the citizen confirms or changes them, and the old wording goes along in ``from_old``."""
    result = address_convert.convert(old)
    parts = {**parts, "from_old": result.old, "old": "", "q": ""}
    if result.province is not None:
        parts["province"] = result.province.code
    if result.street:
        parts["street"] = result.street
    if result.status == address_convert.CERTAIN:
        parts["commune"] = result.commune.code
        key = "address_converted" if result.converted else "address_read"
        return _state(parts, note=(key, {"old": result.old}))
    parts["commune"] = ""
    if result.status == address_convert.AMBIGUOUS:
        return _state(parts, result.communes, note=("address_ambiguous", {"old": result.old}))
    if result.province is not None:
        return _state(parts, note=("address_province_only", {"old": result.old, "province": result.province.name}))
    return _state({**parts, "from_old": ""}, note=("address_not_converted", {"old": result.old}), open_old=True)


def convert(field: dict, form) -> dict:
    """The page again, the picks filled from the old address typed in ``NAME__old``."""
    parts = _parts(field, form)
    if not parts["old"]:
        return _state(parts, note=("address_old_empty", {}), open_old=True)
    if _bad(parts["old"]) or len(parts["old"]) > OLD_MAX:
        return _state(parts, note=("address_not_converted", {"old": parts["old"][:80]}), open_old=True)
    return _converted_state(parts["old"], parts)


def shown_from_value(value) -> dict:
    """The form for a stored value: an address answer, or the old wording of an address (the card's
    residence, or a text answer from before this answer type), converted."""
    if isinstance(value, dict):
        parts = {"province": value.get("province_code", ""), "commune": value.get("commune_code", ""),
                 "street": value.get("street", ""), "from_old": value.get("old", ""), "q": "", "old": "",
                 "offered": ""}
        return _state({k: v if isinstance(v, str) else "" for k, v in parts.items()})
    if isinstance(value, str) and value.strip():
        return _converted_state(_clean(value)[:OLD_MAX], dict.fromkeys(PARTS, ""))
    return empty_state()


def read(field: dict, form) -> tuple:
    """(value, shown, error) of the address field in ``form``."""
    parts = _parts(field, form)
    shown = _state(parts)
    if not (parts["province"] or parts["commune"] or parts["street"]):
        if not field.get("required", True):
            return None, shown, None
        return None, shown, ("error_address_province", {})
    if any(_bad(parts[p]) for p in ("street", "from_old")):
        return None, shown, ("error_bad_characters", {})
    province = units.province(parts["province"])
    if province is None:
        return None, shown, ("error_address_province", {})
    commune = units.commune(parts["commune"])
    if commune is None:
        return None, shown, ("error_address_commune", {"province": province.name})
    if commune.province_code != province.code:
        return None, _state({**parts, "commune": ""}), ("error_address_commune_province", {"province": province.name})
    if not parts["street"]:
        return None, shown, ("error_address_street", {})
    if len(parts["street"]) > STREET_MAX:
        return None, shown, ("error_too_long", {"n": STREET_MAX})
    value = {"province_code": province.code, "province": province.name, "commune_code": commune.code,
             "commune": commune.name, "street": parts["street"], "units_version": units.data_version(),
             "text": f"{parts['street']}, {commune.name}, {province.name}"}
    if parts["from_old"]:
        value["old"] = parts["from_old"][:OLD_MAX]
    return value, shown, None


def display(value) -> str:
    if isinstance(value, dict):
        return str(value.get("text", ""))
    return "" if value is None else str(value)


def pressed(fields: list, form) -> tuple | None:
    """(field name, what its form shows now) when the form was sent by an address field's "Tìm" or
    "convert" button rather than by the page's own: the page is shown again, nothing is answered."""
    for field in fields:
        if field["type"] != "address":
            continue
        if form.get("address_search") == field["name"]:
            return field["name"], search(field, form)
        if form.get("address_convert") == field["name"]:
            return field["name"], convert(field, form)
    return None
