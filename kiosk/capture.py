"""How this station captures the pages of a citizen's papers: the sources it offers (its scanner, a
phone's camera, a file from a USB stick), the scanner it found, and one page scanned or uploaded and
cleaned (kiosk/core/pages.py) into what a draft keeps (kiosk/core/documents.py).

The scanner is looked for once per app (``scanimage -L`` probes every SANE backend, network ones too,
and takes seconds), in a thread of its own so no page waits for it: until the answer is in, the station
offers no scanner. The answer is the app's (``app.extensions["scanner"]``), never the module's; a scan
that finds the scanner gone forgets it, so the next page looks again (a scanner plugged back in gets a
new USB address, and so a new SANE device name).

Page uploads are the one request allowed a large body: the app's limit stays small for every other form
(``init_app`` raises it for the upload endpoints only, before the CSRF check reads the form).
"""
import logging
import threading

from flask import Flask, current_app, request

from devices import scanner as scanners
from devices.scanner import ScanError

from .core import documents, drafts, pages
from .core.catalog import Procedure

log = logging.getLogger(__name__)

# Where a station kind captures pages when its station file says "auto" (docs/station.md).
AUTO_SOURCES = {"kiosk": ("scanner",), "counter": ("scanner", "file"), "mobile": ("camera", "file")}
UPLOAD_ENDPOINTS = ("citizen.document_add", "citizen.document_retake")
# One page file plus the form around it (the CSRF token, the source): a file over pages.MAX_BYTES is
# still read far enough to be refused with words, not with the app's bare "too large" page.
UPLOAD_LIMIT = pages.MAX_BYTES + 1024 * 1024


# --- which sources ---------------------------------------------------------------------------------------

def configured_sources(config: dict) -> list[str]:
    """The sources the station file asks for (``auto`` by the station's kind), in a fixed order; the
    scanner only when ``devices.scanner`` is not ``none``."""
    setting = config["documents"]["sources"]
    chosen = AUTO_SOURCES[config["station"]["kind"]] if setting == "auto" else setting
    return [s for s in documents.SOURCES
            if s in chosen and not (s == "scanner" and config["devices"]["scanner"] == "none")]


def sources(config: dict, scanner_present: bool) -> list[str]:
    """The sources this station offers: those configured, the scanner only when one was found."""
    return [s for s in configured_sources(config) if s != "scanner" or scanner_present]


# --- the scanner -----------------------------------------------------------------------------------------

class StationScanner:
    """The scanner the station file names (``devices.scanner``: ``auto``, ``none`` or the start of a
    SANE device name), looked for once, in the background."""

    def __init__(self, setting: str, config_dir: str | None = None, find=scanners.find_scanners):
        self.setting = setting
        self.config_dir = config_dir  # devices.scanner_config_dir: SANE's folder, empty for the system's
        self._find = find
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._device: str | None = None
        self._looking = False
        if setting == "none":
            self._done.set()

    def _look(self) -> None:
        found = self._find(config_dir=self.config_dir)
        device = next((s.device for s in found if self.setting == "auto" or s.device.startswith(self.setting)),
                      None)
        if device is None:
            log.info("scanner: none found for devices.scanner = %r (%d listed)", self.setting, len(found))
        else:
            log.info("scanner: using %s", device)
        with self._lock:
            self._device, self._looking = device, False
            self._done.set()

    def start(self) -> None:
        """Look for the scanner now, unless that is done or under way (the wizard's start calls this, so
        the answer is in long before a citizen reaches the papers)."""
        with self._lock:
            if self._done.is_set() or self._looking:
                return
            self._looking = True
        threading.Thread(target=self._look, name="scanner-lookup", daemon=True).start()

    def device(self) -> str | None:
        """The scanner's SANE device name; None when there is none, or while the station is still looking."""
        self.start()
        return self._device if self._done.is_set() else None

    def wait(self, timeout_s: float = scanners.LIST_TIMEOUT_S + 5) -> str | None:
        """The answer, waiting for it (commands and tests)."""
        self.start()
        self._done.wait(timeout_s)
        return self.device()

    def forget(self) -> None:
        """The scanner is gone: look again when next asked."""
        with self._lock:
            if self.setting != "none" and not self._looking:
                self._device = None
                self._done.clear()


