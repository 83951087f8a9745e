"""Catalog releases (issue 19, docs/catalog-releases.md): the central publishes a signed, numbered release;
a real station sync worker fetches it over HTTP (conditional, resumable) and installs it after the checks
of `kiosk check`; the station's web app starts new applications on it while a draft started before
finishes on its own release; every dossier records its release. Bad releases (altered, another key, an
older number, definitions that fail the checks) are refused with the reason and the live one stays. A
mobile team installs a release from a USB stick, on the staff home or with `kiosk sync import-catalog`."""
import base64
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import staff
from kiosk.app import create_app
from kiosk.core import units
from kiosk.core.catalog import PROCEDURES_DIR, load_catalog
from kiosk.core.db import connect
from kiosk.core.dossiers import canonical_json, open_payload
from sync import protocol
from sync.catalog_release import (FORMAT, ReleaseRefused, StationCatalog, build_release, fetch,
                                  release_file_name)
from sync.central_catalog import catalog_key, publish
from sync.central_cli import central as central_group
from sync.client import LinkError
from sync.keys import load_catalog_key
from sync.sync_cli import sync as sync_group
from sync.worker import station_paths, worker_from_config
from tests.support.harness import CentralThread, enrol, make_station

from .conftest import csrf_token
from .wizard import answer_all, start, submit

SLUG = "cap-phieu-ly-lich-tu-phap"
OLD_VERSION = load_catalog()[SLUG].version
FAST = {"base_delay": 0.05, "max_delay": 0.4, "idle_interval": 0.05, "timeout": 5}
PIN = "246810"


def definitions(tmp_path: Path, version: str, break_it: bool = False) -> Path:
    """The shipped definitions with ``SLUG``'s version changed (and, with ``break_it``, a field type that
    the loader refuses)."""
    folder = tmp_path / f"defs-{version}"
    shutil.copytree(PROCEDURES_DIR, folder)
    path = folder / f"{SLUG}.toml"
    text = re.sub(r'^version = ".*"$', f'version = "{version}"', path.read_text("utf-8"), count=1, flags=re.M)
    if break_it:
        text = text.replace('type = "text"', 'type = "dat"', 1)
    path.write_text(text, "utf-8")
    return folder


def signed(document: dict, key) -> bytes:
    return json.dumps(protocol.sign_document(key, document), ensure_ascii=False).encode()


def document_of(data: bytes) -> dict:
    return json.loads(data)["document"]


@pytest.fixture
def world(tmp_path):
    """A central on 127.0.0.1, a kiosk station enrolled there (its worker and its web app on one data folder)."""
    with CentralThread(tmp_path / "central") as central:
        config = make_station(tmp_path / "station", central.url, sync=FAST)
        enrol(central.central, config)
        app = create_app(station_file=config["source"])
        app.extensions["catalog_releases"].check_every = 0  # every request looks (the default: every 2 s)
        worker = worker_from_config(config)
        yield {"central": central, "config": config, "app": app, "worker": worker, "tmp": tmp_path,
               "data": tmp_path / "central", "store": StationCatalog(station_paths(config)["database"].parent)}
        worker.close()


def dossier_row(app, code: str) -> tuple:
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute("SELECT submission_id, procedure_version, catalog_release FROM dossiers "
                            "WHERE tracking_code = ?", (code,)).fetchone()


def submitted_code(client) -> str:
    with client.session_transaction() as session:
        return session["submitted"]["code"]


def payload(app, submission_id: str) -> dict:
    conn = connect(app.config["DATABASE"])
    try:
        return open_payload(conn, app.config["PAYLOAD_KEY"], submission_id)
    finally:
        conn.close()


