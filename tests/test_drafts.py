"""Abandoned applications do not stay on the station: a draft idle past the limit cannot be opened and is
deleted by the next sweep, which each app runs at most once a minute on a request that reads a draft."""
import re
import sqlite3
from datetime import datetime, timedelta, timezone

from kiosk.app import create_app
from kiosk.core import drafts
from kiosk.core.db import connect


def _age_every_draft(database: str, minutes: int) -> None:
    with sqlite3.connect(database) as conn:
        old = (datetime.now(timezone.utc) - timedelta(minutes=minutes)).isoformat()
        conn.execute("UPDATE drafts SET touched_at = ?", (old,))


def _count(database: str) -> int:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT COUNT(*) FROM drafts").fetchone()[0]


def test_an_idle_draft_is_swept_by_the_next_request_that_reads_one(tmp_path, catalog):
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    database = app.config["DATABASE"]
    proc = catalog["cap-phieu-ly-lich-tu-phap"]
    abandoned, later = app.test_client(), app.test_client()
    for client in (abandoned, later):
        client.post(f"/p/{proc.slug}/start", data={"csrf_token": _token(client, proc)})
    assert _count(database) == 2
    _age_every_draft(database, app.config["STATION"]["session"]["draft_idle_minutes"] + 1)
    sweeper = app.extensions["draft_sweeper"]
    sweeper._last = float("-inf")  # the first sweep of this app has not run yet
    assert later.get(f"/p/{proc.slug}/q/{proc.pages[0]['id']}").status_code in (200, 303)
    assert _count(database) == 0
    # Within the minute, another idle draft waits for the next sweep (it cannot be opened meanwhile).
    fresh = app.test_client()
    fresh.post(f"/p/{proc.slug}/start", data={"csrf_token": _token(fresh, proc)})
    _age_every_draft(database, 60)
    conn = connect(database)
    (draft_id,) = conn.execute("SELECT id FROM drafts").fetchone()
    assert drafts.load(conn, app.config["PAYLOAD_KEY"], draft_id, 20) is None
    fresh.get(f"/p/{proc.slug}/q/{proc.pages[0]['id']}")
    assert _count(database) == 1


def test_two_apps_keep_their_own_sweep_clock(tmp_path):
    one = create_app({"paths": {"data": str(tmp_path / "one")}})
    two = create_app({"paths": {"data": str(tmp_path / "two")}})
    assert one.extensions["draft_sweeper"] is not two.extensions["draft_sweeper"]
    assert one.extensions["db"] is not two.extensions["db"]
    assert one.extensions["card_reads"] is not two.extensions["card_reads"]


def _token(client, proc) -> str:
    page = client.get(f"/p/{proc.slug}").text
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
