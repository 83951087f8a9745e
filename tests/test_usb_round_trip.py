"""The USB round trip on screen, for a commune official with no terminal: export to a stick (the flash says
what went where, the staff bar says the dossiers are on a stick since when), import the bundle on the
central's staff page and download its ack file, bring it back and apply it from the station's home page.
The refusals each say why in plain words and change nothing. The last test clicks the whole trip in
headless Chromium against a real station process and a real central server."""
import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import staff
from kiosk.app import create_app
from kiosk.core.db import connect
from sync.bundle import ack_file_bytes, import_bundle, write_ack_file, write_private_file
from sync.central import create_central_app
from sync.central_cli import central as central_group
from tests.support.harness import enrol, make_station, submit_many

from .conftest import csrf_token
from .test_central import logged_in

PIN = "246810"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def team(tmp_path):
    """A mobile team's station (M01, no link, its stick a folder), enrolled at a central's data folder; a
    staff member logged in on the station's test client."""
    config = make_station(tmp_path / "team", "http://127.0.0.1:9", station_id="M01")
    central_app = create_central_app({"DATA_DIR": str(tmp_path / "central"), "TESTING": True})
    enrol(central_app.extensions["dvc_central"], config)
    stick = tmp_path / "stick"
    stick.mkdir()
    app = create_app({"station": {"kind": "mobile", "id": "M01"}, "sync": {"export_dir": str(stick)}},
                     station_file=config["source"])
    app.config["REMOVABLE_MOUNTS"] = tmp_path / "no-mounts"  # no stick mounted but the folder
    conn = connect(app.config["DATABASE"])
    try:
        staff.add(conn, "lan", "Nguyễn Thị Lan", "agent", PIN)
    finally:
        conn.close()
    client = app.test_client()
    page = client.get("/agent/login")
    client.post("/agent/login", data={"csrf_token": csrf_token(page.text), "username": "lan", "secret": PIN})
    return {"config": config, "app": app, "client": client, "stick": stick, "central_app": central_app,
            "central": central_app.extensions["dvc_central"], "tmp": tmp_path}


def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def _post(client, path, form):
    """A form on the home page posted as the browser does; returns the home page it is sent back to."""
    home = client.get("/agent/")
    response = client.post(path, data={"csrf_token": csrf_token(home.text), **form})
    assert response.status_code == 303 and response.headers["Location"].endswith("/agent/")
    return client.get("/agent/").text


def _import_ack(team, name: str, target: str = "0") -> str:
    """Press the button beside ``name`` on the home page; returns the home page with its flash."""
    return _post(team["client"], "/agent/acks", {"target": target, "name": name})


def _export(team) -> tuple[str, Path]:
    page = _post(team["client"], "/agent/export", {"target": "0"})
    bundles = sorted(team["stick"].glob("*.dvcbundle"))
    return page, bundles[-1]


def _banner_text(page: str, attribute: str) -> str | None:
    match = re.search(rf'<p class="waiting-banner" role="status" {attribute}="(\d+)">([^<]*)</p>', page)
    return f"{match.group(1)}|{match.group(2)}" if match else None


