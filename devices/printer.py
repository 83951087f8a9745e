"""The receipt printer: python-escpos over USB, serial, network (port 9100) or a file.

The station file chooses the connection (``[devices] printer``) and describes it (``[printer]``); see
docs/printer.md. The printer is asked for its real-time status (ESC/POS ``DLE EOT``) before an image is
sent and again after, and :func:`print_image` always comes back with a :class:`PrintOutcome` instead of
raising for device trouble: by then the dossier is already committed, so a dead printer only means the
receipt is shown on screen and staff reprint it later. A printer that is switched off or never answers
costs one short timeout; a printer that takes a job slowly is given the time its bytes need at the
slowest rate we support (:func:`job_budget_s`), and the job counts as printed once the printer has
answered the status query sent after it, which it reads only when it has worked through the whole job.
A job cut off on its way (:attr:`PrintOutcome.interrupted`) is followed by a reset, a feed and a cut at
the start of the next one (``print_image(..., recover=True)``), so the next receipt starts on fresh paper.

This module prints images; what is on them (the receipt, the test page) is kiosk/receipt_document.py's.
Statuses and outcomes are codes: the words for them are ``printer_status_<code>`` and ``print_outcome_*``
in kiosk/messages_devices.toml.
"""
import logging
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Iterator, Mapping

# python-escpos calls logging.basicConfig() when it is imported, which would make the application's
# own basicConfig() a silent no-op; take back the handler it adds.
_root_handlers = list(logging.root.handlers)
from escpos.capabilities import get_profile_class  # noqa: E402
from escpos.constants import RT_STATUS  # noqa: E402
from escpos.escpos import Escpos  # noqa: E402
from escpos.exceptions import DeviceNotFoundError  # noqa: E402
from escpos.exceptions import Error as EscposError  # noqa: E402

for _handler in [h for h in logging.root.handlers if h not in _root_handlers]:
    logging.root.removeHandler(_handler)


class PrinterSettingsError(ValueError):
    """Printer settings that cannot be used; the message names the key."""


log = logging.getLogger(__name__)

CONNECTIONS = ("auto", "network", "usb", "serial", "file", "none")
DEFAULT_TIMEOUT_S = 2.5
# A whole job (status, receipt, status) is abandoned after this long even if the printer keeps taking
# data slowly; a receipt needs 1-2 s on a fast network or USB printer, longer on a slow one or a slow
# serial line. Within it, a job is given what its bytes need (job_budget_s).
DEFAULT_JOB_TIMEOUT_S = 20.0
# The slowest printer a job is timed for, in bytes a second: a thermal printer takes raster data only as
# fast as it prints it (8-40 kB/s), and a socket's buffers hide that until the status query after the job
# waits behind the whole job. A job may take its bytes at this rate plus three exchanges (job_budget_s).
SLOWEST_RATE_BPS = 4096
# The job is written in pieces of this many bytes, each given timeout_s plus its bytes at the slowest rate.
WRITE_CHUNK = 4096
# Bit images are sent in bands of this many dot rows: small enough for the input buffer of cheap
# printers, large enough that a receipt is a handful of commands.
BAND_ROWS = 256
MIN_WIDTH_PX = 384  # 58 mm paper
# 203 dpi thermal heads print 8 dots per mm; these are the printable widths of the two common rolls.
PAPER_WIDTH_PX = {58: 384, 80: 576}


class Status(Enum):
    """What the printer said (or did not say) about itself. The value is the stable code (stored with each
    print job); the words for staff and citizens are ``printer_status_<code>`` in the messages."""

    OK = "ok"
    PAPER_LOW = "paper_low"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    OFFLINE = "offline"  # switched off, disconnected or in error
    UNCHECKED = "unchecked"  # cannot report its status
    NO_PRINTER = "no_printer"
    CONFIG_ERROR = "config_error"

    @property
    def code(self) -> str:
        return self.value

    @property
    def can_print(self) -> bool:
        return self in (Status.OK, Status.PAPER_LOW, Status.UNCHECKED)


