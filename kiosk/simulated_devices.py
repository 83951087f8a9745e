"""`kiosk serve --simulate-missing`: a station with no card reader gets a simulated one, so a demo or a
pilot without hardware goes through the real PC/SC path: pcscd with the vpcd virtual reader, and a
synthetic, test-signed CCCD in it. A station with no scanner gets SANE's own `test` backend (a virtual
scanner, through the same scanimage path as a real one). (A station with no printer shows every receipt
on screen.)

What it tells the operator is in kiosk/messages_devices.toml (simulated_card_*), a Vietnamese line then
an English one.
"""
import json
import logging
from pathlib import Path

from .i18n import say

log = logging.getLogger(__name__)


def _tell(key: str, **params) -> list[str]:
    return [say(key, "vi", **params), say(key, "en", **params)]


# SANE's test backend as a scanner with an A4 glass, showing a grid (its default page is solid black).
TEST_SCANNER_CONF = ("number_of_devices 1\nmode Gray\nresolution 200.0\ngeometry_max 300.0\n"
                     'test-picture "Grid"\n')


def simulated_scanner(config: dict, data: Path) -> tuple[dict, list[str]]:
    """With ``devices.scanner = "auto"`` and no scanner found, SANE's test backend in a configuration
    folder of the station's: (station overrides, lines to tell the operator)."""
    from devices.scanner import find_scanners

    if config["devices"]["scanner"] != "auto" or config["devices"]["scanner_config_dir"]:
        return {}, []
    if find_scanners(config_dir=None):
        return {}, []  # a real scanner is there (or scanimage is missing: then no scanner at all)
    folder = data / "demo-scanner"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dll.conf").write_text("test\n")
    (folder / "test.conf").write_text(TEST_SCANNER_CONF)
    if not find_scanners(config_dir=str(folder)):
        return {}, []  # no scanimage on this machine
    return {"devices": {"scanner_config_dir": str(folder)}}, _tell("simulated_scanner_ready")


def start_missing(config: dict, data: Path) -> tuple[dict, list[str], callable]:
    """Start what is missing; returns (station overrides, lines to tell the operator, stop function)."""
    overrides, lines = simulated_scanner(config, data)
    card_overrides, card_lines, stop = _start_card(config, data)
    devices = {**overrides.get("devices", {}), **card_overrides.get("devices", {})}
    return ({"devices": devices} if devices else {}), lines + card_lines, stop


def _start_card(config: dict, data: Path) -> tuple[dict, list[str], callable]:
    """The simulated card, when no card reader is attached."""
    from devices.card_profile import write_test_card
    from devices.card_simulator import CardSimulator
    from devices.vpcd import PcscdProcess, _pcscd_pid_alive, vpcd_reader_listed

    if config["devices"]["card_reader"] != "auto":
        return {}, [], lambda: None
    try:
        from smartcard.System import readers
        if any(not str(r).startswith("Virtual PCD") for r in readers()):
            return {}, [], lambda: None  # a real reader is there
    except Exception:  # no pcscd: we start one below
        pass
    pcscd = None
    try:
        if not vpcd_reader_listed():
            if _pcscd_pid_alive():
                return {}, _tell("simulated_card_pcscd_busy"), lambda: None
            pcscd = PcscdProcess().start()
        folder = data / "demo-card"
        profile_path = folder / "synthetic_cccd.json"
        if not profile_path.exists():
            write_test_card(folder)
        simulator = CardSimulator(profile_path).connect()
    except (RuntimeError, OSError) as exc:
        if pcscd is not None:
            pcscd.stop()
        return {}, _tell("simulated_card_failed", error=exc), lambda: None
    key = json.loads(profile_path.read_text("utf-8"))["key"]

    def stop():
        simulator.pull_out()
        if pcscd is not None:
            pcscd.stop()

    lines = _tell("simulated_card_ready", number=key["number"], birth=key["birth_date"], expiry=key["expiry_date"])
    return {"devices": {"csca_dir": str(folder / "csca")}}, lines, stop