def test_export_says_what_went_where_and_the_ack_file_comes_back_from_the_stick(team):
    app, client, stick = team["app"], team["client"], team["stick"]
    submit_many(team["config"], 3)
    home = client.get("/agent/").text
    assert _banner_text(home, "data-waiting").startswith("3|3 hồ sơ đang chờ gửi đi")
    assert "data-on-stick" not in home
    assert "Chưa thấy tệp xác nhận (.acks.json) nào trên USB" in home  # a mobile station offers the way back

    page, bundle = _export(team)
    assert f"Đã chép 3 hồ sơ vào tệp {bundle.name} trong thư mục {stick}." in page
    assert re.fullmatch(r"M01-\d{8}T\d{6}-[0-9a-f]{8}\.dvcbundle", bundle.name)
    assert _mode(bundle) == 0o600
    # The bar now says they are on a stick, since when, and that the central's answer is awaited.
    on_stick = _banner_text(page, "data-on-stick")
    assert re.fullmatch(r"3\|3 hồ sơ đã chép ra USB lúc \d\d:\d\d ngày \d\d/\d\d/\d{4}, chờ xác nhận của trung tâm",
                        on_stick), on_stick
    assert "data-waiting" not in page
    assert _rows(app, "SELECT state, COUNT(*) FROM outbox GROUP BY state") == [("pending", 3)]
    (made,) = _rows(app, "SELECT file_name, dossiers FROM sync_bundles")
    assert made == (bundle.name, 3)

    # One more dossier after the export: on no stick yet, counted as waiting as before.
    submit_many(team["config"], 1, seed=1)
    home = client.get("/agent/").text
    assert _banner_text(home, "data-on-stick").startswith("3|3 hồ sơ đã chép ra USB")
    assert _banner_text(home, "data-waiting").startswith("1|1 hồ sơ đang chờ gửi đi")

    # The central imports the bundle (here its command); the ack file is named after the bundle, beside it.
    out = CliRunner().invoke(central_group, ["import", "--data", str(team["tmp"] / "central"), str(bundle)])
    assert out.exit_code == 0, out.output
    ack = stick / (bundle.name + ".acks.json")
    assert ack.is_file() and _mode(ack) == 0o600 and f"acks in {ack}" in out.output
    home = client.get("/agent/").text
    listed = re.search(rf'<li data-ack-file="{re.escape(ack.name)}">(.*?)</li>', home, re.S)
    assert listed and "trả lời gói chép lúc" in listed.group(1) and "(3 hồ sơ)" in listed.group(1)

    page = _import_ack(team, ack.name)
    assert "Trung tâm đã nhận 3 hồ sơ; 0 bị từ chối." in page
    assert "data-on-stick" not in page and _banner_text(page, "data-waiting").startswith("1|")
    assert _rows(app, "SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state") == [
        ("pending", 1), ("sent", 3)]
    # Applied twice: it says so, and nothing changes.
    again = _import_ack(team, ack.name)
    assert "Tệp này đã được nhập trước đây: 3 hồ sơ đã ghi nhận, không có gì thay đổi." in again
    events = _rows(app, "SELECT actor, action, detail FROM audit_events WHERE action LIKE 'acks.%' ORDER BY seq")
    assert [(actor, action) for actor, action, _ in events] == [("lan", "acks.imported")] * 2
    assert json.loads(events[0][2]) == {"acknowledged": 3, "rejected": 0, "already": 0, "ignored": 0}


def test_ack_files_that_cannot_be_used_are_refused_with_the_reason(team):
    app, client, stick, central = team["app"], team["client"], team["stick"], team["central"]
    submit_many(team["config"], 2)
    _page, bundle = _export(team)
    ack_file, _counts = import_bundle(central, bundle.read_bytes())

    # Altered on the way: every answer's signature fails, so nothing is applied.
    forged = dict(ack_file, acks=[{**a, "document": {**a["document"], "central_code": "GIA-MAO"}}
                                  for a in ack_file["acks"]])
    write_ack_file(stick / "sua.acks.json", forged)
    page = _import_ack(team, "sua.acks.json")
    assert "Không nhập được: không câu trả lời nào trong tệp mang chữ ký đúng của trung tâm" in page
    # Another station's file.
    write_ack_file(stick / "tram-khac.acks.json", dict(ack_file, station_id="M02"))
    page = _import_ack(team, "tram-khac.acks.json")
    assert "Không nhập được: tệp này là xác nhận cho một trạm khác, không phải trạm M01." in page
    # Not an ack file at all (a captive portal's page saved by mistake), and a truncated one.
    (stick / "trang-web.acks.json").write_text("<html>portal</html>")
    assert "tệp này không phải tệp xác nhận của trung tâm" in _import_ack(team, "trang-web.acks.json")
    (stick / "dut.acks.json").write_bytes(ack_file_bytes(ack_file)[:200])
    assert "tệp này không phải tệp xác nhận của trung tâm" in _import_ack(team, "dut.acks.json")
    assert _rows(app, "SELECT state, COUNT(*) FROM outbox GROUP BY state") == [("pending", 2)]

    # Only a file listed at the top of a target is read: no path, no other folder, no link, no stale choice.
    outside = team["tmp"] / "outside.acks.json"
    write_ack_file(outside, ack_file)
    (stick / "sub").mkdir()
    write_ack_file(stick / "sub" / "deep.acks.json", ack_file)
    os.symlink(outside, stick / "link.acks.json")
    home = client.get("/agent/").text
    assert 'data-ack-file="sua.acks.json"' in home and "link.acks.json" not in home and "deep" not in home
    for target, name in (("0", "../outside.acks.json"), ("0", str(outside)), ("0", "sub/deep.acks.json"),
                         ("0", "link.acks.json"), ("7", "sua.acks.json"), ("x", "sua.acks.json")):
        assert "Không còn thấy tệp đó trên USB" in _import_ack(team, name, target), (target, name)
    assert _rows(app, "SELECT state, COUNT(*) FROM outbox GROUP BY state") == [("pending", 2)]
    refused = _rows(app, "SELECT actor, detail FROM audit_events WHERE action = 'acks.refused' ORDER BY seq")
    assert [json.loads(detail)["code"] for _actor, detail in refused] == [
        "not_genuine", "other_station", "not_ack_file", "not_ack_file"]
    assert {actor for actor, _ in refused} == {"lan"}

    # The right file still works after all that.
    write_ack_file(stick / (bundle.name + ".acks.json"), ack_file)
    assert "Trung tâm đã nhận 2 hồ sơ; 0 bị từ chối." in _import_ack(team, bundle.name + ".acks.json")


