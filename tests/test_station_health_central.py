"""Station health at the central (docs/fleet.md): real station processes (`kiosk serve` and `kiosk sync run`)
send signed heartbeats to a central on 127.0.0.1; a station whose printer fails is listed first on
/staff/stations within one sync cycle and an email (a real SMTP server, aiosmtpd) goes out once per episode;
a tampered heartbeat is refused; filters; history pruning; no personal data anywhere on the way; the page
in pages of 100 (250 stations), problems first; a web app that stopped writing its device state is a
problem. The real stations' harness is tests/support/fleet.py (shared with tests/test_fleet_live.py)."""
import email
import email.policy
import http.client
import json
import random
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiosmtpd.controller import Controller

from devices.printer import Status
from kiosk import device_state
from sync import heartbeat as hb
from sync import protocol
from sync.central import create_central_app
from sync.client import CentralClient
from sync.keys import load_central_keys, load_or_create_signing_key, public_b64
from sync.station_health import Alerter, StationHealth, Thresholds
from sync.worker import station_paths, worker_from_config
from tests.support.fake_printer import FakeNetworkPrinter
from tests.support.fleet import FleetStation
from tests.support.fleet import free_port as _free_port
from tests.support.fleet import station_folder as _station_folder
from tests.support.fleet import until as _until
from tests.support.harness import CentralThread, enrol, sample_answers, submit_many
from tests.test_central import logged_in


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def about(self, station_id: str) -> list:
        return [m for m in self.messages if f"Trạm {station_id}:" in m["Subject"]]


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    inbox.port = controller.port
    yield inbox
    controller.stop()


def _good(station_id: str = "K01", **changes) -> dict:
    doc = {"type": hb.HEARTBEAT, "station_id": station_id, "sent_at": "2026-03-02T08:00:00+00:00", "kind": "kiosk",
           "province": "Hà Nội", "software": "0.1.0", "catalog": "local:abc", "devices_at": "2026-03-02T07:59:00+00:00",
           "printer": "ok", "paper": "ok", "card_reader_expected": True, "card_reader": True, "outbox_pending": 2,
           "outbox_oldest_at": "2026-03-02T07:00:00+00:00", "outbox_oldest_age_s": 3600, "disk_free_mb": 5000.5,
           "clock_offset_s": 1.5, "last_sync_at": "2026-03-02T07:59:30+00:00"}
    doc.update(changes)
    return doc


# -- the heartbeat's one schema --------------------------------------------------------------------------

def test_the_heartbeat_schema_refuses_anything_else():
    assert hb.problem(_good(), "K01") is None
    assert hb.problem(_good(printer=None, paper="unknown", card_reader=None, outbox_oldest_at=None,
                            outbox_oldest_age_s=None, disk_free_mb=None, clock_offset_s=None, last_sync_at=None,
                            catalog=None, devices_at=None), "K01") is None
    assert hb.problem({**_good(), "full_name": "Trần Thị Mai"}, "K01").startswith("unknown_key")
    missing = _good()
    del missing["printer"]
    assert hb.problem(missing, "K01").startswith("missing_key")
    for change in ({"outbox_pending": -1}, {"outbox_pending": 1.5}, {"outbox_pending": True}, {"printer": "on_fire"},
                   {"province": "x" * 101}, {"kind": "tablet"}, {"sent_at": "yesterday"}, {"sent_at": "2026-03-02T08:00:00"},
                   {"card_reader": "yes"}, {"disk_free_mb": float("nan")}, {"software": "a\nb"}, {"type": "other/1"},
                   {"paper": "plenty"}, {"station_id": None}):
        assert hb.problem(_good(**change), "K01") is not None, change
    assert hb.problem(_good(), "K02").startswith("station_mismatch")
    assert hb.problem(["not", "an", "object"], "K01").startswith("not_object")