def init_app(app: Flask) -> None:
    """The app's scanner, and the larger body allowed on the page uploads. Call before the CSRF
    protection is set up: its check reads the form, and the limit must be raised before that."""
    station = app.config["STATION"]
    setting = station["devices"]["scanner"] if "scanner" in configured_sources(station) else "none"
    app.extensions["scanner"] = StationScanner(setting, station["devices"]["scanner_config_dir"] or None)
    app.before_request(_allow_page_upload)


def _allow_page_upload():
    if request.endpoint in UPLOAD_ENDPOINTS:
        request.max_content_length = UPLOAD_LIMIT


def station_scanner() -> StationScanner:
    return current_app.extensions["scanner"]


def offered() -> list[str]:
    """The sources this station offers now."""
    return sources(current_app.config["STATION"], station_scanner().device() is not None)


# --- one page ------------------------------------------------------------------------------------------

def scan(config: dict) -> pages.Page:
    """One page from the station's scanner, cleaned with the station's mode and resolution. Raises
    ScanError (the scanner's trouble) or PageError (what came back is no usable page)."""
    finder = station_scanner()
    device = finder.device()
    if device is None:
        raise ScanError("no_scanner", "no scanner found")
    settings = config["documents"]
    try:
        png = scanners.scan_page(device, resolution=settings["dpi"], mode="Gray",
                                 timeout_s=settings["scan_timeout_seconds"], config_dir=finder.config_dir)
    except ScanError as error:
        if error.code == "no_scanner":
            finder.forget()
        raise
    return pages.clean_page(png, settings["mode"], settings["dpi"])


def from_upload(upload, config: dict, find_sheet: bool = False) -> pages.Page:
    """One page from an uploaded file (a phone's photo, a file from a USB stick), read no further than
    one byte past the largest page accepted, then cleaned; a camera's photo (``find_sheet``) has the
    sheet found in it and its perspective undone. Raises PageError."""
    data = upload.stream.read(pages.MAX_BYTES + 1) if upload is not None else b""
    if len(data) > pages.MAX_BYTES:
        raise pages.PageError("too_large", f"over {pages.MAX_BYTES} bytes")
    if not data:
        raise pages.PageError("not_an_image", "an empty file")
    settings = config["documents"]
    return pages.clean_page(data, settings["mode"], settings["dpi"], find_sheet=find_sheet)


# --- the papers of a draft -------------------------------------------------------------------------------

def steps(proc: Procedure) -> list[dict]:
    """The papers the wizard asks for, one step each, in the order of the procedure's list: those to
    capture, when this station offers a way to capture them."""
    return documents.to_capture(proc) if offered() else []


def carried(conn, answers: dict) -> set[str]:
    """The papers a correction keeps from the dossier it replaces (their PDFs still at the station)."""
    old = answers.get(drafts.SUPERSEDES_KEY)
    if not old:
        return set()
    return {row["document_id"] for row in documents.of_dossier(conn, old) if row["held"]}


def first_unanswered(conn, proc: Procedure, draft_id: str, answers: dict) -> dict | None:
    """The first paper step not dealt with yet (no page, not carried, not marked not applicable)."""
    if not steps(proc):
        return None
    left = documents.unanswered(proc, answers, documents.pages_of(conn, draft_id), carried(conn, answers))
    return left[0] if left else None


def missing(conn, proc: Procedure, draft_id: str, answers: dict) -> list[dict]:
    """The required papers with no page that block submit (none when the station captures nothing)."""
    if not steps(proc):
        return []
    return documents.missing(proc, documents.pages_of(conn, draft_id), carried(conn, answers))