def test_the_ack_file_pages_need_a_login_and_a_token(team):
    fresh = team["app"].test_client()
    assert fresh.post("/agent/acks", data={"target": "0", "name": "x.acks.json"}).status_code in (302, 303, 400)
    assert team["client"].post("/agent/acks", data={"target": "0", "name": "x.acks.json"}).status_code == 400


def test_the_central_staff_page_imports_a_bundle_and_offers_the_ack_file(team):
    submit_many(team["config"], 3)
    _page, bundle = _export(team)
    central_app, central = team["central_app"], team["central"]
    client = logged_in(central_app)
    page = client.get("/staff/").get_data(as_text=True)
    assert "Nhập gói hồ sơ từ USB" in page and 'enctype="multipart/form-data"' in page
    response = client.post("/staff/bundles", content_type="multipart/form-data",
                           data={"csrf_token": csrf_token(page), "bundle": (bundle.open("rb"), bundle.name)})
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    shown = client.get(response.headers["Location"]).get_data(as_text=True)
    assert re.search(r'data-k="created">3<', shown) and re.search(r'data-k="rejected">0<', shown)
    assert "Tải tệp xác nhận" in shown and central.store.count() == 3
    link = re.search(r'href="([^"]+/acks)" download', shown).group(1)
    download = client.get(link)
    assert download.status_code == 200
    assert download.headers["Content-Disposition"] == f'attachment; filename="{bundle.name}.acks.json"'
    # Byte for byte what `kiosk central import` writes for the same bundle.
    out = CliRunner().invoke(central_group, ["import", "--data", str(team["tmp"] / "central"), str(bundle),
                                             "--acks-out", str(team["tmp"] / "cli.acks.json")])
    assert out.exit_code == 0 and "0 new, 3 already received" in out.output, out.output
    assert download.data == (team["tmp"] / "cli.acks.json").read_bytes()
    kept = team["tmp"] / "central" / "bundle-acks"
    assert _mode(kept) == 0o700 and {_mode(p) for p in kept.iterdir()} == {0o600}
    # Imported again on the page: no duplicates, the same file, and the import listed on the staff page.
    page = client.get("/staff/").get_data(as_text=True)
    again = client.post("/staff/bundles", content_type="multipart/form-data",
                        data={"csrf_token": csrf_token(page), "bundle": (bundle.open("rb"), "doi-ten.dvcbundle")})
    shown = client.get(again.headers["Location"]).get_data(as_text=True)
    assert re.search(r'data-k="created">0<', shown) and re.search(r'data-k="duplicate">3<', shown)
    assert client.get(link).data == download.data and central.store.count() == 3
    assert f"{bundle.name}.acks.json" in client.get("/staff/").get_data(as_text=True)

    # The file downloaded goes back on the stick and the station applies it.
    (team["stick"] / f"{bundle.name}.acks.json").write_bytes(download.data)
    assert "Trung tâm đã nhận 3 hồ sơ; 0 bị từ chối." in _import_ack(team, f"{bundle.name}.acks.json")


