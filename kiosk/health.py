"""The station's own health: one self-check shared by `kiosk serve` (at start, then from requests at most
every 30 s), `kiosk check` and the sync worker's `kiosk sync run` (at start).

A station whose storage is failing must not let a citizen start an application it cannot save. The check
looks at what a submit needs: a data folder it can write (a file is made and deleted), free space above
``[health] reserve_mb`` (measured, tests/test_station_health.py: answering an application writes about
85 KB to the WAL and its submit with the receipt record about 70 KB; the reserve is far above it so every
draft in progress can still finish), a database whose pages read back (``PRAGMA
quick_check``; ``integrity_check`` on demand), keys it can read, and a clock not behind what the station
has already written. Any failure makes the state ``paused``: the kiosk stops new applications, staff see
the reason and the fix, the log says exactly what is wrong (docs/operations.md).

A service (docs/architecture.md): it reads the core's tables only through the owners' functions.
"""
import contextlib
import errno
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import click

from .core import db as station_db
from .core import outbox

log = logging.getLogger("kiosk.health")

# This release was built after this moment: a clock before it is wrong whatever the database says.
CLOCK_FLOOR = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLOCK_SLACK_S = 300  # the database file may be a little ahead of a clock that was just corrected
PROBE = ".health-probe"
LIGHT_EVERY_S = 30     # folder, free space, keys, clock: a few system calls
HEAVY_EVERY_S = 600    # quick_check and the WAL checkpoint (TRUNCATE)

# The reasons, each a code whose words (Vietnamese and English) are in messages_agent.toml as
# health_<code> (what is wrong) and health_<code>_fix (what to do).
CODES = ("disk_low", "folder_read_only", "database_damaged", "database_unreadable", "key_unreadable", "clock_wrong")


@dataclass(frozen=True)
class Reason:
    code: str
    detail: str  # the log line: exactly what is wrong, in English, with numbers; no personal data


@dataclass
class Health:
    reasons: list[Reason] = field(default_factory=list)
    free_mb: float | None = None
    reserve_mb: int = 0
    wal_bytes: int = 0
    checked_at: float = 0.0

    @property
    def state(self) -> str:
        return "paused" if self.reasons else "ok"

    @property
    def paused(self) -> bool:
        return bool(self.reasons)

    @property
    def codes(self) -> list[str]:
        return [reason.code for reason in self.reasons]

    def blocking(self, ignore: tuple[str, ...] = ()) -> list[Reason]:
        return [reason for reason in self.reasons if reason.code not in ignore]


def reserve_mb(station: dict) -> int:
    return station.get("health", {}).get("reserve_mb", 50)


def _mb(n_bytes: float) -> float:
    return n_bytes / (1024 * 1024)


def _writable(folder: Path) -> Reason | None:
    probe = folder / PROBE
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        if exc.errno == errno.ENOSPC:  # the free-space check says it better
            return None
        return Reason("folder_read_only", f"data folder cannot be written: {folder}: {exc.strerror or exc}")
    return None


def _free(folder: Path, reserve: int) -> tuple[float | None, Reason | None]:
    try:
        stat = os.statvfs(folder)
    except OSError as exc:
        return None, Reason("folder_read_only", f"data folder cannot be read: {folder}: {exc.strerror or exc}")
    free = _mb(stat.f_bavail * stat.f_frsize)
    if free < reserve:
        return free, Reason("disk_low", f"disk is full: {free:.1f} MB free below the {reserve} MB reserve "
                                        f"({folder})")
    return free, None


def _holds_sealed(database: Path) -> bool:
    """Whether the station's database holds anything sealed (a dossier's payload or a draft), so that its
    payload key is needed; a station that has never taken an application makes its key at first start. A
    database that cannot be read counts as holding something (its own check says what is wrong with it)."""
    from .core import drafts, dossiers

    if not database.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
            return bool(dossiers.one_sealed_payload(conn) or drafts.one_sealed(conn))
    except sqlite3.Error:
        return True


