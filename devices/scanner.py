"""The document scanner: SANE's ``scanimage`` command (Debian package ``sane-utils``), no Python binding.

:func:`find_scanners` lists the scanners SANE sees (``scanimage --formatted-device-list``);
:func:`scan_page` scans one A4 page and returns it as PNG bytes. Device trouble is never a traceback:
``scan_page`` raises :class:`ScanError`, whose ``code`` is one of :data:`CODES`, and nothing else; the
words for a code are ``scanner_error_<code>`` in kiosk/messages_devices.toml (kiosk/device_words.py,
``scanner_status``). A scanner that takes longer than ``timeout_s`` is killed and gives ``timeout``.

How a code is found: ``scanimage`` exits with the SANE status of the call that failed (``sane_start`` or
``sane_read``) and prints that status's words on stderr; it runs under ``LC_ALL=C`` so the words are
SANE's English ones whatever the station's language. See docs/scanner.md.

The pages a citizen scans are personal data: they are returned, never written to disk or to the log,
and a ScanError carries its code and scanimage's last status line, never image data.
"""
import logging
import os
import re
import signal
import struct
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

SCANIMAGE = "scanimage"
DEFAULT_TIMEOUT_S = 90.0  # one A4 page at 300 dpi takes 5-30 s on a USB flatbed or feeder
LIST_TIMEOUT_S = 20.0  # scanimage -L probes every backend (USB, network), which can take a while
A4_MM = (210, 297)
# A page narrower or shorter than the area asked for by more than this share (or this many pixels, for
# small scans) is a broken scan, not a page.
SIZE_TOLERANCE = 0.02
SIZE_TOLERANCE_PX = 16

CODES = ("no_scanner", "no_paper", "jammed", "cover_open", "busy", "timeout", "failed")

# scanimage's exit status is the SANE_Status of the sane_start/sane_read that failed.
_EXIT_STATUS = {3: "busy", 6: "jammed", 7: "no_paper", 8: "cover_open"}
# SANE's status words (sane_strstatus) as scanimage prints them, and its own messages; first match wins.
_STDERR_WORDS = (
    ("Document feeder out of documents", "no_paper"),
    ("Document feeder jammed", "jammed"),
    ("Scanner cover is open", "cover_open"),
    ("Device busy", "busy"),
    ("no SANE devices found", "no_scanner"),
    ("open of device", "no_scanner"),  # unplugged, switched off or a wrong device name
)
_ROUNDED = re.compile(r"rounded value of br-([xy]) from [\d.]+ to ([\d.]+)")


class ScanError(Exception):
    """A page could not be scanned. ``code`` is one of :data:`CODES`; ``detail`` is scanimage's last
    status line (device and SANE words only), for the log."""

    def __init__(self, code: str, detail: str = ""):
        assert code in CODES, code
        super().__init__(code)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Scanner:
    """One scanner SANE sees: ``device`` is the name to give :func:`scan_page` (``backend:address``)."""

    device: str
    vendor: str
    model: str
    kind: str


def _env(config_dir: str | None = None) -> dict:
    env = dict(os.environ)
    env["LC_ALL"] = "C"  # SANE's status words in English, to match them
    env.pop("LANGUAGE", None)
    if config_dir:  # SANE's own folder of backends and their settings (the simulated scanner's)
        env["SANE_CONFIG_DIR"] = str(config_dir)
    return env


def _run(args: list[str], timeout_s: float, config_dir: str | None = None) -> tuple[int, bytes, str]:
    """Run scanimage; kill it (and wait for it) when it outlives ``timeout_s``. Raises ScanError."""
    try:
        proc = subprocess.Popen([SCANIMAGE, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_env(config_dir), start_new_session=True)
    except OSError as exc:
        log.error("scanner: cannot run %s (%s); install sane-utils", SCANIMAGE, type(exc).__name__)
        raise ScanError("no_scanner", f"{SCANIMAGE} not found") from None
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # Its own process group: some backends fork a reader process, which goes with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.communicate()  # reap it: no scanimage is left behind
        raise ScanError("timeout", f"no page within {timeout_s:g} s") from None
    return proc.returncode, out, err.decode("utf-8", "replace")


def _code_of(returncode: int, stderr: str) -> str:
    for words, code in _STDERR_WORDS:
        if words in stderr:
            return code
    return _EXIT_STATUS.get(returncode, "failed")


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and "rounded value" not in line]
    return lines[-1].strip()[:200] if lines else ""