def test_a_published_release_reaches_the_station_and_only_new_applications_switch(world):
    app, worker = world["app"], world["worker"]
    builtin = app.config["CATALOG"][SLUG]
    assert builtin.release is None
    # A citizen is half-way (at the check page) when the release arrives.
    early = app.test_client()
    answer_all(early, builtin)

    number, path = publish(world["data"], definitions(world["tmp"], "2026.9"))
    assert number == 1 and path.name == "catalog-1.dvccatalog"
    report = worker.cycle()
    assert report["catalog"] == 1
    assert world["store"].current()["release"] == 1
    assert (world["store"].releases / "catalog-1.dvccatalog").read_bytes() == path.read_bytes()

    # A new application starts on release 1 ...
    late = app.test_client()
    assert 'data-catalog-live' not in late.get("/").text  # (the line is for staff)
    live = app.config["CATALOG"][SLUG]
    assert (live.release, live.version) == (1, "2026.9")
    answer_all(late, live)
    assert submit(late, live).status_code == 303
    # ... while the one begun before finishes on the catalog it started with.
    assert early.get(f"/p/{SLUG}/check").status_code == 200
    assert submit(early, builtin).status_code == 303
    app.extensions["receipts"].wait()

    late_row, early_row = dossier_row(app, submitted_code(late)), dossier_row(app, submitted_code(early))
    assert late_row[1:] == ("2026.9", 1)
    assert early_row[1:] == (OLD_VERSION, None)
    assert payload(app, late_row[0])["procedure"] == {"code": live.code, "slug": SLUG, "version": "2026.9",
                                                     "catalog_release": 1}
    assert "catalog_release" not in payload(app, early_row[0])["procedure"]
    # Both reach the central, the release number inside the dossier it holds.
    worker.run(until_empty=True, max_seconds=20)
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        assert conn.execute("SELECT state FROM outbox").fetchall() == [("sent",), ("sent",)]
    # A dossier's release is immutable like the rest of it.
    with sqlite3.connect(app.config["DATABASE"]) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE dossiers SET catalog_release = 2 WHERE submission_id = ?", (late_row[0],))


def test_a_draft_keeps_its_release_through_two_switches(world):
    app, worker = world["app"], world["worker"]
    publish(world["data"], definitions(world["tmp"], "r1"))
    worker.cycle()
    client = app.test_client()
    first_page = start(client, SLUG)
    assert client.get(first_page).status_code == 200
    publish(world["data"], definitions(world["tmp"], "r2"))
    assert worker.cycle()["catalog"] == 1
    assert app.test_client().get("/").status_code == 200 and app.config["CATALOG"][SLUG].version == "r2"
    answer_all(client, app.extensions["catalog_releases"].procedure(SLUG, 1))
    assert submit(client, app.config["CATALOG"][SLUG]).status_code == 303
    assert dossier_row(app, submitted_code(client))[1:] == ("r1", 1)


def test_the_station_that_has_the_release_gets_304(world):
    publish(world["data"], definitions(world["tmp"], "2026.9"))
    worker = world["worker"]
    assert worker.cycle()["catalog"] == 1
    assert worker.cycle()["catalog"] == 0
    asked = worker.client.request("GET", "/api/v1/catalog", headers={"If-None-Match": '"1"'})
    assert (asked.status, asked.body, asked.headers["etag"]) == (304, b"", '"1"')
    whole = worker.client.request("GET", "/api/v1/catalog")
    assert whole.status == 200 and whole.body == (world["data"] / "catalog-releases" / "catalog-1.dvccatalog").read_bytes()
    # Signed-station authentication as every API call: an unsigned request is refused.
    import urllib.error
    import urllib.request
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{world['central'].url}/api/v1/catalog", timeout=5)
    assert refused.value.code == 403


def test_no_release_published_is_not_a_problem(world):
    assert world["worker"].cycle()["catalog"] == 0
    assert world["store"].current() is None and world["store"].refused() is None


class CutAfter:
    """The worker's client, cut after ``n`` answers (the link drops in the middle of a download)."""

    def __init__(self, client, n: int):
        self.client, self.n, self.ranges = client, n, []

    def request(self, method, path, body=b"", headers=None):
        self.ranges.append((headers or {}).get("Range"))
        if self.n == 0:
            raise LinkError("ConnectionResetError: cut")
        self.n -= 1
        return self.client.request(method, path, body, headers)


