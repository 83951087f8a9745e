"""The procedure catalog: one TOML file per procedure, checked when the station starts.

A definition that does not fit the schema stops start-up with a message naming the file and the field,
e.g. ``dang-ky-khai-sinh.toml: pages[2].fields[0].type: 'dat' is not one of [...]``.
"""
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import jsonschema

PROCEDURES_DIR = Path(__file__).parent.parent / "procedures"

CATEGORIES = {
    "ho-tich": {"vi": "Hộ tịch", "en": "Civil status"},
    "cu-tru": {"vi": "Cư trú", "en": "Residence"},
    "tu-phap": {"vi": "Tư pháp", "en": "Justice"},
    "giao-thong": {"vi": "Giao thông", "en": "Transport"},
}

# What a listed paper is to the station (``kind`` of a ``[[documents]]`` entry, default "scan"): pages the
# citizen or the clerk captures and the dossier carries; the declaration form the wizard's answers already
# are ("form": nothing to capture); an original shown to the officer and handed back ("show": the ID card,
# whose chip the station reads).
DOCUMENT_KINDS = ("scan", "form", "show")

FIELD_TYPES = ("text", "textarea", "date", "year", "integer", "choice", "phone", "email", "id_number", "name",
               "time")
# A place in Viet Nam in the units since 1 July 2025 (kiosk/core/address_answer.py): chosen, not typed, so
# it takes no length, pattern or options; filled from the card only by its residence (converted).
FIELD_TYPES += ("address",)
ADDRESS_KEYS_REFUSED = ("min_length", "max_length", "pattern", "pattern_message", "options", "min", "max", "date")

# What the chip of a CCCD gives (DG13); a field names one of these to be filled from the card.
PREFILL_SOURCES = (
    "card.id_number", "card.full_name", "card.birth_date", "card.sex", "card.nationality",
    "card.ethnicity", "card.religion", "card.place_of_origin", "card.residence", "card.identifying_marks",
    "card.issue_date", "card.expiry_date", "card.father_name", "card.mother_name", "card.spouse_name",
    "card.old_id_number",
)
# The longest text the card path accepts in each of those (devices.cccd: names 200, other text 500): a
# field filled from the card must take at least that, or a verified value would be prefilled then refused.
CARD_TEXT_MAX = {"card.full_name": 200, "card.father_name": 200, "card.mother_name": 200,
                 "card.spouse_name": 200, "card.nationality": 500, "card.ethnicity": 500, "card.religion": 500,
                 "card.place_of_origin": 500, "card.residence": 500, "card.identifying_marks": 500}
# A procedure that asks the citizen how to receive the result names that question "delivery" (its option
# "buu-chinh": by post) and the address "delivery_address". At a counter the staff's finish page asks it
# instead (agent/views.py): the wizard skips those pages for staff, and the counter's answer is the one
# stored, so delivery is asked once and kept once.
DELIVERY_FIELDS = ("delivery", "delivery_address")
# Text fields without a max_length of their own (kiosk.core.answers applies the same defaults).
DEFAULT_MAX_LENGTH = {"text": 200, "textarea": 1000, "email": 254, "name": 200}
# Since 1 July 2025 there is no district level (NQ 202/2025/QH15: province, then commune/ward/special zone):
# a definition may not ask for one. What counts as asking: a field's name, its label or its page's title
# naming a "huyện"/"quận"/"district" (the words on their own, not "huyền" or "quán"). A hint is free text
# and may mention an old district ("Quận 1 cũ nay là phường Sài Gòn"): hints are not checked.
_DISTRICT_WORDS = re.compile(r"\b(huyện|quận|districts?)\b", re.IGNORECASE)
_DISTRICT_NAME_PARTS = {"huyen", "district", "districts"}