def test_the_heartbeat_knows_every_printer_status_and_nothing_of_the_dossiers(tmp_path):
    assert set(hb.PRINTER_STATUSES) == {s.code for s in Status}
    assert hb.DEVICE_STATE_FILE == device_state.FILE_NAME and hb.DEVICE_STATE_FORMAT == device_state.FORMAT
    with CentralThread(tmp_path / "central") as central:
        config = _station_folder(tmp_path / "s", central.url, "K01", "Hà Nội")
        enrol(central.central, config)
        submit_many(config, 3, seed=7)
        worker = worker_from_config(config)
        try:
            # No device state yet (the web app is not running): the printer is unknown, not "ok".
            doc = worker.heartbeat.build(worker.conn, worker.client, None)
            assert hb.problem(doc, "K01") is None
            assert (doc["printer"], doc["paper"], doc["card_reader"], doc["devices_at"]) == (None, "unknown", None, None)
            assert doc["outbox_pending"] == 3 and doc["outbox_oldest_age_s"] >= 0
            watch = device_state.DeviceWatch(station_paths(config)["database"].parent, config, lambda: "local:x")
            watch.printed("paper_low")
            worker.cycle()
            kept = central.app.extensions["station_health"].latest()[0]
            assert kept["heartbeat"]["printer"] == "paper_low" and kept["heartbeat"]["paper"] == "low"
            assert kept["heartbeat"]["outbox_pending"] == 0 and kept["heartbeat"]["last_sync_at"]
            assert abs(kept["heartbeat"]["clock_offset_s"]) < 5
            assert worker.heartbeat.last_answer["heartbeat_sha256"]
            # Not due again until a device changes or heartbeat_seconds pass.
            worker.heartbeat.every_s = 3600
            assert worker.cycle().get("heartbeat") == 0
            watch.printed("paper_out")
            assert worker.cycle().get("heartbeat") == 1
        finally:
            worker.close()
        stored = json.dumps(central.app.extensions["station_health"].latest(), ensure_ascii=False)
        answers = sample_answers(random.Random(7))
        assert answers["full_name"] not in stored and answers["id_number"] not in stored


# -- refused heartbeats ------------------------------------------------------------------------------------

