"""The station knows its own health (kiosk/health.py, docs/operations.md), on a real small filesystem: a
tmpfs filled to below the reserve, remounted read-only, and a database file with a page overwritten. Each
test proves that no citizen is told a saved dossier failed and that nothing saved is lost."""
import logging
import shutil
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from kiosk import health
from kiosk.app import create_app
from kiosk.cli import main
from tests.support.fake_printer import FakeNetworkPrinter
from tests.support.small_disk import small_disk  # noqa: F401
from tests.wizard import answer_all, submit, submit_one

from .conftest import csrf_token

SLUG = "cap-phieu-ly-lich-tu-phap"
PAUSED = "Máy tạm ngừng nhận hồ sơ"


def dossier_count(database: Path) -> int:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM dossiers").fetchone()[0]
    finally:
        conn.close()


def station_file(tmp_path: Path, data: Path, reserve_mb: int = 1) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[paths]\ndata = "{data}"\n[health]\nreserve_mb = {reserve_mb}\n'
                    '[devices]\ncard_reader = "none"\nprinter = "none"\n', "utf-8")
    return path


def close(app) -> None:
    """Stop the app as a killed server would: its connection (this thread's) closed."""
    app.extensions["receipts"].wait()
    conn = getattr(app.extensions["db"]._local, "conn", None)
    if conn is not None:
        conn.close()
        app.extensions["db"]._local.conn = None


def no_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output


def test_below_the_reserve_new_applications_stop_and_a_draft_in_progress_still_submits(
        small_disk, tmp_path, catalog, caplog):  # noqa: F811
    disk = small_disk(6144)
    data = disk.path / "var"
    app = create_app({"paths": {"data": str(data)}, "health": {"reserve_mb": 1},
                      "station": {"result_address": "Bộ phận một cửa, UBND phường Sài Gòn"}})
    monitor = app.extensions["health"]
    monitor.light_every_s = 0  # "the next check" is the next request, not 30 s later
    proc = catalog[SLUG]
    in_progress = app.test_client()
    answer_all(in_progress, proc)  # a citizen has answered everything before the disk fills
    before = dossier_count(data / "station.db")

    disk.fill_to(400)  # 400 KiB free, below the 1 MB reserve
    caplog.set_level(logging.ERROR, logger="kiosk.health")
    newcomer = app.test_client()
    start_page = newcomer.get("/")
    assert start_page.status_code == 503
    assert PAUSED in start_page.text and "UBND phường Sài Gòn" in start_page.text
    assert f'href="/p/{SLUG}"' not in start_page.text  # no tiles
    overview = newcomer.get(f"/p/{SLUG}")
    refused = newcomer.post(f"/p/{SLUG}/start", data={"csrf_token": csrf_token(overview.text)})
    assert refused.status_code == 503 and PAUSED in refused.text
    with newcomer.session_transaction() as session:
        assert "draft" not in session
    report = newcomer.get("/-/health")
    assert report.status_code == 503
    assert report.json["state"] == "paused" and report.json["reasons"] == ["disk_low"]
    assert report.json["free_mb"] < 1 and report.json["reserve_mb"] == 1
    assert not {"name", "answers", "id_number"} & set(report.json)
    assert any("disk is full:" in r.message and "below the 1 MB reserve" in r.message for r in caplog.records)

    # The draft begun before goes through and its confirmation shows the tracking code.
    sent = submit(in_progress, proc)
    assert sent.status_code == 303 and sent.headers["Location"].endswith("/done")
    done = in_progress.get("/done")
    assert done.status_code == 200 and "data-tracking-code" in done.text
    assert dossier_count(data / "station.db") == before + 1

    disk.free()
    assert newcomer.get("/").status_code == 200
    assert newcomer.get("/-/health").json == {**newcomer.get("/-/health").json, "state": "ok", "reasons": []}
    assert dossier_count(data / "station.db") == before + 1


def test_a_read_only_folder_at_start_pauses_serve_and_fails_check(small_disk, tmp_path, catalog):  # noqa: F811
    disk = small_disk(6144)
    data = disk.path / "var"
    config = station_file(tmp_path, data)
    app = create_app(station_file=str(config))
    submit_one(app, catalog)
    close(app)
    health.checkpoint(data / "station.db")
    saved = dossier_count(data / "station.db")

    disk.read_only()  # as after a kill and a filesystem error: the kernel remounts it read-only
    result = CliRunner().invoke(main, ["check", "--station", str(config)])
    no_traceback(result)
    assert result.exit_code == 1
    assert "data folder cannot be written" in result.output and "Read-only file system" in result.output

    paused = create_app(station_file=str(config))  # serve starts, paused, instead of a 500 at Start
    client = paused.test_client()
    page = client.get("/")
    assert page.status_code == 503 and PAUSED in page.text
    assert client.get("/-/health").json["reasons"][0] == "folder_read_only"
    for command in (["audit", "verify"], ["sync", "status"]):
        no_traceback(CliRunner().invoke(main, [*command[:1], "--station", str(config), *command[1:]]
                                        if command[0] == "sync" else [*command, "--station", str(config)]))

    disk.writable()
    assert dossier_count(data / "station.db") == saved


