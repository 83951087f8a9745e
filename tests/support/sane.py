"""SANE's ``test`` backend as the station's scanner (``man sane-test``): a config folder of the test's own,
with ``dll.conf`` naming the backends and ``test.conf`` its options, pointed at by ``SANE_CONFIG_DIR``.
Used by the scanner's tests (tests/test_scanner.py) and the paper steps' (tests/test_document_steps.py)."""
from pathlib import Path

import pytest


def sane_config(folder: Path, backends: str = "test", **options) -> Path:
    """A SANE config folder: dll.conf naming ``backends``, test.conf with ``options`` (test backend keys,
    ``_`` for ``-``). The virtual glass is made A4-sized (its default is 200 mm square)."""
    folder.mkdir(exist_ok=True)
    (folder / "dll.conf").write_text(backends + "\n")
    settings = {"number_of_devices": 1, "geometry_max": "300.0", "resolution": "300.0", **options}
    lines = []
    for key, value in settings.items():
        key = key.replace("_", "-") if key not in ("number_of_devices", "geometry_max") else key
        lines.append(f'{key} {value}')
    (folder / "test.conf").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def sane(tmp_path, monkeypatch):
    """Point SANE at a config folder of this test's; call it with test backend options."""
    def configure(backends="test", **options):
        folder = sane_config(tmp_path / "sane.d", backends, **options)
        monkeypatch.setenv("SANE_CONFIG_DIR", str(folder))
        return folder
    return configure


@pytest.fixture(scope="session")
def sane_sees_nothing(tmp_path_factory):
    """SANE with no backend for the whole session (make it autouse from conftest.py): a station app looks
    for its scanner in the background (kiosk/capture.py), and ``scanimage -L`` with the system's backends
    probes the network for seconds; dozens of those left running slow the SANE test backend's scans in
    tests/test_scanner.py past their timeout. A test that wants a scanner sets its own folder (``sane``)."""
    import os

    folder = tmp_path_factory.mktemp("sane-none")
    (folder / "dll.conf").write_text("")
    before = os.environ.get("SANE_CONFIG_DIR")
    os.environ["SANE_CONFIG_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("SANE_CONFIG_DIR", None)
    else:
        os.environ["SANE_CONFIG_DIR"] = before