def test_a_cut_download_resumes_where_it_stopped(world):
    publish(world["data"], definitions(world["tmp"], "2026.9"))
    store, worker = world["store"], world["worker"]
    key = load_catalog_key(station_paths(world["config"])["central_keys"])
    cut = CutAfter(worker.client, 3)
    with pytest.raises(LinkError):
        fetch(cut, store, key, chunk=4096)
    partial = list(store.folder.glob("download-1.partial"))
    assert len(partial) == 1 and partial[0].stat().st_size == 3 * 4096
    assert store.current() is None
    resumed = CutAfter(worker.client, 1000)
    installed = fetch(resumed, store, key, chunk=4096)
    assert installed.release == 1
    assert resumed.ranges[0] == f"bytes={3 * 4096}-{4 * 4096 - 1}"
    assert not list(store.folder.glob("*.partial"))


def test_bad_releases_are_refused_with_the_reason_and_the_live_one_stays(world):
    app, store = world["app"], world["store"]
    key = load_catalog_key(station_paths(world["config"])["central_keys"])
    _n, path = publish(world["data"], definitions(world["tmp"], "2026.9"))
    world["worker"].cycle()
    good = path.read_bytes()
    central_key = catalog_key(world["data"])
    document = document_of(good)

    def refused(data: bytes) -> ReleaseRefused:
        live = store.current()["release"]
        with pytest.raises(ReleaseRefused) as caught:
            store.install(data, key, "usb")
        assert store.current()["release"] == live
        assert store.refused()["code"] == caught.value.code
        return caught.value

    # One byte changed inside a definition: the signature no longer verifies.
    at = good.index(b'version = \\"2026.9\\"') + len(b'version = \\"')
    tampered = good[:at] + b"3" + good[at + 1:]
    assert refused(tampered).code == "bad_signature"
    # Signed by another key, with a higher number.
    assert refused(signed({**document, "release": 5}, Ed25519PrivateKey.generate())).code == "bad_signature"
    # An older number, signed by the central.
    publish(world["data"], definitions(world["tmp"], "2026.10"))
    world["worker"].cycle()
    assert store.current()["release"] == 2
    assert refused(good).code == "older"
    # The right key, a new number, a definition the loader refuses: named by its file and field.
    bad_folder = definitions(world["tmp"], "2026.11", break_it=True)
    bad = {**document, "release": 3, "procedures": {p.stem: p.read_text("utf-8") for p in bad_folder.glob("*.toml")}}
    why = refused(signed(bad, central_key))
    assert why.code == "bad_procedures" and why.reason.startswith(f"{SLUG}.toml: pages[")
    assert "'dat' is not one of" in why.reason
    # Units data other than the station's, and a key or a field the format does not have.
    assert refused(signed({**document, "release": 3, "units_version": "vietnam-provinces 1999"},
                          central_key)).code == "units_mismatch"
    assert refused(signed({**document, "release": 3, "extra": 1}, central_key)).code == "not_release"
    assert refused(b"{not json").code == "not_json"
    # Nothing of it reached the web app: release 2 is live, new applications work on it.
    client = app.test_client()
    assert client.get("/").status_code == 200  # the app looks for a new release at each request
    proc = app.config["CATALOG"][SLUG]
    assert (proc.release, proc.version) == (2, "2026.10")
    answer_all(client, proc)
    assert submit(client, proc).status_code == 303
    assert dossier_row(app, submitted_code(client))[1:] == ("2026.10", 2)