def find_scanners(timeout_s: float = LIST_TIMEOUT_S, config_dir: str | None = None) -> list[Scanner]:
    """The scanners SANE sees, in its order; an empty list when there are none or scanimage fails."""
    try:
        returncode, out, err = _run(["--formatted-device-list=%d\t%v\t%m\t%t%n"], timeout_s, config_dir)
    except ScanError as exc:
        log.warning("scanner: listing failed (%s)", exc.code)
        return []
    if returncode != 0:
        log.warning("scanner: listing failed (exit %s: %s)", returncode, _last_line(err))
        return []
    scanners = []
    for line in out.decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0]:
            scanners.append(Scanner(*fields))
    return scanners


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's header, or None when ``data`` is no PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def expected_size(resolution: int, area_mm: tuple[float, float] = A4_MM) -> tuple[int, int]:
    """The pixels of ``area_mm`` at ``resolution`` dpi (whole pixels: backends drop the part of one)."""
    return tuple(int(mm / 25.4 * resolution) for mm in area_mm)


def _short(got: int, want: int) -> bool:
    return want - got > max(SIZE_TOLERANCE_PX, want * SIZE_TOLERANCE)


def scan_page(device: str | None = None, resolution: int = 300, mode: str = "Gray",
              timeout_s: float = DEFAULT_TIMEOUT_S, source: str | None = None,
              config_dir: str | None = None) -> bytes:
    """Scan one A4 page (from the top left corner) and return it as PNG bytes.

    ``device``: a :attr:`Scanner.device` (None: the first scanner SANE lists). ``mode``: the backend's
    word (``Gray``, ``Color``, ``Lineart``). ``source``: the backend's word for the feeder or the glass
    (``Flatbed``, ``Automatic Document Feeder``), or None for the scanner's default. A scanner whose glass
    is smaller than A4 scans what it has. ``config_dir``: a SANE configuration folder instead of the
    system's (the simulated scanner's, kiosk/simulated_devices.py). Raises :class:`ScanError` and nothing else."""
    if device is None:
        scanners = find_scanners(config_dir=config_dir)
        if not scanners:
            raise ScanError("no_scanner", "no SANE devices found")
        device = scanners[0].device
    args = [f"--device-name={device}", "--format=png", f"--resolution={int(resolution)}", f"--mode={mode}",
            "-l", "0", "-t", "0", "-x", str(A4_MM[0]), "-y", str(A4_MM[1])]
    if source:
        args.append(f"--source={source}")
    returncode, out, err = _run(args, timeout_s, config_dir)
    if returncode != 0:
        code = _code_of(returncode, err)
        detail = _last_line(err) or f"exit status {returncode}"
        log.warning("scanner %s: %s (%s)", device, code, detail)
        raise ScanError(code, detail)
    size = png_size(out)
    if size is None:
        log.warning("scanner %s: no image came back (%d bytes)", device, len(out))
        raise ScanError("failed", "no image")
    area = dict(zip("xy", A4_MM))
    for axis, mm in _ROUNDED.findall(err):  # the scanner's glass is smaller than A4
        area[axis] = min(area[axis], float(mm))
    want = expected_size(resolution, (area["x"], area["y"]))
    if _short(size[0], want[0]) or _short(size[1], want[1]):
        log.warning("scanner %s: a broken page, %dx%d pixels where %dx%d were asked for", device, *size, *want)
        raise ScanError("failed", f"{size[0]}x{size[1]} pixels, not {want[0]}x{want[1]}")
    log.info("scanner %s: scanned a page, %dx%d pixels at %d dpi", device, *size, resolution)
    return out