@dataclass(frozen=True)
class PrintOutcome:
    """The result of one print job. ``ok`` is False whenever the citizen may not hold a whole receipt.

    ``sent`` says whether the job reached the printer (a receipt may then be partly printed). The words:
    printed (``print_outcome_printed``, and the status's when the paper is low), or the status's and
    ``print_outcome_on_screen``. ``interrupted``: the job was cut off on its way (the connection dropped,
    or the printer never confirmed it within the job's time): part of it may be on the paper, uncut, so
    the printer's next job should be printed with ``recover=True``.
    """

    ok: bool
    status: Status
    sent: bool = False
    interrupted: bool = False


@dataclass(frozen=True)
class PrinterSettings:
    """The ``[printer]`` table of the station file, checked, with the connection resolved."""

    connection: str  # network | usb | serial | file | none
    host: str = ""
    port: int = 9100
    usb_vendor: int = 0
    usb_product: int = 0
    usb_in_ep: int = 0x82
    usb_out_ep: int = 0x01
    serial_device: str = ""
    serial_baudrate: int = 9600
    file_path: str = ""
    profile: str = "default"
    paper_mm: int = 80
    timeout_s: float = DEFAULT_TIMEOUT_S
    job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S
    check_status: bool = True

    @property
    def width_px(self) -> int:
        """Dots across the paper: the profile's figure when it has one, else the paper's."""
        pixels = get_profile_class(self.profile).profile_data.get("media", {}).get("width", {}).get("pixels")
        return pixels if isinstance(pixels, int) else PAPER_WIDTH_PX[self.paper_mm]

    def describe(self) -> str:
        """Where the printer is, for logs and the test page (no personal data here)."""
        return {
            "network": f"network {self.host}:{self.port}",
            "usb": f"usb {self.usb_vendor:04x}:{self.usb_product:04x}",
            "serial": f"serial {self.serial_device} {self.serial_baudrate} baud",
            "file": f"file {self.file_path}",
            "none": "none",
        }[self.connection]


def _int(section: Mapping, key: str, default: int, source: str) -> int:
    value = section.get(key, default)
    try:
        return int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise PrinterSettingsError(f"{source}: printer.{key} must be a number (0x.. for hexadecimal)") from None


def _seconds(section: Mapping, key: str, default: float, source: str) -> float:
    try:
        return float(section.get(key, default))
    except (TypeError, ValueError):
        raise PrinterSettingsError(f"{source}: printer.{key} must be a number of seconds") from None


