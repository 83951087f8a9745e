"""Station databases as the previous release left them: its two sqlite-utils migration sets, "dvc-kiosk"
and "dvc-kiosk-sync" (sync/schema.py, since deleted), applied by that release's code (commit f823493)
and dumped with sqlite3's ``iterdump`` into tests/data/previous-station-db/ (schema and migration
records, no other rows). tests/test_station_migrations.py migrates what ``build`` makes from them."""
import sqlite3
from pathlib import Path

DUMPS = Path(__file__).resolve().parent.parent / "data" / "previous-station-db"
# (the station set stopped before, the sync set stopped before) -> the dump of that database
VARIANTS = {
    (None, None): "release.sql",
    ("m004_incarnations", "m002_central_restores"): "before-m004-and-restores.sql",
}


def build(path: str | Path, station_stop_before: str | None = None, sync_stop_before: str | None = None) -> Path:
    """A database at ``path`` as the previous release made it; ``*_stop_before`` names a migration the set
    had not reached (a release older still)."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript((DUMPS / VARIANTS[(station_stop_before, sync_stop_before)]).read_text("utf-8"))
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return Path(path)