def test_a_bad_release_at_the_central_is_refused_once_and_not_fetched_again(world, caplog):
    worker, store = world["worker"], world["store"]
    publish(world["data"], definitions(world["tmp"], "2026.9"))
    worker.cycle()
    document = document_of((world["data"] / "catalog-releases" / "catalog-1.dvccatalog").read_bytes())
    bad_folder = definitions(world["tmp"], "x", break_it=True)
    bad = {**document, "release": 2, "procedures": {p.stem: p.read_text("utf-8") for p in bad_folder.glob("*.toml")}}
    (world["data"] / "catalog-releases" / "catalog-2.dvccatalog").write_bytes(signed(bad, catalog_key(world["data"])))
    with caplog.at_level("WARNING", logger="dvc.catalog"):
        assert worker.cycle()["catalog"] == 0
    assert "catalog release 2 refused (online): bad_procedures" in caplog.text
    assert store.current()["release"] == 1 and store.refused()["release"] == 2
    asked = worker.client.request("GET", "/api/v1/catalog", headers={"If-None-Match": ", ".join(store.known_tags())})
    assert asked.status == 304  # the refused one is not downloaded again each cycle
    # The staff line says which release is live and what was refused.
    app = create_app({"station": {"kind": "counter"}}, station_file=world["config"]["source"])
    client = staff_client(app)
    home = client.get("/agent/").text
    assert 'data-catalog-live="1"' in home and 'data-catalog-refused="bad_procedures"' in home


def staff_client(app):
    conn = connect(app.config["DATABASE"])
    try:
        staff.add(conn, "lan", "Nguyễn Thị Lan", "agent", PIN)
    finally:
        conn.close()
    client = app.test_client()
    page = client.get("/agent/login")
    client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": "lan", "secret": PIN})
    return client


def test_publish_refuses_a_bad_folder_and_numbers_only_go_up(tmp_path):
    runner = CliRunner()
    data = tmp_path / "central"
    result = runner.invoke(central_group, ["catalog", "publish", "--data", str(data),
                                           str(definitions(tmp_path, "b", break_it=True))])
    assert result.exit_code == 1 and f"{SLUG}.toml: pages[" in result.output
    assert not (data / "catalog-releases").exists() or not list((data / "catalog-releases").iterdir())
    result = runner.invoke(central_group, ["catalog", "publish", "--data", str(data), "--day-off", "2026-09-01",
                                           str(definitions(tmp_path, "g"))])
    assert result.exit_code == 0, result.output
    release = document_of((data / "catalog-releases" / release_file_name(1)).read_bytes())
    assert release["type"] == FORMAT and release["release"] == 1
    assert release["calendar"] == {"days_off": ["2026-09-01"], "working_days": []}
    assert release["units_version"] == units.data_version()
    result = runner.invoke(central_group, ["catalog", "publish", "--data", str(data), "--release", "1",
                                           str(definitions(tmp_path, "h"))])
    assert result.exit_code == 1 and "not above the latest" in result.output
    assert runner.invoke(central_group, ["catalog", "publish", "--data", str(data), "--release", "7",
                                         str(definitions(tmp_path, "i"))]).exit_code == 0
    # The public half goes to stations with the central's other keys.
    keys = json.loads(runner.invoke(central_group, ["keys", "--data", str(data)]).output)
    raw = catalog_key(data).public_key().public_bytes_raw()
    assert keys["catalog_key"] == base64.b64encode(raw).decode()


@pytest.fixture
def team(tmp_path):
    """A mobile team's station with no link, enrolled at a central's data folder, its stick a folder."""
    from sync.central import open_central

    central = open_central(tmp_path / "central")
    config = make_station(tmp_path / "team", "http://127.0.0.1:9", station_id="M01")
    enrol(central, config)
    stick = tmp_path / "stick"
    stick.mkdir()
    app = create_app({"station": {"kind": "mobile", "id": "M01"}, "sync": {"export_dir": str(stick)}},
                     station_file=config["source"])
    app.config["REMOVABLE_MOUNTS"] = tmp_path / "no-mounts"
    yield {"config": config, "app": app, "stick": stick, "data": tmp_path / "central", "tmp": tmp_path}
    central.store.close()