def printer_settings(config: Mapping) -> PrinterSettings:
    """Read ``[devices] printer`` and ``[printer]``; raise ``PrinterSettingsError`` naming the key that is wrong."""
    source = config.get("source", "<config>")
    connection = str((config.get("devices") or {}).get("printer", "auto"))
    section = config.get("printer") or {}
    if connection not in CONNECTIONS:
        raise PrinterSettingsError(f"{source}: devices.printer must be one of {', '.join(CONNECTIONS)}")
    if connection == "auto":
        # A connection counts as configured when its address is given, in this order.
        for kind, key in (("network", "host"), ("usb", "usb_vendor"), ("serial", "serial_device"), ("file", "file_path")):
            if section.get(key):
                connection = kind
                break
        else:
            connection = "none"
    settings = PrinterSettings(
        connection=connection,
        host=str(section.get("host", "")),
        port=_int(section, "port", 9100, source),
        usb_vendor=_int(section, "usb_vendor", 0, source),
        usb_product=_int(section, "usb_product", 0, source),
        usb_in_ep=_int(section, "usb_in_ep", 0x82, source),
        usb_out_ep=_int(section, "usb_out_ep", 0x01, source),
        serial_device=str(section.get("serial_device", "")),
        serial_baudrate=_int(section, "serial_baudrate", 9600, source),
        file_path=str(section.get("file_path", "")),
        profile=str(section.get("profile", "default")),
        paper_mm=_int(section, "paper_mm", 80, source),
        timeout_s=_seconds(section, "timeout_s", DEFAULT_TIMEOUT_S, source),
        job_timeout_s=_seconds(section, "job_timeout_s", DEFAULT_JOB_TIMEOUT_S, source),
        check_status=bool(section.get("check_status", True)),
    )
    required = {"network": "host", "usb": "usb_vendor", "serial": "serial_device", "file": "file_path"}
    if connection in required and not getattr(settings, required[connection]):
        raise PrinterSettingsError(f"{source}: devices.printer = \"{connection}\" needs printer.{required[connection]}")
    if connection == "usb" and not settings.usb_product:
        raise PrinterSettingsError(f"{source}: devices.printer = \"usb\" needs printer.usb_product")
    if not 0 < settings.port < 65536:
        raise PrinterSettingsError(f"{source}: printer.port must be a port number")
    if settings.paper_mm not in PAPER_WIDTH_PX:
        raise PrinterSettingsError(f"{source}: printer.paper_mm must be 58 or 80")
    if not 0 < settings.timeout_s <= 30:
        raise PrinterSettingsError(f"{source}: printer.timeout_s must be between 0 and 30 seconds")
    if not settings.timeout_s <= settings.job_timeout_s <= 600:
        raise PrinterSettingsError(f"{source}: printer.job_timeout_s must be between printer.timeout_s and 600 seconds")
    try:
        profile = get_profile_class(settings.profile)
    except KeyError:
        raise PrinterSettingsError(f"{source}: printer.profile \"{settings.profile}\" is not a python-escpos profile") from None
    if not profile.profile_data.get("features", {}).get("bitImageRaster", False):
        raise PrinterSettingsError(f"{source}: printer.profile \"{settings.profile}\" cannot print raster images (GS v 0)")
    if settings.width_px < MIN_WIDTH_PX:
        raise PrinterSettingsError(f"{source}: printer.profile \"{settings.profile}\" is {settings.width_px} dots wide; receipts need {MIN_WIDTH_PX}")
    return settings


def _profile(settings: PrinterSettings):
    """The python-escpos profile, with the paper width filled in when the profile does not know it
    (python-escpos reads it to refuse images that are too wide)."""
    base = get_profile_class(settings.profile)
    data = dict(base.profile_data)
    data["media"] = {**data.get("media", {}), "width": {"mm": settings.paper_mm, "pixels": settings.width_px}}
    return type(base.__name__, (base,), {"profile_data": data})()


def _network_class():
    from escpos.printer import Network

    class StationNetwork(Network):
        """python-escpos's Network, opened with ``socket.create_connection``: it closes the socket when
        the connection fails (``Network.open`` leaves it to the garbage collector) and speaks IPv6."""

        def open(self, raise_not_found: bool = True) -> None:
            if self._device:
                self.close()
            try:
                self.device = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as exc:
                self.device = None
                if raise_not_found:
                    raise DeviceNotFoundError(f"Could not open socket for {self.host}:{self.port}: {exc}") from exc

    return StationNetwork


def open_printer(config: Mapping) -> Escpos | None:
    """An open python-escpos printer for the station, or ``None`` when the station has none.

    Raises ``PrinterSettingsError`` for wrong settings and the driver's exceptions (``escpos.exceptions.Error``,
    ``OSError``) when the device cannot be opened; :func:`print_image` turns those into outcomes.
    """
    return _open(printer_settings(config))


def _open(settings: PrinterSettings) -> Escpos | None:
    if settings.connection == "none":
        return None
    if settings.connection == "network":
        printer = _network_class()(settings.host, settings.port, timeout=settings.timeout_s)
    elif settings.connection == "usb":
        from escpos.printer import Usb

        if not Usb.is_usable():
            raise PrinterSettingsError("a USB printer needs pyusb (pip install 'python-escpos[usb]') and libusb-1.0-0")
        printer = Usb(
            settings.usb_vendor,
            settings.usb_product,
            timeout=int(settings.timeout_s * 1000),  # pyusb counts milliseconds; 0 would wait forever
            in_ep=settings.usb_in_ep,
            out_ep=settings.usb_out_ep,
        )
    elif settings.connection == "serial":
        from escpos.printer import Serial

        if not Serial.is_usable():
            raise PrinterSettingsError("a serial printer needs pyserial (pip install 'python-escpos[serial]')")
        printer = Serial(settings.serial_device, settings.serial_baudrate, timeout=settings.timeout_s)
    else:
        from escpos.printer import File

        printer = File(settings.file_path)
    printer.profile = _profile(settings)
    printer.open()
    if settings.connection == "network":
        # A 3-byte status query after a large job would otherwise wait for a delayed ACK (Nagle).
        printer.device.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if settings.connection == "serial":
        # Without a write timeout, hardware flow control could block forever; with one too short, a band of
        # the image (BAND_ROWS rows) could not get through a slow line: allow twice its time on the wire.
        band_bytes = BAND_ROWS * settings.width_px // 8
        printer.device.write_timeout = settings.timeout_s + 2 * band_bytes * 10 / settings.serial_baudrate
    return printer


