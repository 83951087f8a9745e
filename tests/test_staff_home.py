"""The staff home and the station's start (issue 20): the list of every dossier still waiting to be sent,
whatever its day; a warning at start when the station id is not the one its queued dossiers were made with;
the data folder and its files readable by the station's user only."""
import os
import re
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from agent import staff
from kiosk.app import create_app
from kiosk.cli import main
from kiosk.core import db, dossiers, outbox
from kiosk.core.catalog import load_catalog

from .conftest import csrf_token
from .wizard import answer_all, submit

PIN = "246810"
PROC = load_catalog()["dang-ky-khai-tu"]
ANSWERS = {"full_name": "Nguyễn Văn An", "phone": "0912345678"}


def _station(tmp_path, station_id="M01", kind="mobile"):
    return create_app({"station": {"id": station_id, "kind": kind}, "paths": {"data": str(tmp_path / "var")}})


def _logged_in(app, username="lan"):
    conn = db.connect(app.config["DATABASE"])
    try:
        if username not in staff.usernames(conn).values():
            staff.add(conn, username, "Nguyễn Thị Lan", "agent", PIN)
    finally:
        conn.close()
    client = app.test_client()
    page = client.get("/agent/login")
    response = client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": username,
                                                 "secret": PIN})
    assert response.status_code == 303
    return client


def _submit_at(app, monkeypatch, when: datetime | None) -> dossiers.Submitted:
    """One dossier written the way the wizard's submit writes it, as if at ``when`` (None: now)."""
    if when is not None:
        class At(datetime):
            @classmethod
            def now(cls, tz=None):
                return when.astimezone(tz) if tz else when
        monkeypatch.setattr(dossiers, "datetime", At)
    conn = db.connect(app.config["DATABASE"])
    try:
        return dossiers.submit(conn, key=app.config["PAYLOAD_KEY"], station=app.config["STATION"]["station"],
                               channel=app.config["STATION"]["station"]["kind"], procedure=PROC, answers=ANSWERS)
    finally:
        conn.close()
        monkeypatch.setattr(dossiers, "datetime", datetime)


def _list(html: str, name: str) -> list[str]:
    """The tracking codes of one list of the home page, in order."""
    table = re.search(rf'<table class="table table-stack" data-list="{name}">(.*?)</table>', html, re.S)
    return re.findall(r'href="/agent/d/([^"]+)"', table.group(1)) if table else []


# --- the waiting list -------------------------------------------------------------------------------------

def test_the_home_lists_every_dossier_waiting_to_be_sent_whatever_its_day(tmp_path, monkeypatch):
    """A mobile team three days offline: the dossiers of earlier days are on the home page, oldest first,
    before today's; one acknowledged by the central leaves the list."""
    app = _station(tmp_path)
    now = datetime.now(timezone.utc)
    earlier = [_submit_at(app, monkeypatch, now - timedelta(days=days)) for days in (3, 2, 1)]
    today = _submit_at(app, monkeypatch, None)
    client = _logged_in(app)

    home = client.get("/agent/")
    assert home.status_code == 200
    assert "Đang chờ gửi (4)" in home.text
    assert _list(home.text, "waiting") == [d.tracking_code for d in earlier] + [today.tracking_code]
    assert _list(home.text, "today") == [today.tracking_code]
    assert home.text.index('data-list="waiting"') < home.text.index('data-list="today"')
    zone = ZoneInfo(app.config["STATION"]["station"]["timezone"])
    assert earlier[0].submitted_at.astimezone(zone).strftime("%d/%m/%Y") in home.text  # each says its day

    conn = db.connect(app.config["DATABASE"])
    with db.write_transaction(conn):
        outbox.mark_sent(conn, earlier[1].submission_id)
    conn.close()
    home = client.get("/agent/")
    assert _list(home.text, "waiting") == [earlier[0].tracking_code, earlier[2].tracking_code, today.tracking_code]

    client.get("/lang/en")
    assert "Waiting to be sent (3)" in client.get("/agent/").text


def test_the_waiting_list_is_bounded_and_counts_the_rest(tmp_path, monkeypatch):
    import agent.views

    app = _station(tmp_path)
    made = [_submit_at(app, monkeypatch, None) for _ in range(5)]
    monkeypatch.setattr(agent.views, "WAITING_SHOWN", 2)
    home = _logged_in(app).get("/agent/")
    assert _list(home.text, "waiting") == [d.tracking_code for d in made[:2]]
    assert 'data-waiting-more="3"' in home.text and "còn 3 hồ sơ khác đang chờ gửi" in home.text
    assert "Đang chờ gửi (5)" in home.text


def test_nothing_waiting_shows_no_waiting_list(tmp_path):
    app = _station(tmp_path, kind="counter")
    home = _logged_in(app).get("/agent/")
    assert 'data-list="waiting"' not in home.text and "Đang chờ gửi" not in home.text


def test_the_waiting_list_reads_an_index_in_order(tmp_path):
    """No sort of every pending row on each page: the outbox_waiting index (state, enqueued_at) gives them in
    order, and the banners' count and oldest time read the index alone."""
    path = tmp_path / "station.db"
    db.migrate(path)
    conn = db.connect(path)
    plan = " ".join(row[3] for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT d.*, o.state AS sync_state, o.enqueued_at FROM outbox o "
        "JOIN dossiers d USING (submission_id) WHERE o.state = 'pending' ORDER BY o.enqueued_at LIMIT 200"))
    assert "USING INDEX outbox_waiting" in plan and "TEMP B-TREE" not in plan
    plan = " ".join(row[3] for row in conn.execute(
        "EXPLAIN QUERY PLAN SELECT COUNT(*), MIN(enqueued_at) FROM outbox WHERE state = 'pending'"))
    assert "COVERING INDEX outbox_waiting" in plan
    conn.close()