def _damage(database: Path, table: str) -> None:
    """Overwrite the middle of ``table``'s root page with junk, as a failing disk would."""
    conn = sqlite3.connect(database)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    with open(database, "r+b") as f:
        f.seek((root - 1) * page_size + 8)
        f.write(b"\xa5" * (page_size - 16))


def test_a_damaged_database_pauses_the_station_and_commands_answer_with_a_message(tmp_path, catalog):
    data = tmp_path / "var"
    config = station_file(tmp_path, data)
    app = create_app(station_file=str(config))
    for _ in range(2):
        submit_one(app, catalog)
    close(app)
    damaged = tmp_path / "copy" / "station.db"
    damaged.parent.mkdir()
    shutil.copy(data / "station.db", damaged)
    _damage(damaged, "audit_events")
    reason = health.database_check(damaged)
    assert reason is not None and reason.code == "database_damaged"
    assert "database damaged: quick_check" in reason.detail
    for name in ("payload.key", "session.key"):
        shutil.copy(data / name, damaged.parent / name)
    config = station_file(tmp_path, damaged.parent)

    station = create_app(station_file=str(config)).test_client()
    assert station.get("/").status_code == 503
    report = station.get("/-/health")
    assert report.status_code == 503 and "database_damaged" in report.json["reasons"]
    checked = CliRunner().invoke(main, ["check", "--station", str(config)])
    no_traceback(checked)
    assert checked.exit_code == 1 and "database damaged: quick_check" in checked.output
    assert CliRunner().invoke(main, ["check", "--full", "--station", str(config)]).exit_code == 1
    verified = CliRunner().invoke(main, ["audit", "verify", "--station", str(config)])
    no_traceback(verified)
    assert verified.exit_code == 1 and "kiosk restore" in verified.output
    worker = CliRunner().invoke(main, ["sync", "--station", str(config), "run", "--once"])
    no_traceback(worker)
    assert worker.exit_code == 1 and "not syncing" in worker.output and "database damaged" in worker.output
    no_traceback(CliRunner().invoke(main, ["sync", "--station", str(config), "status"]))
    assert dossier_count(damaged) == 2  # the dossiers' own pages still read: nothing saved is lost


def test_the_scheduled_checkpoint_truncates_the_wal(tmp_path, catalog):
    with FakeNetworkPrinter("ok") as printer:
        app = create_app({"paths": {"data": str(tmp_path / "var")}, **printer.config()})
        database = Path(app.config["DATABASE"])
        monitor = app.extensions["health"]
        assert health.wal_bytes(database) == 0  # checkpointed at start
        citizen = app.test_client()
        answer_all(citizen, catalog[SLUG])
        whole_application = health.wal_bytes(database)  # every answer kept in the draft, in the WAL
        health.checkpoint(database)
        assert submit(citizen, catalog[SLUG]).status_code == 303
        app.extensions["receipts"].wait()
        one_submit = health.wal_bytes(database)  # the submit transaction with its receipt record
        for _ in range(2):
            submit_one(app, catalog)
        before = health.wal_bytes(database)
        monitor.heavy_every_s = monitor.light_every_s = 0
        app.test_client().get("/-/health")
    assert monitor.last_checkpoint == (before, 0)
    assert health.wal_bytes(database) == 0
    print(f"WAL: answering one application {whole_application} bytes; its submit with the receipt record "
          f"{one_submit} bytes; three more applications {before}; after TRUNCATE 0")
    assert 0 < one_submit < 1024 * 1024 * monitor.station["health"]["reserve_mb"] // 100
    assert dossier_count(database) == 3


def test_staff_see_the_reason_and_the_fix(tmp_path):
    from tests.test_agent import _logged_in

    app, client = _logged_in(tmp_path, "lan")
    assert 'data-notice="station-paused"' not in client.get("/agent/").text
    monitor = app.extensions["health"]
    monitor.station = {**monitor.station, "health": {"reserve_mb": 10**9}}  # more than any disk has
    monitor.light_every_s = 0
    page = client.get("/agent/").text
    assert 'data-notice="station-paused"' in page and 'data-reasons="disk_low"' in page
    assert "Trạm đang tạm ngừng nhận hồ sơ mới" in page and "Giải phóng dung lượng" in page


def test_a_missing_payload_key_matters_only_once_something_is_sealed(tmp_path, catalog):
    """A station that never took an application has no payload key yet (it is made at first start of the
    web app): that is not a fault. Once a dossier is sealed, a missing key is one, and says why."""
    fresh = tmp_path / "fresh" / "station.db"
    fresh.parent.mkdir()
    from kiosk.core.config import load_station
    from kiosk.core.db import migrate
    migrate(fresh)
    assert [r.code for r in health.check(load_station(), fresh).reasons] == []
    app = create_app({"paths": {"data": str(tmp_path / "var")}})
    submit_one(app, catalog)
    key = Path(app.config["DATABASE"]).parent / "payload.key"
    key.rename(key.with_suffix(".moved"))
    reasons = health.check(app.config["STATION"], app.config["DATABASE"]).reasons
    assert [r.code for r in reasons] == ["key_unreadable"] and "key missing" in reasons[0].detail
