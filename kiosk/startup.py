"""What a station checks before it serves anyone, in one place: ``create_app`` runs it at start and
``kiosk check`` runs the same function, so the check refuses exactly what ``kiosk serve`` refuses.

Top of the layers (beside kiosk.app): it reads the core's station file and catalog and the devices' own
settings (printer, payment account), which import nothing of the project and raise their own errors.
One check warns instead of refusing: dossiers still waiting to be sent under another station id than the
station file's (``check_station_id``), logged at start, printed by ``kiosk check`` and shown to staff.
"""
import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from devices.printer import PrinterSettings, PrinterSettingsError, printer_settings
from devices.vietqr import PaymentAccount, payment_account

from .core import outbox
from .core.catalog import Procedure
from .core.config import ConfigError


@dataclass(frozen=True)
class StartChecks:
    """What the checks read, so the app does not read it again."""

    catalog: dict[str, Procedure]
    printer: PrinterSettings
    payment: PaymentAccount | None
    # The live catalog release (sync/catalog_release.py: number, created_at, ...), None before any; and a
    # stored release that no longer passes the checks (then paths.procedures is served), in words.
    release: dict | None = None
    release_problem: str | None = None


def start_checks(station: dict, catalog: dict[str, Procedure] | None = None) -> StartChecks:
    """Every check made before serving, in the order ``create_app`` meets them: the station file (the
    schema, the time zone, the card settings: checked by ``load_station``, which made ``station``), the
    procedure catalog, the printer settings, the payment account. Raises ConfigError (or CatalogError)
    with one line naming the file and the key.

    ``station`` is what ``load_station`` returned; ``catalog``, when the caller has loaded it already (the
    live catalog: ``live_catalog``), is not loaded again.
    """
    release = problem = None
    if catalog is None:
        live = live_catalog(station)
        catalog, release, problem = live.catalog, live.info, live.problem
    source = station.get("source", "<config>")
    try:
        printer = printer_settings(station)
    except PrinterSettingsError as exc:  # its message names the file and the key already
        raise ConfigError(str(exc)) from None
    try:
        payment = payment_account(station)
    except ValueError as exc:
        raise ConfigError(f"{source}: payment: {exc}") from None
    return StartChecks(catalog, printer, payment, release, problem)


def live_catalog(station: dict):
    """The catalogs the station serves (sync/catalog_release.py LiveCatalog): the live catalog release in
    the data folder, checked as a release is checked on arrival, else ``paths.procedures``, which is loaded
    and checked always (CatalogError names the file and the field). A stored release that fails is not
    served: the station starts on paths.procedures and says why (``problem``)."""
    from sync.catalog_release import LiveCatalog

    return LiveCatalog(station, station["paths"]["data"])


@dataclass(frozen=True)
class StationMismatch:
    """Dossiers waiting to be sent that were made under another station id than the station file's: the
    central refuses each of them (``station_mismatch``), since a station signs only for its own id."""

    current: str
    others: dict[str, int]  # the other station id -> how many of its dossiers wait

    @property
    def count(self) -> int:
        return sum(self.others.values())

    @property
    def old_ids(self) -> list[str]:
        return sorted(self.others)

    def log_line(self) -> str:
        """What `kiosk serve` logs at start and `kiosk check` prints: ids and counts, no personal data."""
        return (f"station id is {self.current} but {self.count} dossier(s) waiting to be sent were made under "
                f"station id {', '.join(self.old_ids)}: the central will refuse them (station_mismatch). Put the "
                "old station id back in the station file and restart, send or export them (kiosk sync export), "
                "then change the id (docs/station.md)")


def station_mismatch(conn: sqlite3.Connection, station_id: str) -> StationMismatch | None:
    """The dossiers waiting to be sent under another id than ``station_id`` (one indexed query over the
    pending rows: the staff bar asks on every staff page), or None."""
    others = {sid: n for sid, n in outbox.pending_station_ids(conn).items() if sid != station_id}
    return StationMismatch(station_id, others) if others else None


def check_station_id(station: dict, database: str | Path) -> StationMismatch | None:
    """The start check for a re-identified station: a warning, not a refusal (the dossiers are safe here;
    staff decide). Reads the database read-only, so `kiosk check` changes nothing; a missing or unreadable
    database is left to the health check."""
    database = Path(database)
    if not database.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True,
                                                timeout=10)) as conn:
            return station_mismatch(conn, station["station"]["id"])
    except sqlite3.Error:
        return None