# --- a station re-identified with dossiers queued -----------------------------------------------------

def test_a_new_station_id_with_dossiers_queued_is_warned_at_start_and_shown_to_staff(tmp_path, monkeypatch, caplog):
    old = _station(tmp_path, "M01")
    queued = [_submit_at(old, monkeypatch, None) for _ in range(2)]
    assert "station-mismatch" not in _logged_in(old).get("/agent/").text

    with caplog.at_level("WARNING", logger="kiosk"):
        new = _station(tmp_path, "M02")
    warned = [r.getMessage() for r in caplog.records if "station_mismatch" in r.getMessage()]
    assert len(warned) == 1
    assert "station id is M02" in warned[0] and "2 dossier(s)" in warned[0] and "M01" in warned[0]
    assert "Nguyễn" not in warned[0] and queued[0].tracking_code not in warned[0]  # ids and counts only

    client = _logged_in(new)
    home = client.get("/agent/")
    assert home.status_code == 200  # a warning, not a refusal: the station serves
    notice = re.search(r'<p class="waiting-banner" role="alert" data-notice="station-mismatch">(.*?)</p>',
                       home.text, re.S)
    assert notice, "the staff bar says nothing of the station id"
    assert "2 hồ sơ đang chờ gửi được lập với mã trạm M01" in notice.group(1)
    assert "M02" in notice.group(1) and "station_mismatch" in notice.group(1)
    assert "đặt lại mã trạm M01" in notice.group(1) and "xuất các hồ sơ này ra USB" in notice.group(1)
    assert "data-notice=\"station-mismatch\"" in client.get("/agent/report").text  # on every staff page

    # Once those dossiers are no longer waiting (sent under the old id, or refused), the notice goes.
    conn = db.connect(new.config["DATABASE"])
    with db.write_transaction(conn):
        for d in queued:
            outbox.mark_sent(conn, d.submission_id)
    conn.close()
    assert "station-mismatch" not in client.get("/agent/").text


def test_kiosk_check_warns_of_a_station_id_change_without_failing(tmp_path, monkeypatch):
    old = _station(tmp_path, "M01")
    _submit_at(old, monkeypatch, None)
    station_file = tmp_path / "station.toml"
    station_file.write_text(f'[station]\nid = "M02"\nkind = "mobile"\n[paths]\ndata = "{tmp_path / "var"}"\n'
                            '[devices]\nprinter = "none"\n')
    result = CliRunner().invoke(main, ["check", "--station", str(station_file)])
    assert result.exit_code == 0, result.output
    assert "warning: station id is M02 but 1 dossier(s) waiting to be sent were made under station id M01" \
        in result.output
    station_file.write_text(station_file.read_text().replace('"M02"', '"M01"'))
    result = CliRunner().invoke(main, ["check", "--station", str(station_file)])
    assert result.exit_code == 0 and "warning" not in result.output


# --- data files 0600, folders 0700 -----------------------------------------------------------------------

@pytest.fixture
def usual_umask():
    """The umask most systems start services with (022): files would be 0644 unless made otherwise."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def _wider_than_owner(folder: Path) -> list[str]:
    found = []
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(folder.parent)} {mode:o}")
    return found


def test_the_station_keeps_its_files_to_its_owner(tmp_path, usual_umask, catalog):
    """After a start and a submitted application (the WAL and its index open), nothing in the data folder is
    readable by another user: the database and its -wal and -shm, the keys, the incarnation marker."""
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    client = app.test_client()
    proc = catalog["dang-ky-khai-tu"]
    answer_all(client, proc)
    assert submit(client, proc).status_code == 303
    app.extensions["receipts"].wait()
    folder = tmp_path / "var"
    made = {p.name for p in folder.iterdir()}
    assert {"station.db", "station.db-wal", "station.db-shm", "payload.key", "session.key"} <= made, made
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert _wider_than_owner(folder) == []
    for name in ("station.db", "station.db-wal", "station.db-shm"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name

    # The sync worker's lock, made beside them, too.
    from sync.worker import hold_worker_lock

    hold_worker_lock(folder).close()
    assert stat.S_IMODE((folder / "sync-worker.lock").stat().st_mode) == 0o600

    # A backup the station makes is its owner's too.
    from kiosk.backup import make_backup

    made = make_backup(app.config["STATION"], tmp_path / "backups.tar.gz")
    assert stat.S_IMODE(Path(made["path"]).stat().st_mode) == 0o600


def test_a_start_narrows_what_an_older_release_left_readable(tmp_path, usual_umask):
    folder = tmp_path / "var"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with sqlite3.connect(folder / "station.db") as conn:  # made by plain SQLite: 0644
        conn.execute("PRAGMA journal_mode=WAL")
    (folder / "audio").mkdir(mode=0o755)
    (folder / "audio" / "prompt.wav").write_bytes(b"RIFF")
    (folder / "payload.key").write_bytes(os.urandom(32))
    os.chmod(folder / "payload.key", 0o644)
    assert _wider_than_owner(folder) != []
    create_app({"paths": {"data": str(folder)}})
    assert _wider_than_owner(folder) == []
    assert stat.S_IMODE((folder / "audio").stat().st_mode) == 0o700


def test_a_database_made_by_connect_is_owner_only_with_its_wal(tmp_path, usual_umask):
    path = tmp_path / "fresh.db"
    conn = db.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    try:
        for name in ("fresh.db", "fresh.db-wal", "fresh.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        conn.close()
