"""Vietnamese first, English on request: the interface's words live in messages*.toml, one key each
(messages.toml for the citizen's path, messages_<part>.toml for other parts).

Two languages in TOML files need no gettext toolchain or compile step; a test checks that every key has
both languages and that every key used in a template exists.
"""
import re
import tomllib
from pathlib import Path

from flask import g, has_request_context, request, session

LANGUAGES = ("vi", "en")
# The files whose words speak to the citizen ("bạn", "you"): turned to the third person when staff read
# them for a citizen (``addressed``).
CITIZEN_FILES = ("messages.toml", "messages_card.toml")
# Their keys that are never turned: those that speak to whoever stands at the screen, staff too (the idle
# warning, the error pages, the card reader's steps that staff take themselves), and the rating, which the
# citizen reads and answers on the staff member's screen.
SCREEN_KEYS = frozenset({
    "idle_title", "idle_text", "expired_title", "expired_text", "error_page_text", "not_found_text",
    "too_many_text", "paused_text", "card_you_confirm", "card_failed_advice_retry",
    "rating_title", "rating_lead", "rating_thanks_title", "rating_thanks_body",
})


def _load_messages() -> tuple[dict[str, dict[str, str]], frozenset[str]]:
    messages: dict[str, dict[str, str]] = {}
    citizen: set[str] = set()
    for path in sorted(Path(__file__).parent.glob("messages*.toml")):
        for key, text in tomllib.loads(path.read_text("utf-8")).items():
            if key in messages:
                raise ValueError(f"{path.name}: message key '{key}' is defined twice")
            messages[key] = text
            if path.name in CITIZEN_FILES and key not in SCREEN_KEYS:
                citizen.add(key)
    return messages, frozenset(citizen)


MESSAGES, CITIZEN_KEYS = _load_messages()


def current_language() -> str:
    lang = session.get("lang")
    return lang if lang in LANGUAGES else "vi"


def t(key: str, **values) -> str:
    """The message ``key`` in the current language, with ``{name}`` placeholders filled."""
    return say(key, None, **values)


def say(key: str, lang: str | None = None, **values) -> str:
    """The message ``key`` in ``lang`` (default: the page's language; commands and tests that run outside
    a request name one), with its ``{name}`` placeholders filled. A citizen's message on a page staff read
    for a citizen is turned to the third person first (``addressed``), never the values put into it."""
    lang = lang or current_language()
    text = MESSAGES[key][lang]
    if key in CITIZEN_KEYS and staff_reading():
        text = addressed(text, lang)
    return text.format(**values) if values else text


def pick(text: dict | None) -> str:
    """One language out of a {vi, en} pair from a procedure definition (a label, a hint, a page's title,
    an option, a message), in the third person when staff read it for a citizen (``addressed``)."""
    if not text:
        return ""
    lang = current_language()
    chosen = text.get(lang) or text["vi"]
    return addressed(chosen, lang if text.get(lang) else "vi") if staff_reading() else chosen


# --- the citizen in the third person when staff read -------------------------------------------------

def staff_reading() -> bool:
    """Whether this page is read by staff about a citizen: a logged-in staff member (``g.staff``, set by
    agent/views.py) on the wizard's pages of an application they fill in at the counter (every page under
    /p/<slug>/, the citizen's and the card reader's) or on their own pages (agent/). Not the citizen's
    other pages, such as the rating the citizen gives on the staff member's screen."""
    if not has_request_context() or not getattr(g, "staff", None):
        return False
    return request.blueprint == "agent" or "slug" in (request.view_args or {})


def for_reader(text: str) -> str:
    """A text of the page's language from a procedure definition that did not come through ``pick`` (a
    choice's answer as the check page shows it), in the third person when staff read it."""
    return addressed(text, current_language()) if staff_reading() else text


# Vietnamese: "bạn" (you) becomes "công dân" (the citizen). "người bạn sắp kết hôn" (the person you will
# marry) needs "mà" to keep its meaning with a noun in place of the pronoun.
_VI_PHRASES = ((re.compile(r"\bngười bạn\b"), "người mà công dân"),)
_VI_WORD = re.compile(r"\b([Bb])ạn\b")

