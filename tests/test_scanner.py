"""The document scanner through the real SANE path: scanimage and its ``test`` backend (a virtual scanner
whose options simulate a feeder out of paper, a jam, an open cover, a busy device, lost pixels and a slow
device), configured in a folder of the test's own (``SANE_CONFIG_DIR``)."""
import io
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from devices import scanner
from devices.scanner import CODES, ScanError, expected_size, find_scanners, scan_page
from kiosk import i18n
from kiosk.device_words import scanner_status
from tests.support.sane import sane  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(shutil.which("scanimage") is None,
                                reason="scanimage is missing: scripts/ensure-debian-packages sane-utils")

LOW_DPI = 50  # small pages keep the file fast


def scanimage_processes(config_dir: Path) -> list[int]:
    """scanimage processes running with this config folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path((proc / "cmdline").read_bytes().split(b"\0")[0].decode()).name != "scanimage":
                continue
            if f"SANE_CONFIG_DIR={config_dir}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def code_of(**kwargs) -> str:
    """The code of a scan that fails. SANE's test backend itself now and then hangs on a simulated error
    status (its reader never returns: 7 scans in 100 with SANE_STATUS_JAMMED on this machine, 0 in 100
    without a simulated status), which scan_page rightly reports as "timeout"; the test then scans again,
    up to five times, so a hang of the simulator is not taken for the code under test."""
    for _ in range(5):
        with pytest.raises(ScanError) as caught:
            scan_page("test:0", **{"resolution": LOW_DPI, "timeout_s": 4, **kwargs})
        if caught.value.code != "timeout":
            break
    assert caught.value.code in CODES
    return caught.value.code


def test_the_test_scanner_is_found(sane):
    sane()
    found = find_scanners()
    assert [s.device for s in found] == ["test:0"]
    assert found[0].vendor == "Noname" and found[0].model == "frontend-tester"


def test_a_page_is_a_png_of_a4_at_the_resolution(sane):
    sane(test_picture='"Grid"')
    for dpi, mode, pil_mode in ((LOW_DPI, "Gray", "L"), (150, "Color", "RGB")):
        data = scan_page(None, resolution=dpi, mode=mode)  # None: the first scanner listed
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.mode == pil_mode
        assert image.size == expected_size(dpi)
        assert abs(image.size[0] - 210 / 25.4 * dpi) <= 1 and abs(image.size[1] - 297 / 25.4 * dpi) <= 1
        extrema = image.convert("L").getextrema()
        assert extrema[0] < 50 and extrema[1] > 200  # a real grid, black and white


def test_the_default_is_300_dpi_gray():
    import inspect
    params = inspect.signature(scan_page).parameters
    assert params["resolution"].default == 300 and params["mode"].default == "Gray"


def test_a_page_from_the_feeder(sane):
    sane()
    data = scan_page("test:0", resolution=LOW_DPI, source="Automatic Document Feeder")
    assert Image.open(io.BytesIO(data)).size == expected_size(LOW_DPI)


def test_a_smaller_glass_gives_what_it_has(sane):
    """A scanner whose glass is smaller than A4 rounds the area down; its page is not a broken one."""
    sane(geometry_max="200.0")
    image = Image.open(io.BytesIO(scan_page("test:0", resolution=LOW_DPI)))
    assert image.size == expected_size(LOW_DPI, (200, 200))


def test_fuzzy_parameters_still_give_the_page(sane):
    sane(fuzzy_parameters="true", read_limit="true", read_limit_size=777)
    image = Image.open(io.BytesIO(scan_page("test:0", resolution=LOW_DPI)))
    assert image.size == expected_size(LOW_DPI)


@pytest.mark.parametrize("status, code", [
    ("SANE_STATUS_NO_DOCS", "no_paper"),
    ("SANE_STATUS_JAMMED", "jammed"),
    ("SANE_STATUS_COVER_OPEN", "cover_open"),
    ("SANE_STATUS_DEVICE_BUSY", "busy"),
    ("SANE_STATUS_IO_ERROR", "failed"),
    ("SANE_STATUS_NO_MEM", "failed"),
    ("SANE_STATUS_CANCELLED", "failed"),
    ("SANE_STATUS_ACCESS_DENIED", "failed"),
    ("SANE_STATUS_EOF", "failed"),  # scanimage aborts: no image at all
])
def test_sane_statuses_give_their_codes(sane, status, code):
    sane(read_status_code=f'"{status}"')
    assert code_of() == code


def test_an_empty_feeder(sane):
    sane(read_status_code='"SANE_STATUS_NO_DOCS"')
    assert code_of(source="Automatic Document Feeder") == "no_paper"


def test_lost_pixels_are_a_broken_page(sane):
    sane(ppl_loss=64)
    assert code_of() == "failed"


def test_a_hand_scanner_of_unknown_height_fails_cleanly(sane):
    sane(hand_scanner="true")
    assert code_of() == "failed"


def test_a_mode_the_scanner_lacks_fails(sane):
    sane()
    assert code_of(mode="Infrared") == "failed"


def test_a_slow_scanner_times_out_and_is_killed(sane):
    # The backend waits 0.2 s after each 64 kB it hands over: an A4 page at 150 dpi takes some 7 s.
    folder = sane(read_delay="true", read_delay_duration=200000)
    started = time.monotonic()
    with pytest.raises(ScanError) as caught:
        scan_page("test:0", resolution=150, timeout_s=1.0)
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 5
    assert scanimage_processes(folder) == []


def test_no_scanner(sane, monkeypatch):
    sane(backends="")  # SANE with no backend: nothing is found
    assert find_scanners() == []
    with pytest.raises(ScanError) as caught:
        scan_page(None)
    assert caught.value.code == "no_scanner"
    sane()
    with pytest.raises(ScanError) as caught:
        scan_page("test:7", resolution=LOW_DPI)  # a device that is not there (unplugged)
    assert caught.value.code == "no_scanner"
    monkeypatch.setattr(scanner, "SCANIMAGE", "/nonexistent/scanimage")  # sane-utils not installed
    assert find_scanners() == []
    with pytest.raises(ScanError) as caught:
        scan_page("test:0")
    assert caught.value.code == "no_scanner"


def test_errors_carry_no_image_data(sane):
    sane(ppl_loss=64)
    with pytest.raises(ScanError) as caught:
        scan_page("test:0", resolution=LOW_DPI)
    error = caught.value
    assert str(error) == error.code == "failed"
    assert len(error.detail) <= 200 and "\x89PNG" not in error.detail


def test_every_code_has_words_in_both_languages():
    for code in CODES:
        key = f"scanner_error_{code}"
        assert set(i18n.MESSAGES[key]) == set(i18n.LANGUAGES)
        vi, en = scanner_status(code, "vi"), scanner_status(ScanError(code), "en")
        assert vi and en and vi != en
        assert "{" not in vi + en
    assert "quét" in scanner_status("jammed", "vi") and "stuck" in scanner_status("jammed", "en")


def test_sane_messages_are_matched_in_english_whatever_the_language(sane, monkeypatch):
    monkeypatch.setenv("LANG", "vi_VN.UTF-8")
    monkeypatch.setenv("LANGUAGE", "vi:fr:de")
    sane(read_status_code='"SANE_STATUS_JAMMED"')
    assert code_of() == "jammed"
    assert os.environ["LANGUAGE"] == "vi:fr:de"  # the station's own environment is left alone