def test_a_bad_bundle_upload_at_the_central_says_why_and_imports_nothing(team, tmp_path):
    submit_many(team["config"], 2)
    _page, bundle = _export(team)
    central_app, central = team["central_app"], team["central"]
    client = logged_in(central_app)

    def upload(data: bytes | None, name="goi.dvcbundle", app_client=client):
        page = app_client.get("/staff/").get_data(as_text=True)
        form = {"csrf_token": csrf_token(page)}
        if data is not None:
            form["bundle"] = (__import__("io").BytesIO(data), name)
        return app_client.post("/staff/bundles", content_type="multipart/form-data", data=form)

    def said(response) -> tuple[int, str, str]:
        text = response.get_data(as_text=True)
        match = re.search(r'data-import-error="([a-z_]+)">([^<]*)', text)
        return response.status_code, match.group(1), match.group(2).strip()

    status, code, words = said(upload(None))
    assert (status, code) == (422, "no_file") and words.startswith("Hãy chọn tệp gói hồ sơ (.dvcbundle)")
    status, code, words = said(upload(b"<html>portal</html>"))
    assert (status, code) == (422, "not_bundle") and "không phải gói hồ sơ của trạm" in words
    data = json.loads(bundle.read_bytes())
    tampered = json.dumps(dict(data, header={**data["header"], "dossiers": 1})).encode()
    status, code, words = said(upload(tampered))
    assert (status, code) == (422, "bad_signature") and "có thể đã bị sửa" in words
    other = create_central_app({"DATA_DIR": str(tmp_path / "other-central"), "TESTING": True})
    other.extensions["dvc_central"].store.enrol("M01", central.store.station("M01").public_key)
    status, code, words = said(upload(bundle.read_bytes(), app_client=logged_in(other)))
    assert (status, code) == (422, "wrong_central") and "khóa của trung tâm này" in words
    unknown = create_central_app({"DATA_DIR": str(tmp_path / "third-central"), "TESTING": True})
    status, code, words = said(upload(bundle.read_bytes(), app_client=logged_in(unknown)))
    assert (status, code) == (422, "unknown_station") and "chưa đăng ký" in words
    central_app.config["BUNDLE_UPLOAD_MAX"] = 1 << 20
    status, code, words = said(upload(bundle.read_bytes() + b" " * (2 << 20)))
    assert status == 413 and code == "too_large" and "tối đa 1 MiB" in words
    central_app.config["BUNDLE_UPLOAD_MAX"] = 64 << 20
    central.store.revoke("M01")
    status, code, words = said(upload(bundle.read_bytes()))
    assert (status, code) == (422, "revoked_station") and "thu hồi khóa" in words
    assert central.store.count() == 0 and not (tmp_path / "central" / "bundle-acks").exists()

    # Only for a logged-in account, with the form's token, from this site.
    stranger = central_app.test_client()
    refused = stranger.post("/staff/bundles", content_type="multipart/form-data",
                            data={"bundle": (bundle.open("rb"), bundle.name)})
    assert refused.status_code == 400  # no CSRF token
    page = client.get("/staff/").get_data(as_text=True)
    cross = client.post("/staff/bundles", content_type="multipart/form-data", headers={"Origin": "http://evil.example"},
                        data={"csrf_token": csrf_token(page), "bundle": (bundle.open("rb"), bundle.name)})
    assert cross.status_code == 403
    assert stranger.get("/staff/bundles/00000000-0000-4000-8000-000000000000").status_code in (302, 303)
    assert client.get("/staff/bundles/00000000-0000-4000-8000-000000000000").status_code == 404
    assert client.get("/staff/bundles/../central.ed25519/acks").status_code == 404
    assert central.store.count() == 0