_TEXT = {
    "type": "object",
    "required": ["vi", "en"],
    "properties": {"vi": {"type": "string", "minLength": 1}, "en": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}
_SLUG = {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*$"}
_WHEN = {
    "type": "object",
    "required": ["field", "equals"],
    "properties": {"field": _SLUG, "equals": {"type": "string"}},
    "additionalProperties": False,
}
_VND = {"type": "integer", "minimum": 0, "maximum": 100_000_000}
# A fee ground's id: a slug, but not the two words the counter's form uses for "none" and "other".
_GROUND_ID = {"type": "string", "pattern": r"^[a-z][a-z0-9_-]*$", "not": {"enum": ["none", "other"]}}

# The fee of a procedure as rules over the answers (kiosk/core/fees.py computes it; docs/procedures.md).
FEE_SCHEMA = {
    "type": "object",
    "required": ["amount_vnd"],
    "additionalProperties": False,
    "properties": {
        "amount_vnd": _VND,               # the base amount, in person (0 = free)
        "online_vnd": _VND,               # the base amount of an online submission, where the law sets one
        "legal_basis": {"type": "string", "minLength": 1},
        "note": _TEXT,
        "copies": {                       # per-copy pricing: the number of copies is an integer answer
            "type": "object",
            "required": ["field", "included", "extra_vnd"],
            "additionalProperties": False,
            "properties": {"field": _SLUG, "included": {"type": "integer", "minimum": 1}, "extra_vnd": _VND},
        },
        "reductions": {                   # a lower base amount when an answer says so
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "when", "amount_vnd", "reason"],
                "additionalProperties": False,
                "properties": {"id": _GROUND_ID, "when": _WHEN, "amount_vnd": _VND, "reason": _TEXT},
            },
        },
        "exemptions": {                   # nothing to pay when an answer says so
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "when", "reason"],
                "additionalProperties": False,
                "properties": {"id": _GROUND_ID, "when": _WHEN, "reason": _TEXT},
            },
        },
    },
}