def _keys(folder: Path) -> list[Reason]:
    found = []
    for name, required, size in (("payload.key", True, 32), ("station.ed25519", False, None)):
        path = folder / name
        if not path.exists():
            if required and _holds_sealed(folder / "station.db"):
                found.append(Reason("key_unreadable", f"key missing: {path} (the sealed dossiers cannot be "
                                                      "opened without it)"))
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            found.append(Reason("key_unreadable", f"key unreadable: {path}: {exc.strerror or exc}"))
            continue
        if size and len(data) != size:
            found.append(Reason("key_unreadable", f"key damaged: {path}: {len(data)} bytes, not {size}"))
    return found


def _clock(database: Path, now: datetime) -> Reason | None:
    if now < CLOCK_FLOOR:
        return Reason("clock_wrong", f"clock is wrong: {now.isoformat(timespec='seconds')} is before this "
                                     f"release ({CLOCK_FLOOR.date()})")
    latest = 0.0
    for path in (database, Path(f"{database}-wal")):
        with contextlib.suppress(OSError):
            latest = max(latest, path.stat().st_mtime)
    if latest and now.timestamp() < latest - CLOCK_SLACK_S:
        last = datetime.fromtimestamp(latest, timezone.utc).isoformat(timespec="seconds")
        return Reason("clock_wrong", f"clock is wrong: {now.isoformat(timespec='seconds')} is before the "
                                     f"database's last write ({last})")
    return None


def database_check(database: Path, full: bool = False) -> Reason | None:
    """``PRAGMA quick_check`` (or ``integrity_check`` with ``full``) of the station database, read-only."""
    if not database.exists():
        return None
    pragma = "integrity_check" if full else "quick_check"
    conn = None
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
        rows = [row[0] for row in conn.execute(f"PRAGMA {pragma}(20)")]
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "malformed" in text or "not a database" in text or "corrupt" in text:
            return Reason("database_damaged", f"database damaged: {pragma}: {' '.join(text.split())} ({database})")
        return Reason("database_unreadable", f"database cannot be opened: {text} ({database})")
    finally:
        if conn is not None:
            conn.close()
    if rows != ["ok"]:
        found = "; ".join(" ".join(row.split()) for row in rows[:3])  # one log line
        return Reason("database_damaged", f"database damaged: {pragma}: {found} ({database})")
    return None


def wal_bytes(database: Path) -> int:
    try:
        return Path(f"{database}-wal").stat().st_size
    except OSError:
        return 0


def check(station: dict, database: str | Path, full: bool = False, with_database: bool = True,
          now: datetime | None = None) -> Health:
    """Every check, once. ``with_database=False`` leaves out the quick_check (the light periodic check)."""
    database = Path(database)
    folder = database.parent
    while not folder.exists() and folder != folder.parent:  # not made yet (`kiosk check` makes nothing)
        folder = folder.parent
    reserve = reserve_mb(station)
    reasons: list[Reason] = []
    unwritable = _writable(folder)
    if unwritable:
        reasons.append(unwritable)
    free, low = _free(folder, reserve)
    if low and not unwritable:
        reasons.append(low)
    if with_database:
        damaged = database_check(database, full)
        # A read-only folder also fails the open; its own reason says it better.
        if damaged and not (unwritable and damaged.code == "database_unreadable"):
            reasons.append(damaged)
    reasons += _keys(database.parent)
    wrong_clock = _clock(database, now or datetime.now(timezone.utc))
    if wrong_clock:
        reasons.append(wrong_clock)
    return Health(reasons, free, reserve, wal_bytes(database), time.monotonic())