def slowest_rate_bps(settings: PrinterSettings) -> float:
    """The rate a job is timed for: ``SLOWEST_RATE_BPS``, or a serial line's own if that is slower."""
    if settings.connection == "serial":
        return min(SLOWEST_RATE_BPS, settings.serial_baudrate / 10)  # 10 bits a byte on the wire
    return SLOWEST_RATE_BPS


def job_budget_s(settings: PrinterSettings, job_bytes: int) -> float:
    """How long a job of ``job_bytes`` may take in all, from connecting to the printer's answer after it:
    a floor of three exchanges of ``timeout_s`` (connect, the status before, the status after) plus its
    bytes at the slowest rate, capped by ``job_timeout_s``."""
    return min(settings.job_timeout_s, 3 * settings.timeout_s + job_bytes / slowest_rate_bps(settings))


class _JobClock:
    """The time limits of one connection to the printer, set on every read and write of ``printer``.

    A write may take ``timeout_s`` plus its bytes at the slowest rate; a read ``timeout_s``, except the one
    after ``drain`` is set: the answer to a status query sent after a job comes only once the printer has
    worked through the whole job (it reads its input in order, and a slow printer leaves much of the job in
    the sockets' buffers), so that read may wait until the job's deadline. Nothing goes on after the
    deadline. Network, USB and serial steps are cut to their limit; file steps are checked before they
    start."""

    def __init__(self, printer: Escpos, settings: PrinterSettings, deadline: float, budget_s: float):
        self.printer, self.settings = printer, settings
        self.deadline, self.budget_s = deadline, budget_s
        self.drain = False
        raw, read = printer._raw, printer._read

        def bounded_raw(msg: bytes) -> None:
            self._limit(settings.timeout_s + len(msg) / slowest_rate_bps(settings))
            raw(msg)

        def bounded_read() -> bytes:
            wait = self.left() if self.drain else settings.timeout_s
            self.drain = False
            self._limit(wait)
            return read()

        printer._raw, printer._read = bounded_raw, bounded_read

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the print job took longer than {self.budget_s:.1f} s")
        return left

    def _limit(self, step_s: float) -> None:
        seconds = min(step_s, self.left())
        device = self.printer.device
        if self.settings.connection == "network":
            device.settimeout(seconds)
        elif self.settings.connection == "usb":
            self.printer.timeout = max(1, int(seconds * 1000))  # writes; pyusb counts milliseconds
            if hasattr(device, "default_timeout"):
                device.default_timeout = self.printer.timeout  # reads
        elif self.settings.connection == "serial":
            device.timeout = seconds
            device.write_timeout = seconds


@contextmanager
def _connected(settings: PrinterSettings, budget_s: float | None = None) -> Iterator[tuple[Escpos | None, _JobClock | None]]:
    budget = settings.job_timeout_s if budget_s is None else budget_s
    deadline = time.monotonic() + budget
    printer = _open(settings)
    clock = _JobClock(printer, settings, deadline, budget) if printer is not None else None
    try:
        yield printer, clock
    finally:
        if printer is not None:
            try:
                printer.close()
            except Exception:  # closing a dead connection must not hide what happened before
                log.debug("closing the printer failed", exc_info=True)


# Exceptions that mean "the device is in trouble", as opposed to a bug in this code.
DEVICE_ERRORS: tuple[type[BaseException], ...] = (OSError, EscposError, EOFError)
try:
    import serial

    DEVICE_ERRORS += (serial.SerialException,)