def test_a_mobile_team_installs_a_release_from_the_stick_on_the_staff_home(team):
    _n, path = publish(team["data"], definitions(team["tmp"], "2026.9"), days_off=["2026-09-01"])
    app = team["app"]
    client = staff_client(app)
    home = client.get("/agent/").text
    assert 'data-catalog-live="built-in"' in home and "data-catalog-files" not in home
    shutil.copy(path, team["stick"] / path.name)
    home = client.get("/agent/").text
    assert f'data-catalog-file="{path.name}"' in home
    response = client.post("/agent/catalog", data={"csrf_token": csrf_token(home), "target": "0", "name": path.name})
    assert response.status_code == 303
    home = client.get("/agent/").text
    assert "Đã cài danh mục thủ tục số 1" in home and 'data-catalog-live="1"' in home
    assert app.config["CATALOG"][SLUG].version == "2026.9"
    from datetime import date
    assert date(2026, 9, 1) in app.extensions["calendar"].days_off  # the release's calendar days too
    # Again: nothing changes; an altered copy is refused with the reason, the live one stays.
    response = client.post("/agent/catalog", data={"csrf_token": csrf_token(home), "target": "0", "name": path.name})
    assert "Danh mục số 1 đang được dùng rồi" in client.get("/agent/").text
    data = path.read_bytes()
    altered = team["stick"] / "catalog-2.dvccatalog"
    altered.write_bytes(data.replace(b'"release": 1', b'"release": 2'))
    home = client.get("/agent/").text
    client.post("/agent/catalog", data={"csrf_token": csrf_token(home), "target": "0", "name": altered.name})
    home = client.get("/agent/").text
    assert "Không cài danh mục này: chữ ký không phải của trung tâm" in home
    assert 'data-catalog-live="1"' in home and 'data-catalog-refused="bad_signature"' in home
    # A name not listed on the stick is not read.
    client.post("/agent/catalog", data={"csrf_token": csrf_token(home), "target": "0", "name": "../station.db"})
    assert "Không còn thấy tệp danh mục đó trên USB" in client.get("/agent/").text
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_events WHERE action LIKE 'catalog.%'")]
    assert actions == ["catalog.installed", "catalog.refused"]


def test_kiosk_sync_import_catalog_installs_or_refuses_with_the_reason(team):
    _n, path = publish(team["data"], definitions(team["tmp"], "2026.9"))
    runner = CliRunner()
    station = ["--station", team["config"]["source"]]
    result = runner.invoke(sync_group, [*station, "import-catalog", str(path)])
    assert result.exit_code == 0, result.output
    assert "catalog release 1 installed" in result.output
    result = runner.invoke(sync_group, [*station, "import-catalog", str(path)])
    assert result.exit_code == 0 and "live already" in result.output
    other = team["tmp"] / "other.dvccatalog"
    other.write_bytes(signed({**document_of(path.read_bytes()), "release": 2}, Ed25519PrivateKey.generate()))
    result = runner.invoke(sync_group, [*station, "import-catalog", str(other)])
    assert result.exit_code == 1 and "bad_signature" in result.output
    assert StationCatalog(station_paths(team["config"])["database"].parent).current()["release"] == 1


def test_kiosk_check_names_the_live_release(team):
    from kiosk.cli import main

    _n, path = publish(team["data"], definitions(team["tmp"], "2026.9"))
    runner = CliRunner()
    assert runner.invoke(sync_group, ["--station", team["config"]["source"], "import-catalog", str(path)]).exit_code == 0
    result = runner.invoke(main, ["check", "--station", team["config"]["source"]])
    assert "catalog release 1" in result.output, result.output
    assert f"{SLUG}  v2026.9" in result.output


def test_the_release_format_refuses_unknown_keys_in_the_envelope(tmp_path):
    key = Ed25519PrivateKey.generate()
    data = build_release(PROCEDURES_DIR, 1, key)
    envelope = json.loads(data)
    envelope["comment"] = "x"
    with pytest.raises(ReleaseRefused) as caught:
        StationCatalog(tmp_path).install(json.dumps(envelope).encode(), key.public_key(), "usb")
    assert caught.value.code == "not_release"
    assert canonical_json(envelope["document"])  # the document itself is canonical JSON as signed