def test_a_tampered_or_foreign_heartbeat_is_refused(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        config = _station_folder(tmp_path / "s", central.url, "K01", "Hà Nội")
        enrol(central.central, config)
        paths = station_paths(config)
        signing, _ = load_central_keys(paths["central_keys"])
        client = CentralClient(central.url, "K01", load_or_create_signing_key(paths["station_key"]), signing)
        health = central.app.extensions["station_health"]
        path = "/api/v1/stations/K01/heartbeat"
        good = protocol.canonical_json(_good(sent_at=datetime.now(timezone.utc).isoformat()))

        # Signed for one body, another sent: the body's hash does not match the signature.
        headers = protocol.sign_request(client.key, "K01", "POST", path, good)
        tampered = good.replace(b'"printer":"ok"', b'"printer":"no_printer"')
        conn = http.client.HTTPConnection("127.0.0.1", central.port, timeout=10)
        conn.request("POST", path, tampered, {**headers, "Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 401 and json.loads(answer.read())["error"] == "bad_body_hash"
        # The hash changed with it: the signature does not verify.
        headers[protocol.H_CONTENT] = protocol.sha256_hex(tampered)
        conn.request("POST", path, tampered, {**headers, "Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 401 and json.loads(answer.read())["error"] == "bad_signature"
        conn.close()
        assert health.latest()[0]["heartbeat"] is None

        # Signed by the station, but with a key the schema does not know, or too large, or for another station.
        extra = protocol.canonical_json({**_good(), "citizen": "Trần Thị Mai"})
        resp = client.request("POST", path, extra)
        assert resp.status == 422 and json.loads(resp.body)["error"] == "unknown_key"
        resp = client.request("POST", path, b"{" + b" " * 5000 + b"}")
        assert resp.status == 413
        resp = client.request("POST", "/api/v1/stations/K02/heartbeat", good)
        assert resp.status == 403
        assert health.latest()[0]["heartbeat"] is None

        resp = client.request("POST", path, good)
        assert resp.status == 200
        doc = protocol.open_document(signing, resp.body, hb.HEARTBEAT_ACK)
        assert doc["station_id"] == "K01" and doc["heartbeat_sha256"] == protocol.sha256_hex(good)
        assert health.latest()[0]["heartbeat"]["printer"] == "ok"
        client.close()



@pytest.fixture
def database(central_database):
    """SQLite, then PostgreSQL (tests/conftest.py's ``central_database``)."""
    return central_database


# -- history -------------------------------------------------------------------------------------------------

def test_history_keeps_one_row_per_hour_and_is_pruned_after_the_window(tmp_path, database):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central"), "DATABASE": database})
    central = app.extensions["dvc_central"]
    for station_id in ("K01", "K02"):
        central.store.enrol(station_id, public_b64(load_or_create_signing_key(tmp_path / f"{station_id}.key")))
    health = StationHealth(central.store, history_days=30)
    now = datetime(2026, 3, 2, 10, 30, tzinfo=timezone.utc)
    health.record("K02", _good("K02"), now - timedelta(days=40))
    health.record("K01", _good(outbox_oldest_age_s=10), now - timedelta(days=40))
    health.record("K01", _good(outbox_oldest_age_s=20), now - timedelta(days=29))
    health.record("K01", _good(outbox_oldest_age_s=30), now - timedelta(minutes=20))
    health.record("K01", _good(outbox_oldest_age_s=40), now)  # the same hour: one row, the latest values
    assert health.history_rows("K01") == [("2026-02-01T10", 2, 20), ("2026-03-02T10", 2, 40)]
    # A station's own old rows go at its heartbeat; a silent station's wait for the hourly prune of all.
    assert health.history_rows("K02") == [("2026-01-21T10", 2, 3600)]
    assert health.prune(now) == 1
    assert health.history_rows("K02") == [] and len(health.history_rows("K01")) == 2
    assert health.latest()[0]["heartbeat"]["outbox_oldest_age_s"] == 40
    assert health.plots(now - timedelta(days=30))["K01"]["outbox_age_s"] == {"2026-02-01T10": 20, "2026-03-02T10": 40}


# -- alerts ---------------------------------------------------------------------------------------------------

class FlakyMail:
    sender = "canh-bao@dvc.local"

    def __init__(self):
        self.sent, self.fail = [], False

    def deliver(self, message):
        from sync.notify import NotifyError

        if self.fail:
            raise NotifyError("email: SMTP down")
        self.sent.append(message)


def test_an_alert_is_mailed_once_per_episode_and_again_after_a_failed_send(tmp_path, database):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central"), "DATABASE": database})
    central = app.extensions["dvc_central"]
    central.store.enrol("K01", public_b64(load_or_create_signing_key(tmp_path / "k.key")), "Bưu điện Ba Đình")
    health = StationHealth(central.store, Thresholds(clock_minutes=5))
    mail = FlakyMail()
    alerter = Alerter(health, mail, ["ops@example.vn"])
    now = datetime.now(timezone.utc)
    health.record("K01", _good(clock_offset_s=900.0), now)
    mail.fail = True
    assert alerter.run_once(now)["failed"] == 1 and mail.sent == []
    mail.fail = False
    assert alerter.run_once(now)["sent"] == 1
    assert alerter.run_once(now)["sent"] == 0 and alerter.run_once(now)["sent"] == 0
    assert "Đồng hồ lệch" in mail.sent[0]["Subject"] and "K01" in mail.sent[0]["Subject"]
    health.record("K01", _good(clock_offset_s=2.0), now)
    assert alerter.run_once(now)["problems"] == 0 and health.open_alerts() == {}
    health.record("K01", _good(clock_offset_s=-900.0, printer="paper_out", paper="out"), now)
    assert alerter.run_once(now)["sent"] == 1 and len(mail.sent) == 2
    assert "Máy in không hoạt động" in mail.sent[1]["Subject"] and "Đồng hồ lệch" in mail.sent[1]["Subject"]
    # Silent: no heartbeat for longer than the threshold, found by the pass alone.
    later = now + timedelta(hours=7)
    assert alerter.run_once(later)["sent"] == 1 and "Mất liên lạc" in mail.sent[2]["Subject"]


# -- several real stations ---------------------------------------------------------------------------------

STATIONS = [("K01", "kiosk", "Hà Nội"), ("C01", "counter", "Thừa Thiên Huế"), ("M01", "mobile", "Hà Nội")]


@pytest.mark.slow
def test_real_stations_report_and_a_failed_printer_is_listed_first_within_one_cycle(tmp_path, smtp):
    printers = {sid: FakeNetworkPrinter(state="ok").start() for sid, _, _ in STATIONS[:2]}
    central = CentralThread(tmp_path / "central", NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=smtp.port,
                            ALERT_EMAIL_TO="truc-ban@example.vn", ALERT_INTERVAL=0.2).__enter__()
    stations = []
    try:
        for n, (sid, kind, province) in enumerate(STATIONS, start=1):
            if sid in printers:
                devices = 'card_reader = "none"\nprinter = "network"\n'
                extra = f'[printer]\nhost = "127.0.0.1"\nport = {printers[sid].port}\ntimeout_s = 1.0\n'
            else:  # a mobile team whose card reader is not plugged in (no reader of that name anywhere)
                devices, extra = 'card_reader = "Reader that is not plugged in"\nprinter = "none"\n', ""
            station = FleetStation(tmp_path / sid, central, sid, kind, province, devices=devices, printer=extra,
                                   submitted=2, seed=n)
            stations.append(station.start())
        health = central.app.extensions["station_health"]

        def reported():
            latest = {s["station_id"]: s["heartbeat"] for s in health.latest()}
            return all(latest.get(sid) and latest[sid]["outbox_pending"] == 0 and latest[sid]["devices_at"]
                       for sid, _, _ in STATIONS) and latest

        latest = _until(reported, 60)
        assert latest["K01"]["printer"] == "ok" and latest["C01"]["printer"] == "ok"
        assert latest["M01"]["printer"] == "no_printer" and latest["M01"]["card_reader"] is False
        assert latest["K01"]["software"] and latest["K01"]["catalog"].startswith("local:")
        client = logged_in(central.app)

        def page(query=""):
            resp = client.get(f"/staff/stations{query}")
            assert resp.status_code == 200
            return resp.get_data(as_text=True)

        def order(html):
            return [(m.group(1), m.group(2)) for m in re.finditer(r'data-station="(\w+)" data-problems="([^"]*)"', html)]

        html = page()
        assert order(html) == [("M01", "reader_missing"), ("C01", ""), ("K01", "")]
        assert 'data-plot="K01"' in html and 'fill="#1d70b8"' in html  # today's dossiers drawn as a bar
        assert "<script" not in html and "http://" not in html.replace(central.url, "")  # nothing from outside
        _until(lambda: len(smtp.about("M01")) == 1)

        # K01's printer runs out of paper: the web app's next device check writes it, the worker's next
        # cycle carries it, the page lists K01 first.
        printers["K01"].state = "paper_out"
        device_file = tmp_path / "K01" / "var" / device_state.FILE_NAME
        _until(lambda: json.loads(device_file.read_text("utf-8"))["printer"] == "paper_out", 10, 0.02)
        seen = time.monotonic()
        _until(lambda: order(page())[0] == ("K01", "printer_down"), 10, 0.05)
        assert time.monotonic() - seen < 0.2 + 2.0  # one idle cycle (0.2 s) and the exchanges
        mail = _until(lambda: smtp.about("K01"), 10)
        assert "Máy in không hoạt động" in mail[0]["Subject"]
        time.sleep(1.5)  # more cycles and alert passes: still one email for the episode
        assert len(smtp.about("K01")) == 1 and len(smtp.about("M01")) == 1 and smtp.about("C01") == []

        # Filters (a plain GET form).
        assert [sid for sid, _ in order(page("?province=Thừa+Thiên+Huế"))] == ["C01"]
        assert [sid for sid, _ in order(page("?kind=mobile"))] == ["M01"]
        assert [sid for sid, _ in order(page("?province=Hà+Nội&kind=kiosk"))] == ["K01"]
        assert client.get("/staff/stations?kind=tablet").status_code == 400

        # The printer is fixed: the episode ends; it fails again: a new episode, a new email.
        printers["K01"].state = "ok"
        _until(lambda: ("K01", "") in order(page()), 10, 0.05)
        _until(lambda: "K01" not in health.open_alerts(), 10)
        printers["K01"].state = "cover_open"
        _until(lambda: len(smtp.about("K01")) == 2, 10)
        time.sleep(1.0)
        assert len(smtp.about("K01")) == 2

        # Nothing of a citizen on the page, in the stored heartbeats or in the mails.
        everything = page() + json.dumps(health.latest(), ensure_ascii=False) + "".join(
            m.get_content() for m in smtp.messages)
        for n, _ in enumerate(STATIONS, start=1):
            answers = sample_answers(random.Random(n))
            for key in ("full_name", "id_number", "phone", "residence"):
                assert answers[key] not in everything
    finally:
        for station in stations:
            station.stop()
        central.stop()
        for printer in printers.values():
            printer.stop()


# -- a province's worth of stations ----------------------------------------------------------------------------

def test_the_stations_page_comes_in_pages_problems_first(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.station_health import PAGE_SIZE

    app = create_central_app({"DATA_DIR": str(tmp_path / "central")})
    central, health = app.extensions["dvc_central"], app.extensions["station_health"]
    now = datetime.now(timezone.utc)
    fresh = now.isoformat(timespec="seconds")
    for i in range(250):
        sid = f"K{i:04d}"
        central.store.enrol(sid, public_b64(Ed25519PrivateKey.generate()))
        changes = {"sent_at": fresh, "devices_at": fresh}
        if i % 10 == 3:
            changes.update(printer="paper_out", paper="out")
        if i % 50 == 7:  # the worker sends, the web app stopped writing its device state half an hour ago
            changes["devices_at"] = (now - timedelta(minutes=30)).isoformat(timespec="seconds")
        health.record(sid, _good(sid, **changes), now - timedelta(hours=7) if i in (11, 12) else now)
    silent, app_down = ["K0011", "K0012"], [f"K{i:04d}" for i in range(7, 250, 50)]
    printer_down = [f"K{i:04d}" for i in range(3, 250, 10)]
    fine = sorted({f"K{i:04d}" for i in range(250)} - set(silent + app_down + printer_down))
    client = logged_in(app)

    def page(query=""):
        resp = client.get(f"/staff/stations{query}")
        assert resp.status_code == 200
        html = resp.get_data(as_text=True)
        return html, [(m.group(1), m.group(2)) for m in
                      re.finditer(r'data-station="(\w+)" data-problems="([^"]*)"', html)]

    assert PAGE_SIZE == 100
    first, rows = page()
    assert len(rows) == 100 and first.count("<svg") == 100  # one chart per row of the page, not 250
    assert rows[:2] == [(sid, "silent") for sid in silent]
    assert rows[2:7] == [(sid, "app_down") for sid in app_down]
    assert rows[7:32] == [(sid, "printer_down") for sid in printer_down]
    assert "Ứng dụng trên máy không chạy" in first and "Station app not running" in first
    assert "32 trạm có vấn đề trên 250 trạm" in first  # the summary counts every page
    assert 'data-pages="3"' in first and 'data-page-link="2"' in first and 'href="/staff/stations?page=3"' in first
    second, rows2 = page("?page=2")
    third, rows3 = page("?page=3")
    assert len(rows2) == 100 and len(rows3) == 50 and third.count("<svg") == 50
    assert [sid for sid, _ in rows + rows2 + rows3] == silent + app_down + printer_down + fine
    assert all(problems == "" for _, problems in rows2 + rows3)
    assert page("?page=9")[1] == rows3  # past the end: the last page
    # The filter stays in the page links (a plain GET form and plain links: no script).
    filtered, _ = page("?kind=kiosk&province=H%C3%A0+N%E1%BB%99i")
    assert re.search(r'href="/staff/stations\?[^"]*kind=kiosk[^"]*page=2"', filtered)
    assert "<script" not in filtered
    for bad in ("?page=0", "?page=x", "?page=-1"):
        assert client.get(f"/staff/stations{bad}").status_code == 400


def test_a_station_whose_web_app_stopped_is_a_problem_after_the_threshold(tmp_path):
    app = create_central_app({"DATA_DIR": str(tmp_path / "central"), "ALERT_DEVICES_MINUTES": "10"})
    central, health = app.extensions["dvc_central"], app.extensions["station_health"]
    assert health.thresholds.devices_minutes == 10
    central.store.enrol("K01", public_b64(load_or_create_signing_key(tmp_path / "k.key")))
    now = datetime.now(timezone.utc)

    def problems(devices_at):
        health.record("K01", _good(sent_at=now.isoformat(), devices_at=devices_at), now)
        return health.overview(now)[0]["problems"]

    assert problems((now - timedelta(minutes=9)).isoformat()) == []
    assert problems((now - timedelta(minutes=11)).isoformat()) == ["app_down"]
    # Never written: a problem only once the station was enrolled longer ago than the threshold.
    assert problems(None) == []
    assert "app_down" in health.problems({**health.latest()[0], "enrolled_at": (now - timedelta(hours=1)).isoformat()}, now)
