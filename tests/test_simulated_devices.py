"""`kiosk serve --simulate-missing` (what `make run` does): with no card reader, a synthetic card sits in
pcscd's virtual reader, and the station reads it through the real PC/SC path with its test CSCA trusted."""
import re
import signal
import subprocess
import sys

import pytest

from .conftest import LiveStation

try:
    from tests.card_fixtures import card_state, pcscd  # noqa: F401  (the shared pcscd of the session)
except ImportError:  # run from inside tests/
    from card_fixtures import card_state, pcscd  # noqa: F401

pytestmark = pytest.mark.slow


def test_a_station_without_a_reader_gets_a_simulated_card(tmp_path, pcscd):  # noqa: F811
    station = LiveStation(tmp_path / "demo")
    process = subprocess.Popen(
        [sys.executable, "-m", "kiosk", "serve", "--simulate-missing", "--station", str(station.station_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=station.data_dir)
    try:
        lines = []  # the simulated scanner's lines, if any, come first
        for _ in range(8):
            lines.append(process.stdout.readline())
            found = re.search(r"số (\d{12}), ngày sinh ([\d-]+), hết hạn ([\d-]+)", lines[-1])
            if found:
                break
        assert found, lines
        card_state(present=True)
        number, birth, expiry = found.groups()
        read = subprocess.run(
            [sys.executable, "-m", "kiosk", "card", "read", "--number", number, "--birth", birth, "--expiry", expiry,
             "--csca-dir", str(station.data_dir / "var" / "demo-card" / "csca")],
            capture_output=True, text=True, timeout=60)
        assert read.returncode == 0, read.stderr
        assert f'"id_number": "{number}"' in read.stdout and '"verified": true' in read.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        process.stdout.close()
    card_state(present=False)  # the card leaves the reader with the station
