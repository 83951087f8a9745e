"""Secret files: made once, owner-only, never half-written, the same for every process that starts at once."""
import stat
import subprocess
import sys

from kiosk.app import create_app
from kiosk.core import keyfile

RACE = """
import sys, time
from kiosk.core.sealing import load_or_create_key
from sync.keys import load_or_create_signing_key, public_b64
start = float(sys.argv[3])
while time.time() < start:
    pass
print(load_or_create_key(sys.argv[1]).hex(), public_b64(load_or_create_signing_key(sys.argv[2])))
"""


def test_processes_starting_at_once_all_use_the_first_key_made(tmp_path):
    import time

    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path / "payload.key"),
                               str(tmp_path / "station.ed25519"), start], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    answers = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(answers) == 1  # one payload key and one signing key for all eight
    for name in ("payload.key", "station.ed25519"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload.key", "station.ed25519"]  # no leftovers


def test_an_existing_file_is_read_never_rewritten(tmp_path):
    path = tmp_path / "session.key"
    first = keyfile.load_or_create(path, lambda: b"a" * 32)
    assert keyfile.load_or_create(path, lambda: b"b" * 32) == first == b"a" * 32


def test_the_session_key_is_made_owner_only(tmp_path):
    create_app({"paths": {"data": str(tmp_path / "var")}})
    assert stat.S_IMODE((tmp_path / "var" / "session.key").stat().st_mode) == 0o600
    assert len((tmp_path / "var" / "session.key").read_bytes()) == 32
