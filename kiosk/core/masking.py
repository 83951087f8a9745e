"""Masking personal data for what is printed or shown to anyone standing near the station.

A receipt can be lost or photographed, so it carries only enough of a name and an ID number for the
citizen to recognise it as theirs: the family name and the initials, and the last four characters.
"""
import unicodedata

MASK = "*"


def _graphemes(word: str) -> list[str]:
    """Split an NFC word into user-perceived characters (a base letter with its combining marks).

    After NFC every Vietnamese letter is one code point, but a mark with no precomposed form (or a
    decomposed name from an old system that NFC cannot recombine) must still travel with its letter,
    so that a mask never leaves a lone tone mark behind.
    """
    clusters: list[str] = []
    for char in word:
        if clusters and unicodedata.combining(char):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def mask_name(name: str | None) -> str:
    """Keep the family name (the first word) and the first letter of every other word.

    >>> mask_name("Nguyễn Văn An")
    'Nguyễn V** A*'

    A name of one word keeps only its first letter. ``None`` or a blank name gives ``""``.
    """
    if not name:
        return ""
    words = unicodedata.normalize("NFC", name).split()
    if not words:
        return ""
    if len(words) == 1:
        letters = _graphemes(words[0])
        return letters[0] + MASK * (len(letters) - 1)
    masked = [words[0]]
    for word in words[1:]:
        letters = _graphemes(word)
        masked.append(letters[0] + MASK * (len(letters) - 1))
    return " ".join(masked)


def mask_id(number: str | None, keep: int = 4) -> str:
    """Hide all but the last ``keep`` characters of an ID number, keeping its length.

    >>> mask_id("001099012345")
    '********2345'

    A number no longer than ``keep`` is masked entirely (showing it would show all of it).
    """
    if not number:
        return ""
    chars = _graphemes(unicodedata.normalize("NFC", "".join(str(number).split())))
    if len(chars) <= keep:
        return MASK * len(chars)
    return MASK * (len(chars) - keep) + "".join(chars[-keep:])