def checkpoint(database: str | Path) -> tuple[int, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: copy the WAL into the database and cut it to 0 bytes, so it does
    not grow for ever. Returns the WAL's size (bytes) before and after."""
    before = wal_bytes(Path(database))
    conn = station_db.connect(database)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    after = wal_bytes(Path(database))
    if busy:
        log.info("WAL checkpoint: a reader held the WAL; %d bytes left (tried again in %d s)", after, HEAVY_EVERY_S)
    return before, after


class Monitor:
    """The app's view of its health (held in ``app.extensions["health"]``): checked at start, again from a
    request at most every ``LIGHT_EVERY_S`` (quick_check and the WAL checkpoint every ``HEAVY_EVERY_S``).
    A request never waits for another thread's check: it takes the last result."""

    def __init__(self, station: dict, database: str | Path, light_every_s: float = LIGHT_EVERY_S,
                 heavy_every_s: float = HEAVY_EVERY_S):
        self.station, self.database = station, Path(database)
        self.light_every_s, self.heavy_every_s = light_every_s, heavy_every_s
        self._lock = threading.Lock()
        self._last: Health | None = None
        self._database_reason: Reason | None = None
        self._light_at = self._heavy_at = float("-inf")
        self.last_checkpoint: tuple[int, int] | None = None

    @property
    def last(self) -> Health:
        return self._last if self._last is not None else self.refresh(force=True)

    def refresh(self, force: bool = False) -> Health:
        now = time.monotonic()
        if not force and now - self._light_at < self.light_every_s and self._last is not None:
            return self._last
        if not self._lock.acquire(blocking=force or self._last is None):
            return self._last
        try:
            heavy = force or now - self._heavy_at >= self.heavy_every_s
            result = check(self.station, self.database, with_database=False)
            if heavy:
                self._database_reason = database_check(self.database)
                self._heavy_at = now
            if self._database_reason and not any(r.code == "folder_read_only" for r in result.reasons):
                result.reasons.insert(0, self._database_reason)
            if heavy and not result.paused and self.database.exists():
                with contextlib.suppress(sqlite3.Error, OSError):
                    self.last_checkpoint = checkpoint(self.database)
                    result.wal_bytes = self.last_checkpoint[1]
            self._note_change(result)
            self._last, self._light_at = result, now
            return result
        finally:
            self._lock.release()

    def _note_change(self, result: Health) -> None:
        before = set(self._last.codes) if self._last else set()
        for reason in result.reasons:
            if reason.code not in before:
                log.error("station paused: %s", reason.detail)
        if before and not result.paused:
            log.warning("station healthy again: new applications accepted (%.1f MB free)", result.free_mb or 0)

    def report(self, conn_factory=None) -> dict:
        """What `/-/health` answers: no personal data, only states, codes and counts (the request's own
        check has just run, before the view)."""
        result = self.last
        body = {"state": result.state, "reasons": result.codes,
                "free_mb": round(result.free_mb, 1) if result.free_mb is not None else None,
                "reserve_mb": result.reserve_mb, "wal_bytes": result.wal_bytes,
                "station": self.station["station"]["id"]}
        if conn_factory is not None and "database_damaged" not in result.codes:
            with contextlib.suppress(sqlite3.Error, OSError):
                conn = conn_factory()
                body["pending"] = outbox.pending_count(conn)
        return body


def database_message(database: str | Path | None, exc: BaseException) -> str:
    """The one-line answer of a command that met a damaged or unreadable database (never a traceback)."""
    text = str(exc)
    database = database or "station.db"
    cause = station_db.storage_problem(exc)
    if cause == "database is damaged":
        return (f"Cơ sở dữ liệu của trạm bị hỏng / the station database is damaged: {database}: {text}. "
                "Dừng trạm, khôi phục bản sao lưu mới nhất / stop the station and restore the latest backup: "
                "`kiosk restore BACKUP_FILE` (docs/operations.md)")
    if cause == "data folder is read-only":
        return (f"Thư mục dữ liệu chỉ đọc / the data folder is read-only: {database}: {text}. "
                "Remount it read-write or move the station (docs/operations.md)")
    if cause == "disk is full":
        return (f"Đĩa đầy / the disk is full: {database}: {text}. Free space, then start again "
                "(docs/operations.md)")
    hint = " (a read-only or missing data folder, or its permissions?)" if "unable to open" in text else ""
    return (f"Không mở được cơ sở dữ liệu / the station database cannot be used: {database}: {text}{hint}; "
            "`kiosk check --full` says what is wrong (docs/operations.md)")


class GuardedGroup(click.Group):
    """A command group whose commands answer a damaged, read-only or full station database with one line
    and exit code 1 (click's ClickException), never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except sqlite3.DatabaseError as exc:
            raise click.ClickException(database_message(None, exc)) from None
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.ENOSPC, errno.EIO, errno.EACCES):
                raise
            raise click.ClickException(database_message(getattr(exc, "filename", None), exc)) from None


def paused_page():
    """The citizen's page while the station cannot take applications (paused, or a write that just met a
    full or damaged disk): no tiles, where to go instead; 503."""
    from flask import current_app, render_template

    station = current_app.config["STATION"]["station"]
    place = station["result_address"] or station["agency"]
    return render_template("citizen/paused.html", place=place, hotline=station["hotline"]), 503