def test_bundles_and_ack_files_are_written_for_their_owner_only(tmp_path):
    old = os.umask(0)
    try:
        write_private_file(tmp_path / "a.dvcbundle", b"{}")
        (tmp_path / "b.acks.json.part").write_bytes(b"old")
        os.chmod(tmp_path / "b.acks.json.part", 0o666)  # left from a pulled stick
        write_ack_file(tmp_path / "b.acks.json", {"format": "dvc-acks/1"})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.dvcbundle") == 0o600 and _mode(tmp_path / "b.acks.json") == 0o600
    assert json.loads((tmp_path / "b.acks.json").read_text()) == {"format": "dvc-acks/1"}


def test_an_export_folder_made_by_the_export_is_private(team):
    from sync.bundle import export_station_bundle

    submit_many(team["config"], 1)
    conn = connect(team["app"].config["DATABASE"])
    try:
        result = export_station_bundle(team["config"], conn, team["tmp"] / "new-folder" / "bundles")
    finally:
        conn.close()
    assert _mode(result["path"].parent) == 0o700 and _mode(result["path"]) == 0o600


def test_the_cli_help_and_the_docs_name_the_ack_file_alike():
    from sync.sync_cli import sync as sync_group

    helped = CliRunner().invoke(central_group, ["import", "--help"]).output
    assert "BUNDLE_FILE.acks.json" in helped
    assert "BUNDLE_FILE.acks.json" in CliRunner().invoke(sync_group, ["import-acks", "--help"]).output
    docs = (Path(__file__).resolve().parent.parent / "docs" / "sync.md").read_text("utf-8")
    assert "FILE.acks.json" in docs and ".dvcbundle.acks.json" in docs


# --- the whole trip in the browser ----------------------------------------------------------------------

CENTRAL_PASSWORD = "mật-khẩu-trung-tâm"


