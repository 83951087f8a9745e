"""Tracking codes: short, readable, made offline, with a check character that catches a mistyped code.

``K01-261128-0042-7``: station id, local date (yymmdd), the day's sequence at that station, and an
ISO 7064 MOD 37,36 check character over the rest (it catches every single wrong character and every
swap of two neighbours). A station restored from a backup (or reinstalled under the same id) lives a new
*incarnation*, written as letters before the sequence: ``K01-261128-A0042-X`` is the first restore's,
so a code issued after the backup was taken is never issued again.
"""
import re

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SHAPE = re.compile(r"^([A-Z0-9]{2,6})(\d{6})([A-Z]{0,3})(\d{4,})([0-9A-Z])$")


def check_character(body: str) -> str:
    modulus, product = 36, 36
    for char in body:
        total = (product + _ALPHABET.index(char)) % modulus or modulus
        product = (total * 2) % (modulus + 1)
    return _ALPHABET[(modulus + 1 - product) % modulus]


def incarnation_letters(n: int) -> str:
    """0 -> "", 1 -> "A", 26 -> "Z", 27 -> "AA" (bijective base 26)."""
    letters = ""
    while n > 0:
        n, rest = divmod(n - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def make(station_id: str, yymmdd: str, sequence: int, incarnation: int = 0) -> str:
    seq = f"{incarnation_letters(incarnation)}{sequence:04d}"
    return f"{station_id}-{yymmdd}-{seq}-{check_character(station_id + yymmdd + seq)}"


def incarnation_of(code: str) -> int:
    """The incarnation a well-formed code was issued in (0 for the station's first life)."""
    match = _SHAPE.match(compact(code))
    n = 0
    for letter in match.group(3) if match else "":
        n = n * 26 + ord(letter) - ord("A") + 1
    return n


def compact(text: str) -> str:
    """What a person typed or a scanner sent, reduced to letters and digits (case and dashes ignored)."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def is_valid(text: str) -> bool:
    code = compact(text)
    return bool(_SHAPE.match(code)) and check_character(code[:-1]) == code[-1]
