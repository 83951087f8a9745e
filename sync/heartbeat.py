"""The station's heartbeat: a small signed JSON the sync worker sends the central once per cycle (at most
every ``[sync] heartbeat_seconds``, at once when a device changed), so the central's fleet page can show
which stations need someone (docs/fleet.md).

``POST /api/v1/stations/{id}/heartbeat`` carries ``dvc-station-heartbeat/1``: flat, every key required, no
other key allowed (``problem`` is the one check, run by the central), each value a code, a number, a
version or a time. Nothing in it names a citizen or a dossier. The central answers with a signed
``dvc-central-heartbeat/1`` naming the station and the sha256 of the body it kept.

Where each value comes from, in the worker's own process: the printer's state and the card reader from
the web app's ``device-state.json`` (kiosk/device_state.py writes it: the worker cannot ask the printer the
web app prints on), the outbox from the core's outbox functions, the free disk from the data folder, the
clock offset from the central's last answer (its Date header), the last successful sync from the worker.
A heartbeat that fails is not a sync failure: it is logged and sent again next cycle.
"""
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from kiosk.core import outbox

from . import protocol
from .client import LinkError

log = logging.getLogger("dvc.sync")

HEARTBEAT = "dvc-station-heartbeat/1"
HEARTBEAT_ACK = "dvc-central-heartbeat/1"
MAX_HEARTBEAT_BYTES = 4096
DEVICE_STATE_FILE = "device-state.json"  # kiosk/device_state.py's FILE_NAME (sync does not import the web app)
DEVICE_STATE_FORMAT = "dvc-device-state/1"
# devices.printer.Status codes (tests/test_station_health_central.py checks the two agree).
PRINTER_STATUSES = ("ok", "paper_low", "paper_out", "cover_open", "offline", "unchecked", "no_printer",
                    "config_error")
KINDS = ("kiosk", "counter", "mobile")
PAPER = {"ok": "ok", "paper_low": "low", "paper_out": "out"}  # else "unknown"

_TIME, _TEXT, _BOOL, _NUMBER, _COUNT = "time", "text", "bool", "number", "count"
# key: (kind of value, may be null, upper bound: characters for text, value for numbers)
FIELDS = {
    "type": (_TEXT, False, 40), "station_id": (_TEXT, False, 6), "sent_at": (_TIME, False, 40),
    "kind": (_TEXT, False, 10), "province": (_TEXT, False, 100), "software": (_TEXT, False, 40),
    "catalog": (_TEXT, True, 64), "devices_at": (_TIME, True, 40),
    "printer": (_TEXT, True, 20), "paper": (_TEXT, False, 10),
    "card_reader_expected": (_BOOL, False, None), "card_reader": (_BOOL, True, None),
    "outbox_pending": (_COUNT, False, 10_000_000), "outbox_oldest_at": (_TIME, True, 40),
    "outbox_oldest_age_s": (_COUNT, True, 10 * 365 * 86400),
    "disk_free_mb": (_NUMBER, True, 1e9), "clock_offset_s": (_NUMBER, True, 1e9),
    "last_sync_at": (_TIME, True, 40),
}