# English: "you" becomes "the citizen" the first time in a sentence and "they"/"them" after it, "your"
# "the citizen's"/"their"; a verb after a subject "you" agrees with "the citizen" (are -> is, do -> does),
# and so does a question's auxiliary before it ("Where do you live?" -> "Where does the citizen live?").
_EN_PHRASES = (
    (re.compile(r"\bbefore you continue\b"), "before continuing"),
    (re.compile(r"\bbefore you submit\b"), "before submitting"),
    (re.compile(r"\bon your own\b"), "on their own"),
)
_EN_WORD = re.compile(r"\b(you(?:rself|rs|r)?)\b", re.IGNORECASE)
_EN_SENTENCE_END = re.compile(r"[.?!;]\s")
_EN_INVERTED = {"are": "is", "were": "was", "have": "has", "do": "does", "can": "can", "will": "will",
                "did": "did", "could": "could", "would": "would", "should": "should", "may": "may"}
_EN_AGREE = {"are": "is", "were": "was", "have": "has", "do": "does", "go": "goes"}
_EN_PRESENT = {"add", "apply", "choose", "collect", "come", "give", "hand", "know", "live", "need", "pay",
               "plan", "register", "see", "submit", "take", "use", "want", "wish", "work", "continue"}
_EN_SUBJECT = _EN_PRESENT | set(_EN_AGREE) | set(_EN_INVERTED) | {
    "had", "gave", "lived", "made", "paid", "turned", "used", "applied", "wanted", "needed", "must"}


def _agree(verb: str) -> str:
    if verb in _EN_AGREE:
        return _EN_AGREE[verb]
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + ("es" if verb.endswith(("s", "sh", "ch", "x", "o")) else "s")


def _capital(word: str, like: str) -> str:
    return word[0].upper() + word[1:] if like[:1].isupper() else word


def _english(text: str) -> str:
    for pattern, replacement in _EN_PHRASES:
        text = pattern.sub(replacement, text)
    pieces, at, seen = [], 0, False
    for match in _EN_WORD.finditer(text):
        before = text[at:match.start()]
        if _EN_SENTENCE_END.search(before):
            seen = False  # a new sentence names the citizen again
        word, lower = match.group(1), match.group(1).lower()
        after = re.match(r"\s+([A-Za-z]+)", text[match.end():])
        following = after.group(1).lower() if after else ""
        previous = re.search(r"([A-Za-z]+)\s+$", before)
        end = match.end()
        if lower in ("your", "yours"):
            new = ("theirs" if lower == "yours" else "their") if seen else "the citizen's"
        elif lower == "yourself":
            new = "themselves" if seen else "the citizen"
        elif previous and previous.group(1).lower() in _EN_INVERTED:  # a question: "do you need" -> "does ..."
            aux = previous.group(1)
            if not seen:
                agreeing = _capital(_EN_INVERTED[aux.lower()], aux)
                before = before[:previous.start(1)] + agreeing + before[previous.end(1):]
            new = "they" if seen else "the citizen"
        elif following in _EN_SUBJECT:  # the subject: its verb agrees with "the citizen"
            new = "they" if seen else "the citizen"
            if not seen and (following in _EN_PRESENT or following in _EN_AGREE):
                verb_at = match.end() + after.start(1)
                new += text[match.end():verb_at] + _agree(following)
                end = verb_at + len(following)
        else:  # an object: "tell you the result"
            new = "them" if seen else "the citizen"
        pieces.append(before + _capital(new, word))
        at, seen = end, True
    return "".join(pieces) + text[at:]


def addressed(text: str, lang: str) -> str:
    """``text`` (a procedure's or a citizen's message) with the citizen in the third person, for staff who
    read it about a citizen: "Họ và tên của bạn" -> "Họ và tên của công dân", "Your full name" -> "The
    citizen's full name", "Where do you live?" -> "Where does the citizen live?". First-person answers
    ("Tôi là sinh viên") are the citizen's own declaration and stay as they are."""
    if lang == "vi":
        for pattern, replacement in _VI_PHRASES:
            text = pattern.sub(replacement, text)
        return _VI_WORD.sub(lambda m: "Công dân" if m.group(1) == "B" else "công dân", text)
    return _english(text)


def age(since) -> str:
    """How long ago, in words: "3 giờ", "2 ngày" (for "waiting for ..." banners)."""
    from datetime import datetime, timezone

    seconds = max(0, int((datetime.now(timezone.utc) - since).total_seconds()))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return t(f"age_{unit}", n=seconds // size)
    return t("age_moments")
