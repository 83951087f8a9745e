"""A province in small (issue 19, docs/catalog-releases.md, docs/fleet.md): a central on 127.0.0.1 and three
real stations (`kiosk serve` and `kiosk sync run` each). A catalog release published at the central reaches
every station through its own sync worker; each web app switches new applications to it while an application
already in progress over HTTP finishes on the release it started with, and each dossier records its release;
the heartbeat names the release the web app serves from the switch on (device-state.json is written at the
switch), so the central's /staff/stations page shows it; a tampered release imported on one station is
refused there while every station runs on."""
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kiosk.core.catalog import PROCEDURES_DIR, load_catalog
from sync.catalog_release import StationCatalog
from sync.central_catalog import publish
from tests.support.fleet import FleetStation, until
from tests.support.harness import CentralThread
from tests.support.http_citizen import HttpCitizen
from tests.test_central import logged_in

SLUG = "dang-ky-khai-tu"
STATIONS = [("K01", "kiosk", "Hà Nội"), ("C01", "counter", "Thừa Thiên Huế"), ("M01", "mobile", "Hà Nội")]


def release_folder(tmp_path: Path, n: int) -> Path:
    """The shipped definitions, ``SLUG`` renamed "… R<n>" and versioned "fleet-<n>" (what a new application
    shows and what its dossier records)."""
    folder = tmp_path / f"release-{n}"
    shutil.copytree(PROCEDURES_DIR, folder)
    path = folder / f"{SLUG}.toml"
    text = path.read_text("utf-8")
    text = re.sub(r'^version = ".*"$', f'version = "fleet-{n}"', text, count=1, flags=re.M)
    text = text.replace('name = { vi = "Đăng ký khai tử", en = "Death registration" }',
                        f'name = {{ vi = "Đăng ký khai tử R{n}", en = "Death registration R{n}" }}', 1)
    assert f"khai tử R{n}" in text
    path.write_text(text, "utf-8")
    return folder


def dossier_of(station: FleetStation, code: str) -> tuple:
    with sqlite3.connect(station.data / "station.db") as conn:
        return conn.execute("SELECT procedure_version, catalog_release FROM dossiers "
                            "WHERE replace(tracking_code, '-', '') = ?", (code.replace("-", ""),)).fetchone()


def overview_text(station: FleetStation) -> str:
    citizen = HttpCitizen("127.0.0.1", station.port)
    try:
        return citizen.request("overview", "GET", f"/p/{SLUG}")[2]
    finally:
        citizen.close()


@pytest.mark.slow
def test_a_release_reaches_every_real_station_and_applications_in_progress_finish_on_theirs(tmp_path):
    central = CentralThread(tmp_path / "central").__enter__()
    folders = {n: release_folder(tmp_path, n) for n in (1, 2)}
    procs = {n: load_catalog(folder)[SLUG] for n, folder in folders.items()}
    stations: list[FleetStation] = []
    citizens: list[HttpCitizen] = []
    try:
        assert publish(tmp_path / "central", folders[1])[0] == 1
        for sid, kind, province in STATIONS:
            # A device check only every hour: the heartbeat can name a new release only if the web app writes
            # its device state at the switch itself.
            stations.append(FleetStation(tmp_path / sid, central, sid, kind, province,
                                         device_check_seconds=3600).start())
        health = central.app.extensions["station_health"]

        def heartbeat_catalogs():
            return {s["station_id"]: (s["heartbeat"] or {}).get("catalog") for s in health.latest()}

        # Each worker fetches release 1; each web app switches at its next request.
        for station in stations:
            until(lambda: StationCatalog(station.data).live_number() == 1, 30)
            until(lambda: "khai tử R1" in overview_text(station), 15, 0.3)
        until(lambda: set(heartbeat_catalogs().values()) == {"1"}, 15)

        # On each station a citizen is half-way through (at the consent page) on release 1 ...
        tokens = []
        for station in stations:
            citizen = HttpCitizen("127.0.0.1", station.port)
            citizens.append(citizen)
            tokens.append(citizen.fill(procs[1]))
        # ... when release 2 is published: it reaches every station, new applications use it.
        assert publish(tmp_path / "central", folders[2])[0] == 2
        for station in stations:
            until(lambda: StationCatalog(station.data).live_number() == 2, 30)
            until(lambda: "khai tử R2" in overview_text(station), 15, 0.3)
        new_codes = []
        for station in stations:
            citizen = HttpCitizen("127.0.0.1", station.port)
            try:
                new_codes.append(citizen.apply(procs[2]))
            finally:
                citizen.close()
        # The applications in progress finish on release 1: its name on their pages, its number in their dossier.
        old_codes = []
        for citizen, token in zip(citizens, tokens):
            check = citizen.request("check answers", "GET", f"/p/{SLUG}/check")[2]
            assert "khai tử R1" in check and "khai tử R2" not in check
            citizen.submit(procs[1], token)
            old_codes.append(citizen.finish())
        for station, old, new in zip(stations, old_codes, new_codes):
            assert dossier_of(station, old) == ("fleet-1", 1), station.station_id
            assert dossier_of(station, new) == ("fleet-2", 2), station.station_id

        # The heartbeats follow the switch; the central's page shows each station's release.
        until(lambda: set(heartbeat_catalogs().values()) == {"2"}, 15)
        staff = logged_in(central.app)
        page = staff.get("/staff/stations").get_data(as_text=True)
        for sid, _, _ in STATIONS:
            assert re.search(rf'data-station="{sid}" data-problems="[^"]*" data-catalog="2"', page), sid
        assert page.count("Danh mục số 2") == len(STATIONS)

        # A tampered release (the number raised after signing) imported on C01 is refused there, with the reason.
        counter = stations[1]
        good = (tmp_path / "central" / "catalog-releases" / "catalog-2.dvccatalog").read_bytes()
        assert good.count(b'"release": 2') == 1
        tampered = tmp_path / "catalog-3.dvccatalog"
        tampered.write_bytes(good.replace(b'"release": 2', b'"release": 3'))
        result = subprocess.run([sys.executable, "-m", "sync.sync_cli", "--station", str(counter.station_file),
                                 "import-catalog", str(tampered)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "bad_signature" in result.stdout + result.stderr
        store = StationCatalog(counter.data)
        assert store.live_number() == 2 and store.refused()["code"] == "bad_signature"
        # Every station runs on, on release 2: new applications, heartbeats.
        heard = {s["station_id"]: s["received_at"] for s in health.latest()}
        for station in stations:
            assert "khai tử R2" in overview_text(station)
            citizen = HttpCitizen("127.0.0.1", station.port)
            try:
                code = citizen.apply(procs[2])
            finally:
                citizen.close()
            assert dossier_of(station, code) == ("fleet-2", 2)
        until(lambda: all(s["received_at"] > heard[s["station_id"]] and s["heartbeat"]["catalog"] == "2"
                          for s in health.latest()), 15)
        # Every dossier reaches the central with the release it was made with.
        until(lambda: all(s["heartbeat"]["outbox_pending"] == 0 for s in health.latest()), 30)
        store = central.central.store
        at_central = {}
        for row in store.submissions(limit=1000):
            document = store.submission(row["submission_id"])["document"]
            document = json.loads(document) if isinstance(document, (str, bytes)) else document
            at_central[row["tracking_code"].replace("-", "")] = document["procedure"].get("catalog_release")
        for old, new in zip(old_codes, new_codes):
            assert (at_central[old.replace("-", "")], at_central[new.replace("-", "")]) == (1, 2)
    finally:
        for citizen in citizens:
            citizen.close()
        for station in stations:
            station.stop()
        central.stop()