except ImportError:  # pyserial is only needed for serial printers
    pass
try:
    import usb.core

    DEVICE_ERRORS += (usb.core.NoBackendError,)  # libusb is not installed: no USB printer can be found
except ImportError:  # pyusb is only needed for USB printers
    pass

# DLE EOT n: n=1 printer status, n=2 offline cause, n=4 roll paper sensor. Every answer byte has bits
# 1 and 4 set and bits 0 and 7 clear, which tells a status byte from stray data.
STATUS_PRINTER, STATUS_OFFLINE_CAUSE, STATUS_PAPER = 1, 2, 4
OFFLINE_BIT = 0x08
COVER_OPEN_BIT = 0x04
PAPER_END_STOP_BIT = 0x20
PAPER_NEAR_END_BITS = 0x0C
PAPER_END_BITS = 0x60


class _NoAnswer(Exception):
    """The printer did not answer a status query, or answered with something that is not a status."""


def _query(printer: Escpos, n: int) -> int:
    answer = printer.query_status(RT_STATUS + bytes([n]))
    if not answer:
        raise _NoAnswer(f"no answer to DLE EOT {n}")
    byte = answer[-1]  # anything before the last byte is a stale answer
    if byte & 0x93 != 0x12:
        raise _NoAnswer(f"DLE EOT {n} answered 0x{byte:02x}, which is not a status byte")
    return byte


def _read_status(printer: Escpos, settings: PrinterSettings, strict: bool = False) -> Status:
    """Ask the printer what state it is in (DLE EOT 1, 4 and, when offline, 2). No answer is ``OFFLINE``,
    or, when ``strict``, raises (``_NoAnswer``, ``TimeoutError``): after a job it means the job was cut off."""
    if not settings.check_status or type(printer)._read is Escpos._read:
        return Status.UNCHECKED  # turned off, or a connection that cannot read (a file)
    try:
        printer_byte = _query(printer, STATUS_PRINTER)
        paper_byte = _query(printer, STATUS_PAPER)
        cause_byte = _query(printer, STATUS_OFFLINE_CAUSE) if printer_byte & OFFLINE_BIT else 0
    except (_NoAnswer, socket.timeout) as exc:
        if strict:
            raise
        log.warning("printer %s: %s", settings.describe(), exc or "status query timed out")
        return Status.OFFLINE
    if cause_byte & COVER_OPEN_BIT:
        return Status.COVER_OPEN
    if paper_byte & PAPER_END_BITS or cause_byte & PAPER_END_STOP_BIT:
        return Status.PAPER_OUT
    if printer_byte & OFFLINE_BIT:
        return Status.OFFLINE
    if paper_byte & PAPER_NEAR_END_BITS:
        return Status.PAPER_LOW
    return Status.OK


def printer_status(config: Mapping) -> Status:
    """The printer's state now; never raises for device trouble."""
    try:
        settings = printer_settings(config)
    except PrinterSettingsError as exc:
        log.error("%s", exc)
        return Status.CONFIG_ERROR
    try:
        with _connected(settings) as (printer, _clock):
            if printer is None:
                return Status.NO_PRINTER
            return _read_status(printer, settings)
    except PrinterSettingsError as exc:
        log.error("printer %s: %s", settings.describe(), exc)
        return Status.CONFIG_ERROR
    except DEVICE_ERRORS as exc:
        log.warning("printer %s: %s", settings.describe(), type(exc).__name__)
        return Status.OFFLINE


def send_image(printer: Escpos, image) -> None:
    """One job: reset, the image as GS v 0 raster bands, feed and cut."""
    printer.hw("INIT")
    printer.image(image, impl="bitImageRaster", fragment_height=BAND_ROWS)
    printer.cut()


def send_recovery(printer: Escpos) -> None:
    """After a job that was cut off: reset (ESC @), feed the half-printed part past the cutter and cut
    (only feed, on a printer without a cutter), so the next job starts on fresh paper."""
    printer.hw("INIT")
    printer.cut()