@pytest.mark.browser
@pytest.mark.slow
def test_a_commune_official_does_the_whole_usb_round_trip_in_the_browser(tmp_path, browser, catalog):
    """A mobile station with no link (its central address answers nothing) and a stick (the station file's
    export folder); the reference central served on 127.0.0.1. Three dossiers are submitted over HTTP; the
    export, the banner, the central's import, the download onto the stick and the station's import of the
    ack file are clicked."""
    import subprocess
    import sys

    from kiosk.core.config import load_station
    from tests.support.harness import CentralThread
    from tests.support.http_citizen import HttpCitizen
    from tests.support.live_station import LiveStation

    from .test_accessibility import _violations

    stick = tmp_path / "stick"
    stick.mkdir()
    station = LiveStation(tmp_path / "team", kind="mobile", station_id="M01",
                          extra=f'[central]\nurl = "http://127.0.0.1:9"\n[sync]\nexport_dir = "{stick}"\n'
                                '[devices]\ncard_reader = "none"\nscanner = "none"\n')
    subprocess.run([sys.executable, "-m", "kiosk", "staff", "add", "--station", str(station.station_file), "lan",
                    "--name", "Nguyễn Thị Lan", "--role", "agent", "--pin-stdin"], input=PIN + "\n", text=True,
                   check=True, capture_output=True, cwd=station.data_dir)
    with CentralThread(tmp_path / "central") as central:
        central.central.add_staff("thu", CENTRAL_PASSWORD)
        enrol(central.central, load_station(station.station_file))
        station.start()
        team = browser.new_context(viewport={"width": 1280, "height": 1000})
        office = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
        page = team.new_page()
        try:
            base = station.url
            page.goto(base + "/agent/login")
            page.get_by_label("Tên đăng nhập").fill("lan")
            page.get_by_label("Mã PIN hoặc mật khẩu").fill(PIN)
            page.get_by_role("button", name="Đăng nhập").click()
            page.wait_for_url(base + "/agent/")
            citizen = HttpCitizen("127.0.0.1", station.port)
            try:
                codes = [citizen.apply(catalog["dang-ky-khai-tu"]) for _ in range(3)]
            finally:
                citizen.close()
            page.goto(base + "/agent/")
            assert page.locator("[data-waiting]").inner_text().startswith("3 hồ sơ đang chờ gửi đi")

            # Export to the stick: the message says how many, which file, which folder.
            page.get_by_label(str(stick)).check()
            page.get_by_role("button", name="Chép ra USB").click()
            page.get_by_text("Đã chép 3 hồ sơ vào tệp").wait_for()
            (bundle,) = stick.glob("*.dvcbundle")
            assert f"Đã chép 3 hồ sơ vào tệp {bundle.name} trong thư mục {stick}." in page.locator(".notice").inner_text()
            on_stick = page.locator("[data-on-stick]").inner_text()
            assert re.fullmatch(r"3 hồ sơ đã chép ra USB lúc \d\d:\d\d ngày \d\d/\d\d/\d{4}, chờ xác nhận của trung "
                                r"tâm", on_stick), on_stick
            assert page.locator("[data-waiting]").count() == 0
            assert page.locator("[data-no-acks]").is_visible()  # no answer from the central yet

            # At the central: log in, upload the bundle, see what was received, download the ack file.
            desk = office.new_page()
            desk.goto(central.url + "/staff/login")
            desk.get_by_label("Tên đăng nhập").fill("thu")
            desk.get_by_label("Mật khẩu").fill(CENTRAL_PASSWORD)
            desk.get_by_role("button", name="Đăng nhập").click()
            desk.wait_for_url(central.url + "/staff/")
            desk.get_by_label("Tệp gói hồ sơ").set_input_files(str(bundle))
            desk.get_by_role("button", name="Nhập gói").click()
            desk.locator("[data-imported]").wait_for()
            assert desk.locator("[data-k='created']").inner_text() == "3"
            assert desk.locator("[data-k='rejected']").inner_text() == "0"
            assert sorted(desk.locator("[data-received] tbody tr td:nth-child(2)").all_inner_texts()) == sorted(codes)
            central_problems = _violations(desk)
            with desk.expect_download() as downloading:
                desk.get_by_role("link", name="Tải tệp xác nhận").click()
            download = downloading.value
            assert download.suggested_filename == bundle.name + ".acks.json"
            download.save_as(stick / download.suggested_filename)  # onto the stick, beside the bundle

            # Back at the station: the file is listed; one press applies it.
            page.goto(base + "/agent/")
            row = page.locator(f"[data-ack-file='{bundle.name}.acks.json']")
            assert "trả lời gói chép lúc" in row.inner_text()
            station_problems = _violations(page)
            page.set_viewport_size({"width": 360, "height": 740})  # a phone: the long names wrap in their box
            assert row.locator(".usb-file").evaluate("p => p.scrollWidth <= p.clientWidth")
            row.get_by_role("button", name="Nhập xác nhận").click()
            page.get_by_text("Trung tâm đã nhận 3 hồ sơ; 0 bị từ chối.").wait_for()
            assert page.locator("[data-on-stick]").count() == 0 and page.locator("[data-waiting]").count() == 0
            assert page.locator(".waiting-none").inner_text() == "Mọi hồ sơ đã được gửi đi"
            # Pressed again (a second official, the same stick): it says the file was applied before.
            page.locator(f"[data-ack-file='{bundle.name}.acks.json']").get_by_role("button", name="Nhập xác nhận").click()
            page.get_by_text("Tệp này đã được nhập trước đây: 3 hồ sơ đã ghi nhận").wait_for()
            assert (central_problems, station_problems) == ([], [])
        finally:
            team.close()
            office.close()
            station.stop()
    with sqlite3.connect(station.database) as conn:
        assert conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall() == [("sent", 3)]
        assert conn.execute("SELECT COUNT(*) FROM dossiers WHERE central_code IS NOT NULL").fetchone() == (3,)


def test_a_form_posted_on_the_central_itself_under_no_referrer_is_taken(team):
    """Chromium posts a form with "Origin: null" when the page's Referrer-Policy is no-referrer (the staff
    pages' own): Sec-Fetch-Site, which no page can set, tells this site's forms from another's."""
    client = logged_in(team["central_app"])
    page = client.get("/staff/").get_data(as_text=True)
    same = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/staff/bundles", data={"csrf_token": csrf_token(page)}, headers=same).status_code == 422
    for other in ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, {"Origin": "null"},
                  {"Origin": "null", "Sec-Fetch-Site": "same-site"}):
        assert client.post("/staff/bundles", data={"csrf_token": csrf_token(page)}, headers=other).status_code == 403
