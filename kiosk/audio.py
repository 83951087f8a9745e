"""Spoken prompts: each step's question read aloud, made with espeak-ng's Vietnamese (or English) voice.

Only fixed texts are voiced (questions, hints, page headings), never what a citizen typed. A prompt is
made once, on `kiosk audio build` or on its first request, and kept under <data>/audio/ by a name
derived from its text, so a changed question gets a new recording.
"""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from .core.catalog import Procedure
from .i18n import MESSAGES

VOICES = {"vi": "vi", "en": "en"}
PAGE_PROMPTS = {  # page -> message keys read aloud, in order
    "index": ("index_title", "index_lead"),
    "check": ("check_title", "check_lead"),
    "consent": ("consent_title", "consent_declaration", "consent_data"),
    "done": ("done_title", "done_qr_help"),
}


def name_for(lang: str, text: str) -> str:
    return f"{lang}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


def question_text(page: dict, lang: str) -> str:
    parts = []
    if page.get("title"):
        parts.append(page["title"][lang])
    for field in page["fields"]:
        parts.append(field["label"][lang])
        if field.get("hint"):
            parts.append(field["hint"][lang])
    return ". ".join(p.rstrip(".") for p in parts) + "."


def page_text(page_name: str, lang: str) -> str:
    return ". ".join(MESSAGES[key][lang].rstrip(".") for key in PAGE_PROMPTS[page_name]) + "."


def all_prompts(catalog: dict[str, Procedure]) -> dict[str, tuple[str, str]]:
    """Every prompt the station can play: name -> (language, text)."""
    prompts = {}
    for lang in VOICES:
        texts = [page_text(name, lang) for name in PAGE_PROMPTS]
        texts += [question_text(page, lang) for proc in catalog.values() for page in proc.pages]
        for text in texts:
            prompts[name_for(lang, text)] = (lang, text)
    return prompts


def available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesize(folder: Path, name: str, lang: str, text: str) -> Path:
    """The recording for ``text``, made now if it is not there yet (atomically: no half files)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # in the data folder: its owner's only
    target = folder / f"{name}.wav"
    if not target.exists():
        partial = folder / f".{name}.{os.getpid()}.wav"
        subprocess.run(["espeak-ng", "-v", VOICES[lang], "-s", "140", "-w", str(partial), text],
                       check=True, capture_output=True, timeout=30)
        partial.chmod(0o600)
        partial.replace(target)
    return target


def build_all(folder: Path, catalog: dict[str, Procedure]) -> tuple[int, int]:
    """Make every prompt that is missing; returns (made, already there)."""
    made = kept = 0
    for name, (lang, text) in all_prompts(catalog).items():
        if (folder / f"{name}.wav").exists():
            kept += 1
        else:
            synthesize(folder, name, lang, text)
            made += 1
    return made, kept
