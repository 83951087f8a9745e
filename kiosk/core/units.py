"""The administrative units of Viet Nam since 1 July 2025: 34 provinces and their communes, wards and
special zones (two levels, no district), as the maintained package ``vietnam-provinces`` publishes them.

Codes are the official ones as strings (province two digits, commune five: "79", "26743"), so they read
the same in a dossier, a URL and a form. The data is loaded once, on first use (``_data``); a dossier
records ``data_version()`` beside every address, so an answer can be read against the list it was
chosen from after the list changes. Search folds case and tone marks ("ben thanh" finds "Phường Bến
Thành"; "đ" is "d"), the way a citizen types on a keyboard without Vietnamese input.
"""
import functools
import re
import unicodedata
from dataclasses import dataclass

# Words a person writes for a kind of unit, folded, and what they stand for in the units' names.
_ABBREVIATIONS = {"tp": "thanh pho", "tp.": "thanh pho", "p.": "phuong", "x.": "xa", "t.": "tinh"}
_NOT_A_LETTER = re.compile(r"[^\w.]+")
# Names people use for a province that are not in its official name (folded).
_PROVINCE_ALIASES = {"79": ("hcm", "thanh pho hcm", "tphcm", "sai gon"), "01": ("hn",)}


@dataclass(frozen=True)
class Province:
    code: str          # "79"
    name: str          # "Thành phố Hồ Chí Minh", "Tỉnh Cao Bằng": as written in an address
    short: str         # "Hồ Chí Minh", "Cao Bằng": as in a list to choose from
    kind: str          # "tỉnh" or "thành phố trung ương"


@dataclass(frozen=True)
class Commune:
    code: str          # "26743"
    name: str          # "Phường Bến Thành"
    short: str         # "Bến Thành"
    kind: str          # "xã", "phường" or "đặc khu"
    province_code: str


def fold(text: str) -> str:
    """Lower case without tone marks or punctuation, words one space apart: "TP. Hồ Chí Minh" and
    "tp ho chi minh" fold alike; "Đ" folds to "d"."""
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFC", text).casefold().replace("đ", "d"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(_NOT_A_LETTER.sub(" ", text).replace(".", " ").split())


def _query_words(query: str) -> list[str]:
    """The folded words of a query, abbreviations ("TP.", "P.") spelled out."""
    text = unicodedata.normalize("NFD", unicodedata.normalize("NFC", query).casefold().replace("đ", "d"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    words = []
    for word in _NOT_A_LETTER.sub(" ", text).split():
        words.extend(_ABBREVIATIONS.get(word, word.replace(".", " ")).split())
    return words


@dataclass(frozen=True)
class _Units:
    version: str
    provinces: tuple            # Province, in the order of their short names
    communes: dict              # province code -> tuple of Commune, in the order of their short names
    by_code: dict               # code -> Province or Commune


def _sort_key(unit) -> tuple:
    return (fold(unit.short), unit.short, unit.code)


@functools.lru_cache(maxsize=1)
def _data() -> _Units:
    import vietnam_provinces as vp

    provinces = []
    for p in vp.Province.iter_all():
        kind = p.division_type.value
        name = p.name if p.name.startswith("Thành phố") else f"Tỉnh {p.name}"
        short = p.name.removeprefix("Thành phố ")
        provinces.append(Province(f"{int(p.code):02d}", name, short, kind))
    communes: dict[str, list] = {p.code: [] for p in provinces}
    for w in vp.Ward.iter_all():
        kind = w.division_type.value
        short = w.name[len(kind):].strip() if fold(w.name).startswith(fold(kind)) else w.name
        communes[f"{int(w.province_code):02d}"].append(
            Commune(f"{int(w.code):05d}", w.name, short, kind, f"{int(w.province_code):02d}"))
    by_code = {p.code: p for p in provinces}
    by_code.update({c.code: c for group in communes.values() for c in group})
    version = f"vietnam-provinces {vp.__version__} (data {vp.__data_version__})"
    return _Units(version, tuple(sorted(provinces, key=_sort_key)),
                  {code: tuple(sorted(group, key=_sort_key)) for code, group in communes.items()}, by_code)


def data_version() -> str:
    """Which list of units this is, e.g. "vietnam-provinces 2025.10.1 (data 2025-10-18)"."""
    return _data().version


def provinces() -> tuple[Province, ...]:
    return _data().provinces


def communes_of(province_code: str) -> tuple[Commune, ...]:
    return _data().communes.get(province_code, ())


def province(code: str) -> Province | None:
    found = _data().by_code.get(code) if isinstance(code, str) else None
    return found if isinstance(found, Province) else None


def commune(code: str) -> Commune | None:
    found = _data().by_code.get(code) if isinstance(code, str) else None
    return found if isinstance(found, Commune) else None


def _rank(words: list[str], unit) -> int | None:
    """How well the query's words name ``unit`` (lower is better), or None when they do not: 0 the name
    itself; 1 the name starts with them; 2 they start consecutive words of the name; 3 each starts a
    word of the name, in any order; 4 the name, spaces left out, holds them, spaces left out."""
    joined = " ".join(words)
    best = None
    aliases = _PROVINCE_ALIASES.get(unit.code, ()) if isinstance(unit, Province) else ()
    for name in (fold(unit.short), fold(unit.name), *aliases):
        if joined == name:
            return 0
        name_words = name.split()
        if all(name_words[i].startswith(w) for i, w in enumerate(words[:len(name_words)])) \
                and len(words) <= len(name_words):
            rank = 1
        elif any(all(name_words[s + i].startswith(w) for i, w in enumerate(words))
                 for s in range(len(name_words) - len(words) + 1)):
            rank = 2
        elif all(any(nw.startswith(w) for nw in name_words) for w in words):
            rank = 3
        elif joined.replace(" ", "") in name.replace(" ", ""):
            rank = 4
        else:
            continue
        best = rank if best is None else min(best, rank)
    return best


def _search(units, query: str, limit: int) -> list:
    words = _query_words(query)
    if not words:
        return []
    ranked = [(rank, index, unit) for index, unit in enumerate(units)
              if (rank := _rank(words, unit)) is not None]
    return [unit for _, _, unit in sorted(ranked, key=lambda r: r[:2])[:limit]]


def search_provinces(query: str, limit: int = 10) -> list[Province]:
    """Provinces the query names, best first ("ho chi minh", "tp hcm" and "sai gon" find the same one)."""
    return _search(provinces(), query, limit)


def search_communes(province_code: str, query: str, limit: int = 20) -> list[Commune]:
    """Communes, wards and special zones of one province the query names, best first."""
    return _search(communes_of(province_code), query, limit)
