"""Spoken prompts: each question has a recording made with espeak-ng, served from the station."""
import io
import re
import wave

import pytest

from kiosk import audio

from .wizard import start

pytestmark = pytest.mark.skipif(not audio.available(), reason="espeak-ng missing: make test installs it")


def test_each_question_page_offers_its_prompt(client, catalog):
    proc = catalog["dang-ky-khai-tu"]
    path = start(client, proc.slug)
    page = client.get(path)
    url = re.search(r'href="(/audio/vi-[0-9a-f]+\.wav)" data-listen', page.text).group(1)
    first = client.get(url)
    assert first.status_code == 200 and first.mimetype == "audio/wav"
    with wave.open(io.BytesIO(first.data)) as recording:
        seconds = recording.getnframes() / recording.getframerate()
    assert 1.0 < seconds < 30  # a sentence, not silence
    assert client.get(url).data == first.data  # made once, then kept
    english = client.get("/lang/en") and client.get(path)
    assert re.search(r'href="/audio/en-[0-9a-f]+\.wav"', english.text)


def test_unknown_prompt_is_not_made(client):
    assert client.get("/audio/vi-0000000000000000dead.wav").status_code == 404


def test_build_makes_every_prompt_once(tmp_path, catalog):
    folder = tmp_path / "audio"
    subset = {"dang-ky-khai-tu": catalog["dang-ky-khai-tu"]}
    made, kept = audio.build_all(folder, subset)
    assert made == len(audio.all_prompts(subset)) and kept == 0
    assert audio.build_all(folder, subset) == (0, made)
    assert not list(folder.glob(".*"))  # no half-written files left
