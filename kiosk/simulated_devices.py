"""`kiosk serve --simulate-missing`: a station with no card reader gets a simulated one, so a demo or a
pilot without hardware goes through the real PC/SC path: pcscd with the vpcd virtual reader, and a
synthetic, test-signed CCCD in it. (A station with no printer shows every receipt on screen.)
"""
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def start_missing(config: dict, data: Path) -> tuple[dict, list[str], callable]:
    """Start what is missing; returns (station overrides, lines to tell the operator, stop function)."""
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
                return {}, ["Thẻ mô phỏng: không dùng được (pcscd đang chạy mà không có đầu đọc vpcd)"], lambda: None
            pcscd = PcscdProcess().start()
        folder = data / "demo-card"
        profile_path = folder / "synthetic_cccd.json"
        if not profile_path.exists():
            write_test_card(folder)
        simulator = CardSimulator(profile_path).connect()
    except (RuntimeError, OSError) as exc:
        if pcscd is not None:
            pcscd.stop()
        return {}, [f"Thẻ mô phỏng: không khởi động được ({exc})"], lambda: None
    key = json.loads(profile_path.read_text("utf-8"))["key"]

    def stop():
        simulator.pull_out()
        if pcscd is not None:
            pcscd.stop()

    lines = [f"Thẻ căn cước mô phỏng trong đầu đọc ảo / simulated CCCD in the virtual reader: "
             f"số {key['number']}, ngày sinh {key['birth_date']}, hết hạn {key['expiry_date']} (test data only)"]
    return {"devices": {"csca_dir": str(folder / "csca")}}, lines, stop