def test_a_draft_finishes_on_a_procedure_the_new_release_dropped(world):
    app, worker = world["app"], world["worker"]
    builtin = app.config["CATALOG"][SLUG]
    client = app.test_client()
    answer_all(client, builtin)
    folder = definitions(world["tmp"], "gone")
    (folder / f"{SLUG}.toml").unlink()
    publish(world["data"], folder)
    assert worker.cycle()["catalog"] == 1
    assert app.test_client().get(f"/p/{SLUG}").status_code == 404  # not offered to anyone new
    assert submit(client, builtin).status_code == 303
    code = submitted_code(client)
    app.extensions["receipts"].wait()
    done = client.get("/done")  # the confirmation, with the definition the dossier was made with
    assert done.status_code == 200 and code in done.text
    assert dossier_row(app, code)[1:] == (OLD_VERSION, None)


NEW_NAME = "Cấp Phiếu lý lịch tư pháp (mẫu mới)"


def test_staff_screens_show_a_dossier_with_the_release_it_was_made_with(world):
    """The staff dossier page, its receipt and a reprint use the procedure of the dossier's own release (not
    the live one); a correction, a new application, starts on the live release."""
    from agent import views as agent_views

    worker = world["worker"]
    publish(world["data"], definitions(world["tmp"], "r1"))
    worker.cycle()
    app = create_app({"station": {"kind": "counter"}}, station_file=world["config"]["source"])
    app.extensions["catalog_releases"].check_every = 0
    citizen = app.test_client()
    assert citizen.get("/").status_code == 200
    first = app.config["CATALOG"][SLUG]
    assert first.release == 1 and first.processing_days == 10
    answer_all(citizen, first)
    assert submit(citizen, first).status_code == 303
    code = submitted_code(citizen)
    app.extensions["receipts"].wait()

    # Release 2 renames the procedure, shortens it and changes its fee.
    folder = definitions(world["tmp"], "r2")
    path = folder / f"{SLUG}.toml"
    text = path.read_text("utf-8")
    text = text.replace('name = { vi = "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam"', f'name = {{ vi = "{NEW_NAME}"', 1)
    text = re.sub(r"^processing_days = 10$", "processing_days = 3", text, count=1, flags=re.M)
    text = text.replace("[fee]\namount_vnd = 200000", "[fee]\namount_vnd = 250000", 1)
    path.write_text(text, "utf-8")
    publish(world["data"], folder)
    assert worker.cycle()["catalog"] == 1
    staff = staff_client(app)  # its requests switch the app to release 2
    live = app.config["CATALOG"][SLUG]
    assert (live.release, live.name["vi"], live.processing_days, live.fee["amount_vnd"]) == (2, NEW_NAME, 3, 250000)

    page = staff.get(f"/agent/d/{code}").text
    assert first.name["vi"] in page and NEW_NAME not in page
    assert 'data-dossier-release="1"' in page and "bản số 1 (thủ tục phiên bản r1)" in page
    with app.test_request_context():
        row, receipt = agent_views._dossier_receipt(code)
    assert (receipt.procedure_name, receipt.processing_days) == (first.name["vi"], 10)
    assert receipt.fee_vnd == row["fee_due_vnd"] != 250000
    assert staff.get(f"/agent/d/{code}/receipt.png").status_code == 200
    # A reprint composes the same receipt (no printer here: it says so, nothing fails).
    assert staff.post(f"/agent/d/{code}/reprint", data={"csrf_token": csrf_token(page)}).status_code == 303

    # A correction is a new application: it starts on the live release.
    response = staff.post(f"/agent/d/{code}/correct", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 303
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        assert conn.execute("SELECT catalog_release FROM drafts WHERE supersedes IS NOT NULL").fetchall() == [(2,)]
    assert NEW_NAME in staff.get(f"/p/{SLUG}/check", follow_redirects=True).text