def _time(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def problem(doc, station_id: str) -> str | None:
    """What is wrong with a heartbeat for ``station_id`` (the one that signed it), or None. Unknown keys,
    missing keys, wrong types and values past their bounds are all refused, so nothing else rides along."""
    if not isinstance(doc, dict):
        return "not_object: the heartbeat is not a JSON object"
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        return f"unknown_key: {unknown[0][:40]!r} is not a heartbeat key"
    missing = sorted(set(FIELDS) - set(doc))
    if missing:
        return f"missing_key: the heartbeat has no {missing[0]}"
    for key, (kind, nullable, bound) in FIELDS.items():
        value = doc[key]
        if value is None:
            if nullable:
                continue
            return f"bad_value: {key} may not be null"
        if kind in (_TEXT, _TIME):
            ok = isinstance(value, str) and len(value) <= bound and value.isprintable() and (kind == _TEXT or _time(value))
        elif kind == _BOOL:
            ok = isinstance(value, bool)
        elif kind == _COUNT:
            ok = type(value) is int and 0 <= value <= bound
        else:
            ok = type(value) in (int, float) and abs(value) <= bound and value == value  # not NaN
        if not ok:
            return f"bad_value: {key}"
    if doc["type"] != HEARTBEAT:
        return f"bad_type: not a {HEARTBEAT}"
    if doc["station_id"] != station_id:
        return "station_mismatch: the heartbeat names another station than the one that signed it"
    if doc["kind"] not in KINDS:
        return "bad_value: kind"
    if doc["printer"] is not None and doc["printer"] not in PRINTER_STATUSES:
        return "bad_value: printer"
    if doc["paper"] not in ("ok", "low", "out", "unknown"):
        return "bad_value: paper"
    return None


def read_device_state(folder: Path) -> dict | None:
    try:
        data = protocol.parse_json((Path(folder) / DEVICE_STATE_FILE).read_bytes(), 64 * 1024)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == DEVICE_STATE_FORMAT else None


def _disk_free_mb(folder: Path) -> float | None:
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return round(stat.f_bavail * stat.f_frsize / (1024 * 1024), 1)


def _text(value, bound: int) -> str | None:
    return value[:bound] if isinstance(value, str) and value.isprintable() else None


class Heartbeat:
    """Builds and sends one station's heartbeat (``send(worker)`` once per cycle)."""

    def __init__(self, station: dict, database: Path, every_s: float | None = None):
        self.station_id = station["station"]["id"]
        self.kind = station["station"]["kind"]
        self.province = station["station"].get("province", "")
        self.folder = Path(database).parent
        self.every_s = float(station.get("sync", {}).get("heartbeat_seconds", 60) if every_s is None else every_s)
        self._sent_mono: float | None = None
        self._sent_devices: tuple | None = None
        self._not_before = 0.0  # an older central without the endpoint: asked again an hour later
        self.last_answer: dict | None = None

    def build(self, conn, client, last_sync_at: str | None, now: datetime | None = None) -> dict:
        now = now or datetime.now(timezone.utc)
        devices = read_device_state(self.folder) or {}
        printer = devices.get("printer") if devices.get("printer") in PRINTER_STATUSES else None
        oldest, age = outbox.oldest_pending(conn), None
        if oldest:
            since = datetime.fromisoformat(oldest)
            since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
            oldest, age = since.isoformat(timespec="seconds"), max(0, int((now - since).total_seconds()))
        central_now = client.central_time()
        reader = devices.get("card_reader")
        devices_at = devices.get("at") if isinstance(devices.get("at"), str) and _time(devices["at"]) else None
        return {
            "type": HEARTBEAT, "station_id": self.station_id, "sent_at": now.isoformat(timespec="seconds"),
            "kind": self.kind, "province": self.province,
            "software": _text(devices.get("software"), 40) or "unknown",
            "catalog": _text(devices.get("catalog"), 64), "devices_at": devices_at,
            "printer": printer, "paper": PAPER.get(printer, "unknown"),
            "card_reader_expected": devices.get("card_reader_expected") is not False,
            "card_reader": reader if isinstance(reader, bool) else None,
            "outbox_pending": outbox.pending_count(conn), "outbox_oldest_at": oldest, "outbox_oldest_age_s": age,
            "disk_free_mb": _disk_free_mb(self.folder),
            "clock_offset_s": round(time.time() - central_now, 1) if central_now is not None else None,
            "last_sync_at": last_sync_at,
        }

    def due(self, doc: dict) -> bool:
        """The first one, then every ``every_s`` seconds, and at once when a device's state changed."""
        if time.monotonic() < self._not_before:
            return False
        if self._sent_mono is None or _devices(doc) != self._sent_devices:
            return True
        return time.monotonic() - self._sent_mono >= self.every_s

    def send(self, worker) -> int:
        """Send this cycle's heartbeat when due; 1 when the central kept it, else 0 (never raises for the
        link: a heartbeat is news, not a dossier)."""
        from .worker import sync_state

        doc = self.build(worker.conn, worker.client, sync_state(worker.conn).get("last_success"))
        if not self.due(doc):
            return 0
        body = protocol.canonical_json(doc)
        try:
            resp = worker.client.request("POST", f"/api/v1/stations/{self.station_id}/heartbeat", body)
            if resp.status in (404, 405):
                self._not_before = time.monotonic() + 3600
                log.info("sync: the central takes no heartbeat (HTTP %d); asking again in an hour", resp.status)
                return 0
            if resp.status != 200:
                log.warning("sync: heartbeat refused: HTTP %d %s", resp.status, resp.body[:200].decode("utf-8", "replace"))
                return 0
            answer = protocol.open_document(worker.client.central_key, resp.body, HEARTBEAT_ACK)
        except (LinkError, protocol.NotGenuine) as exc:
            log.info("sync: heartbeat not sent (%s)", exc)
            return 0
        if answer.get("station_id") != self.station_id or answer.get("heartbeat_sha256") != protocol.sha256_hex(body):
            log.info("sync: a heartbeat answer about another heartbeat")
            return 0
        self._sent_mono, self._sent_devices, self.last_answer = time.monotonic(), _devices(doc), answer
        return 1


def _devices(doc: dict) -> tuple:
    return doc["printer"], doc["card_reader"], doc["software"], doc["catalog"]
