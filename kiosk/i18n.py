"""Vietnamese first, English on request: the interface's words live in messages*.toml, one key each
(messages.toml for the citizen's path, messages_<part>.toml for other parts).

Two languages in TOML files need no gettext toolchain or compile step; a test checks that every key has
both languages and that every key used in a template exists.
"""
import tomllib
from pathlib import Path

from flask import session

LANGUAGES = ("vi", "en")


def _load_messages() -> dict[str, dict[str, str]]:
    messages: dict[str, dict[str, str]] = {}
    for path in sorted(Path(__file__).parent.glob("messages*.toml")):
        for key, text in tomllib.loads(path.read_text("utf-8")).items():
            if key in messages:
                raise ValueError(f"{path.name}: message key '{key}' is defined twice")
            messages[key] = text
    return messages


MESSAGES = _load_messages()


def current_language() -> str:
    lang = session.get("lang")
    return lang if lang in LANGUAGES else "vi"


def t(key: str, **values) -> str:
    """The message ``key`` in the current language, with ``{name}`` placeholders filled."""
    return say(key, None, **values)


def say(key: str, lang: str | None = None, **values) -> str:
    """The message ``key`` in ``lang`` (default: the page's language; commands and tests that run outside
    a request name one), with its ``{name}`` placeholders filled."""
    text = MESSAGES[key][lang or current_language()]
    return text.format(**values) if values else text


def pick(text: dict | None) -> str:
    """One language out of a {vi, en} pair from a procedure definition."""
    if not text:
        return ""
    return text.get(current_language()) or text["vi"]


def age(since) -> str:
    """How long ago, in words: "3 giờ", "2 ngày" (for "waiting for ..." banners)."""
    from datetime import datetime, timezone

    seconds = max(0, int((datetime.now(timezone.utc) - since).total_seconds()))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return t(f"age_{unit}", n=seconds // size)
    return t("age_moments")
