"""Tracking codes: short, readable, made offline, with a check character that catches a mistyped code.

``K01-261128-0042-7``: station id, local date (yymmdd), the day's sequence at that station, and an
ISO 7064 MOD 37,36 check character over the rest (it catches every single wrong character and every
swap of two neighbours).
"""
import re

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SHAPE = re.compile(r"^([A-Z0-9]{2,6})(\d{6})(\d{4,})([0-9A-Z])$")


def check_character(body: str) -> str:
    modulus, product = 36, 36
    for char in body:
        total = (product + _ALPHABET.index(char)) % modulus or modulus
        product = (total * 2) % (modulus + 1)
    return _ALPHABET[(modulus + 1 - product) % modulus]


def make(station_id: str, yymmdd: str, sequence: int) -> str:
    seq = f"{sequence:04d}"
    return f"{station_id}-{yymmdd}-{seq}-{check_character(station_id + yymmdd + seq)}"


def compact(text: str) -> str:
    """What a person typed or a scanner sent, reduced to letters and digits (case and dashes ignored)."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def is_valid(text: str) -> bool:
    code = compact(text)
    return bool(_SHAPE.match(code)) and check_character(code[:-1]) == code[-1]
