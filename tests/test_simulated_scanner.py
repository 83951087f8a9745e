"""`kiosk serve --simulate-missing` with no scanner: SANE's own test backend stands in, through the same
scanimage path a real scanner takes (kiosk/simulated_devices.py). The machine's SANE configuration is
replaced by a folder of the test's (SANE_CONFIG_DIR) so that what "a real scanner is there" means is
the test's choice, not the host's."""
import shutil

import pytest

from devices.scanner import find_scanners, scan_page
from kiosk.core.config import load_station
from kiosk.core.pages import clean_page
from kiosk.simulated_devices import simulated_scanner

pytestmark = pytest.mark.skipif(shutil.which("scanimage") is None, reason="scanimage is missing (sane-utils)")


def _system_sane(tmp_path, monkeypatch, backends: str):
    folder = tmp_path / "system-sane.d"
    folder.mkdir()
    (folder / "dll.conf").write_text(backends + "\n")
    (folder / "test.conf").write_text("number_of_devices 1\n")
    monkeypatch.setenv("SANE_CONFIG_DIR", str(folder))


def test_with_no_scanner_the_test_backend_scans_a_page_the_station_can_keep(tmp_path, monkeypatch):
    _system_sane(tmp_path, monkeypatch, "")  # SANE with no backend: no scanner at all
    assert find_scanners() == []
    overrides, lines = simulated_scanner(load_station(), tmp_path / "data")
    folder = overrides["devices"]["scanner_config_dir"]
    assert lines[0].startswith("Máy quét mô phỏng") and lines[1].startswith("Simulated scanner")
    (device,) = find_scanners(config_dir=folder)
    assert device.device.startswith("test:")
    page = clean_page(scan_page(device.device, resolution=200, config_dir=folder))
    assert page.height > page.width > 1000  # an A4 page (the test backend's glass made A4)
    # The station file the overrides make is valid.
    assert load_station(overrides=overrides)["devices"]["scanner_config_dir"] == folder


def test_a_real_scanner_or_a_chosen_one_is_left_alone(tmp_path, monkeypatch):
    _system_sane(tmp_path, monkeypatch, "test")  # the system's SANE sees a scanner
    assert simulated_scanner(load_station(), tmp_path / "data") == ({}, [])
    (tmp_path / "b").mkdir()
    _system_sane(tmp_path / "b", monkeypatch, "")  # no scanner, but the station says it wants none
    none = load_station(overrides={"devices": {"scanner": "none"}})
    assert simulated_scanner(none, tmp_path / "data") == ({}, [])
    assert not (tmp_path / "data" / "demo-scanner").exists()
