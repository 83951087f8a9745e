"""What the web app knows of its devices, written down for the sync worker's heartbeat (docs/fleet.md).

The sync worker is its own process and cannot ask the web app's printer: the printer is one device on one
connection, and a second process querying it in the middle of a job would cut the job or be told "offline".
So the web app writes ``device-state.json`` in the data folder: the printer's status code (asked on the
printing thread itself, between jobs, so it never competes with a receipt), whether a card reader is there
(PC/SC's list of readers, no card touched), the software version and the catalog in use, and when it wrote
this. It writes it at start, every ``[health] device_check_seconds``, and after every print job (the job's
own answer is the freshest news). The worker reads the file (sync/heartbeat.py); a file older than a few
checks means the web app is not running, and the heartbeat says so.

Nothing personal is in it: codes, booleans, versions and a time. A service (docs/architecture.md).
"""
import hashlib
import json
import logging
import os
import threading
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

log = logging.getLogger("kiosk.device_state")

FILE_NAME = "device-state.json"
FORMAT = "dvc-device-state/1"


def software_version() -> str:
    """This release's version (the installed package's, else the source tree's "0.1.0+src")."""
    try:
        return metadata.version("dvc-kiosk")
    except metadata.PackageNotFoundError:
        return "0.1.0+src"


def catalog_version(catalog: dict, release: str | None = None) -> str:
    """A name for the procedure catalog in use: the catalog release when the station runs one, else
    "local:" and a short hash of every procedure's code and version (two stations with the same files
    show the same name)."""
    if release:
        return str(release)[:64]
    pairs = sorted(f"{p.code}@{p.version}" for p in catalog.values())
    return "local:" + hashlib.sha256("\n".join(pairs).encode()).hexdigest()[:12]


def card_reader_present(devices: dict) -> bool | None:
    """Whether the configured card reader is there (None: the station has none by design). Lists the PC/SC
    readers only: no card is connected to, so a read in progress is not disturbed."""
    wanted = devices.get("card_reader", "auto")
    if wanted == "none":
        return None
    try:
        from devices.card_reader import list_readers

        names = list_readers()
    except Exception:  # noqa: BLE001  (no pcscd, no pyscard: no reader, as far as a citizen is concerned)
        return False
    return any(wanted == "auto" or name.startswith(wanted) for name in names)


def write(folder: Path, state: dict) -> None:
    """Replace the file in one rename (a reader sees the old or the new one, never half); 0600. No fsync:
    after a power cut a stale file is only a stale heartbeat, rewritten at the next check."""
    path = Path(folder) / FILE_NAME
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(state, handle, separators=(",", ":"))
    os.replace(tmp, path)


def read(folder: Path) -> dict | None:
    """The file as written, or None when there is none or it cannot be read."""
    try:
        data = json.loads((Path(folder) / FILE_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


class DeviceWatch:
    """Keeps ``device-state.json`` current for one web app: ``check()`` asks the devices and writes;
    ``printed(status)`` records a print job's answer at once; ``start()`` checks every ``every_s`` seconds in
    a daemon thread. ``printer_status`` is called on the printing thread (``ReceiptPrinter.ask``).
    ``catalog`` is called at each write: the catalog in use changes when a release is switched to, and
    the app calls ``catalog_changed()`` at the switch so the heartbeat names the new one at once."""

    def __init__(self, folder: Path, station: dict, catalog, printer=None, every_s: float = 60.0):
        self.folder, self.station, self.catalog = Path(folder), station, catalog
        self.printer = printer  # the app's ReceiptPrinter, or None
        self.every_s = every_s
        self._lock = threading.Lock()
        self._printer_status: str | None = None
        self._reader: bool | None = None
        self._stop = threading.Event()
        self._started = False

    def state(self) -> dict:
        with self._lock:
            return {"format": FORMAT, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "software": software_version(), "catalog": self.catalog(),
                    "printer": self._printer_status, "card_reader": self._reader,
                    "card_reader_expected": self.station.get("devices", {}).get("card_reader", "auto") != "none"}

    def _write(self) -> None:
        try:
            write(self.folder, self.state())
        except OSError as exc:  # a full or read-only disk: the health check says it; the heartbeat goes stale
            log.warning("device state not written: %s", exc.strerror or type(exc).__name__)

    def check(self) -> dict:
        """Ask the printer (on its own thread, between jobs) and the card reader; write the file."""
        status = None
        if self.printer is not None:
            status = self.printer.ask_status()
        reader = card_reader_present(self.station.get("devices", {}))
        with self._lock:
            if status is not None:
                self._printer_status = status
            self._reader = reader
        self._write()
        return self.state()

    def printed(self, status_code: str) -> None:
        """A print job's answer: the printer's state now, written at once."""
        with self._lock:
            changed = status_code != self._printer_status
            self._printer_status = status_code
        if changed:
            self._write()

    def catalog_changed(self) -> None:
        """The app switched to another catalog release: write the file now (the next check is up to
        ``every_s`` away). Only once started: an app made in a test writes nothing unasked."""
        if self._started:
            self._write()

    def start(self) -> None:
        """Check now and every ``every_s`` seconds (`kiosk serve` starts it; an app made in a test does not
        ask its printer unasked), and hear every print job's answer."""
        if self.printer is not None:
            self.printer.on_status = self.printed
        self._started = True

        def run():
            while not self._stop.is_set():
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001  (the next check tries again; the app serves on)
                    log.error("device check failed: %s", type(exc).__name__)
                if self._stop.wait(self.every_s):
                    return

        threading.Thread(target=run, name="device-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