def job_bytes(settings: PrinterSettings, image, recover: bool = False) -> bytes:
    """The bytes of one job for this printer (its profile), the recovery first when ``recover``."""
    from escpos.printer import Dummy

    dummy = Dummy()
    dummy.profile = _profile(settings)
    if recover:
        send_recovery(dummy)
    send_image(dummy, image)
    return dummy.output


def _failed(status: Status, sent: bool) -> PrintOutcome:
    return PrintOutcome(ok=False, status=status, sent=sent)


def _printed(status: Status) -> PrintOutcome:
    return PrintOutcome(ok=True, status=status, sent=True)


def usable_settings(config: Mapping) -> tuple[PrinterSettings | None, PrintOutcome | None]:
    """The printer settings, or the outcome to give when there is no printer to print on (so that a caller
    can learn the paper's width before it composes the image)."""
    try:
        settings = printer_settings(config)
    except PrinterSettingsError as exc:
        log.error("%s", exc)
        return None, _failed(Status.CONFIG_ERROR, sent=False)
    if settings.connection == "none":
        return None, _failed(Status.NO_PRINTER, sent=False)
    return settings, None


def _await_end(printer: Escpos, settings: PrinterSettings, clock: _JobClock) -> Status:
    """A network printer that is not asked for its status: say the job is over (shut the sending side)
    and wait, within the job's time, for the printer to close its side, which it does once it has read
    the whole job. A printer that keeps the connection open is let be (the job stays "unchecked"); one
    that resets it cut the job off (raises)."""
    printer.device.shutdown(socket.SHUT_WR)
    while True:
        clock.drain = True
        try:
            if not printer._read():
                return Status.UNCHECKED
        except TimeoutError:
            log.info("printer %s: did not close the connection within the job's time", settings.describe())
            return Status.UNCHECKED


def print_image(config: Mapping, image, label: str = "image", recover: bool = False) -> PrintOutcome:
    """Print a 1-bit image as one job, checking the printer before and after. Never raises for device
    trouble. ``label`` names the job in the log; it must not contain personal data.

    The job may take what its bytes need (:func:`job_budget_s`); it has printed when the printer answers
    the status query sent after it. ``recover``: the printer's last job was cut off (its outcome was
    ``interrupted``), so this one starts with a reset, a feed and a cut."""
    settings, refusal = usable_settings(config)
    if refusal is not None:
        return refusal
    job = job_bytes(settings, image, recover)
    sent, written = False, 0
    try:
        with _connected(settings, job_budget_s(settings, len(job))) as (printer, clock):
            before = _read_status(printer, settings)
            if not before.can_print:
                log.warning("printer %s: %s, %s not printed", settings.describe(), before.code, label)
                return _failed(before, sent=False)
            sent = True  # from here on, part of the job may have reached the paper
            for start in range(0, len(job), WRITE_CHUNK):
                piece = job[start:start + WRITE_CHUNK]
                printer._raw(piece)
                written += len(piece)
            if settings.connection == "network" and not settings.check_status:
                after = _await_end(printer, settings, clock)
            else:
                clock.drain = True  # the answer comes once the printer has worked through the job
                after = _read_status(printer, settings, strict=True)
    except PrinterSettingsError as exc:
        log.error("printer %s: %s", settings.describe(), exc)
        return _failed(Status.CONFIG_ERROR, sent=False)
    except (_NoAnswer, *DEVICE_ERRORS) as exc:
        if not sent:
            log.warning("printer %s: %s while printing %s", settings.describe(), type(exc).__name__, label)
            return _failed(Status.OFFLINE, sent=False)
        log.warning("printer %s: %s while printing %s, %d of %d bytes written; the job was cut off, the next "
                    "one starts with a reset, a feed and a cut", settings.describe(), type(exc).__name__, label,
                    written, len(job))
        return PrintOutcome(ok=False, status=Status.OFFLINE, sent=True, interrupted=True)
    if not after.can_print:
        log.warning("printer %s: %s after printing %s", settings.describe(), after.code, label)
        return _failed(after, sent=True)
    log.info("printer %s: printed %s (%s)", settings.describe(), label, after.code)
    return _printed(after)