SCHEMA = {
    "type": "object",
    "required": ["code", "version", "category", "name", "summary", "agency", "fee", "processing_days",
                 "documents", "pages"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "string", "pattern": r"^\d\.\d{6}$"},
        "version": {"type": "string", "minLength": 1},
        "category": {"enum": list(CATEGORIES)},
        "name": _TEXT,
        "summary": _TEXT,
        "agency": _TEXT,
        "legal_basis": {"type": "string"},
        "fee": FEE_SCHEMA,
        "processing_days": {"type": "integer", "minimum": 0},
        "keywords": {"type": "array", "items": {"type": "string"}},
        "documents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "vi", "en", "required"],
                "properties": {"id": _SLUG, "vi": {"type": "string"}, "en": {"type": "string"},
                               "required": {"type": "boolean"}, "kind": {"enum": list(DOCUMENT_KINDS)}},
                "additionalProperties": False,
            },
        },
        "pages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "fields"],
                "additionalProperties": False,
                "properties": {
                    "id": _SLUG,
                    "title": _TEXT,
                    "when": _WHEN,
                    "fields": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "type", "label"],
                            "additionalProperties": False,
                            "properties": {
                                "name": _SLUG,
                                "type": {"enum": list(FIELD_TYPES)},
                                "label": _TEXT,
                                "hint": _TEXT,
                                "required": {"type": "boolean"},
                                "min_length": {"type": "integer", "minimum": 0},
                                "max_length": {"type": "integer", "minimum": 1},
                                "pattern": {"type": "string"},
                                "pattern_message": _TEXT,
                                "min": {"type": "integer"},
                                "max": {"type": "integer"},
                                "date": {"enum": ["past", "future", "any"]},
                                "prefill": {"enum": list(PREFILL_SOURCES)},
                                "options": {
                                    "type": "array",
                                    "minItems": 2,
                                    "items": {
                                        "type": "object",
                                        "required": ["value", "vi", "en"],
                                        "properties": {"value": _SLUG, "vi": {"type": "string"},
                                                       "en": {"type": "string"}},
                                        "additionalProperties": False,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


class CatalogError(ValueError):
    """A procedure definition that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Procedure:
    slug: str
    code: str
    version: str
    category: str
    name: dict
    summary: dict
    agency: dict
    processing_days: int
    documents: list
    pages: list
    keywords: tuple = ()
    legal_basis: str = ""
    # The fee rules (FEE_SCHEMA, with ``reductions`` and ``exemptions`` always present); what is due for
    # given answers is kiosk.core.fees.fee_for's to say, never read from here.
    fee: dict | None = None
    # The catalog release this definition came in (sync/catalog_release.py), recorded with every draft and
    # dossier made from it; None for the catalog of paths.procedures (the one shipped, before any release).
    release: int | None = None

    def __post_init__(self):
        if self.fee is None:  # a definition built in code with no fee (loaded ones always have one)
            object.__setattr__(self, "fee", _fee_rules({"amount_vnd": 0}))

    def page(self, page_id: str) -> dict | None:
        return next((p for p in self.pages if p["id"] == page_id), None)

    def fields(self) -> list[dict]:
        return [field for page in self.pages for field in page["fields"]]

    def search_text(self) -> str:
        return " ".join([self.name["vi"], self.name["en"], self.code, *self.keywords]).casefold()


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _fee_rules(fee: dict) -> dict:
    return {**fee, "reductions": list(fee.get("reductions", ())), "exemptions": list(fee.get("exemptions", ()))}


def _check_fee(fee: dict, fields: dict) -> None:
    """The fee's rules name fields the procedure asks, with values they can have."""
    copies = fee.get("copies")
    if copies is not None:
        field = fields.get(copies["field"])
        if field is None or field["type"] != "integer":
            raise CatalogError(f"fee.copies.field: no integer field is named '{copies['field']}'")
    seen = set()
    for kind in ("reductions", "exemptions"):
        for index, rule in enumerate(fee.get(kind, ())):
            where = f"fee.{kind}[{index}]"
            if rule["id"] in seen:
                raise CatalogError(f"{where}.id: '{rule['id']}' is used by another reduction or exemption")
            seen.add(rule["id"])
            _check_condition(where, rule["when"], fields, "field")
            if kind == "reductions" and rule["amount_vnd"] >= fee["amount_vnd"]:
                raise CatalogError(f"{where}.amount_vnd: {rule['amount_vnd']} does not reduce the fee "
                                   f"({fee['amount_vnd']})")


def _check_condition(where: str, when: dict, fields: dict, which: str) -> None:
    """A ``when = {field, equals}`` condition names one of ``fields`` and, for a choice, one of its options."""
    target = fields.get(when["field"])
    if target is None:
        raise CatalogError(f"{where}.when.field: no {which} is named '{when['field']}'")
    values = [o["value"] for o in target.get("options", [])]
    if values and when["equals"] not in values:
        raise CatalogError(f"{where}.when.equals: '{when['equals']}' is not an option of '{target['name']}'")


def _check_no_district(pages: list) -> None:
    """No question asks for a district: that level of government ended on 1 July 2025."""
    for p_index, page in enumerate(pages):
        for lang, text in page.get("title", {}).items():
            if _DISTRICT_WORDS.search(text):
                raise CatalogError(f"pages[{p_index}].title.{lang}: asks for a district ('{text}'); since "
                                   "1 July 2025 there are only provinces and communes, wards or special zones")
        for f_index, field in enumerate(page["fields"]):
            fwhere = f"pages[{p_index}].fields[{f_index}]"
            if _DISTRICT_NAME_PARTS & set(re.split(r"[_-]", field["name"])):
                raise CatalogError(f"{fwhere}.name: '{field['name']}' asks for a district; since 1 July 2025 "
                                   "there are only provinces and communes, wards or special zones")
            for lang, text in field["label"].items():
                if _DISTRICT_WORDS.search(text):
                    raise CatalogError(f"{fwhere}.label.{lang}: asks for a district ('{text}'); since 1 July 2025 "
                                       "there are only provinces and communes, wards or special zones")


def _check_semantics(data: dict) -> None:
    """What the schema cannot say: unique names, working patterns, conditions that point backwards."""
    seen_documents = set()
    for index, document in enumerate(data["documents"]):
        if document["id"] in seen_documents:
            raise CatalogError(f"documents[{index}].id: '{document['id']}' is used by another document")
        seen_documents.add(document["id"])
    seen_pages, seen_fields = set(), {}
    for p_index, page in enumerate(data["pages"]):
        where = f"pages[{p_index}]"
        if page["id"] in seen_pages:
            raise CatalogError(f"{where}.id: '{page['id']}' is used by another page")
        seen_pages.add(page["id"])
        if "when" in page:
            _check_condition(where, page["when"], seen_fields, "earlier field")
        for f_index, field in enumerate(page["fields"]):
            fwhere = f"{where}.fields[{f_index}]"
            if field["name"] in seen_fields:
                raise CatalogError(f"{fwhere}.name: '{field['name']}' is used by another field")
            seen_fields[field["name"]] = field
            if field["type"] == "choice" and "options" not in field:
                raise CatalogError(f"{fwhere}.options: a choice field needs options")
            if field["type"] == "address":
                refused = next((key for key in ADDRESS_KEYS_REFUSED if key in field), None)
                if refused:
                    raise CatalogError(f"{fwhere}.{refused}: an address field does not take '{refused}'")
                if field.get("prefill", "card.residence") != "card.residence":
                    raise CatalogError(f"{fwhere}.prefill: an address field is filled only from card.residence")
            needed = CARD_TEXT_MAX.get(field.get("prefill", ""))
            limit = field.get("max_length", DEFAULT_MAX_LENGTH.get(field["type"], 200))
            if needed and field["type"] in ("text", "textarea", "name") and limit < needed:
                raise CatalogError(f"{fwhere}.max_length: {limit} is shorter than what the card can give "
                                   f"({field['prefill']}, up to {needed} characters)")
            if "pattern" in field:
                try:
                    re.compile(field["pattern"])
                except re.error as exc:
                    raise CatalogError(f"{fwhere}.pattern: not a valid regular expression ({exc})") from None
                if "pattern_message" not in field:
                    raise CatalogError(f"{fwhere}.pattern_message: a pattern needs a message saying what to type")
    _check_no_district(data["pages"])
    _check_fee(data["fee"], seen_fields)


def load_procedure(path: Path) -> Procedure:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path.name}: not valid TOML: {exc}") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    if error is not None:
        raise CatalogError(f"{path.name}: {_where(error.absolute_path)}: {error.message}")
    try:
        _check_semantics(data)
    except CatalogError as exc:
        raise CatalogError(f"{path.name}: {exc}") from None
    data["keywords"] = tuple(data.get("keywords", ()))
    data["documents"] = [{"kind": "scan", **document} for document in data["documents"]]
    data["fee"] = _fee_rules(data["fee"])
    return Procedure(slug=path.stem, **data)


def load_catalog(folder: str | Path | None = None) -> dict[str, Procedure]:
    """All procedures in ``folder`` (default: the shipped catalog) by slug (the file name), in the order
    of their Vietnamese names."""
    folder = Path(folder or PROCEDURES_DIR)
    procedures = [load_procedure(path) for path in sorted(Path(folder).glob("*.toml"))]
    if not procedures:
        raise CatalogError(f"{folder}: no procedure definitions (*.toml) found")
    codes = {}
    for proc in procedures:
        if proc.code in codes:
            raise CatalogError(f"{proc.slug}.toml: code: '{proc.code}' is also used by {codes[proc.code]}.toml")
        codes[proc.code] = proc.slug
    return {p.slug: p for p in sorted(procedures, key=lambda p: p.name["vi"])}
