"""Satisfaction ratings (docs/ratings.md): offered after submitting and after a result is handed over at the
counter, skippable, anonymous (nothing of the dossier is kept or sent), sent exactly once to the central
through a flaky link, summarised on the central's staff page and the station's day report."""
import json
import re
import sqlite3
import time

from kiosk.app import create_app
from kiosk.core import ratings
from kiosk.core.db import connect
from sync.worker import worker_from_config
from tests.support.faulty_proxy import FaultyProxy, Script
from tests.support.harness import CentralThread, enrol, make_station

from .conftest import csrf_token
from .test_agent import _add, _counter_submit, _login
from .test_central import logged_in
from .wizard import answer_all, submit

SLUG = "dang-ky-khai-tu"
ROW_COLUMNS = {"rating_id", "station_id", "local_day", "moment", "channel", "procedure_code", "answers", "state",
               "refused_reason"}


def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, args).fetchall()


def _submitted(client, catalog):
    answer_all(client, catalog[SLUG])
    assert submit(client, catalog[SLUG]).headers["Location"].endswith("/done")
    done = client.get("/done")
    code = re.search(r"data-tracking-code>([^<]+)<", done.text).group(1)
    return done, code


def _nothing_of_the_dossier_in(app, text: str) -> None:
    for dossier in _rows(app, "SELECT submission_id, tracking_code, submitted_at FROM dossiers"):
        assert dossier["submission_id"] not in text and dossier["submission_id"].replace("-", "") not in text
        assert dossier["tracking_code"] not in text and dossier["submitted_at"][:16] not in text


def test_rate_after_submit_at_the_kiosk(client, app, catalog):
    done, code = _submitted(client, catalog)
    assert 'href="/danh-gia"' in done.text  # offered, not required
    page = client.get("/danh-gia")
    assert page.status_code == 200 and "Bạn có hài lòng không?" in page.text
    asked = re.findall(r'name="(\w+)" value="3"', page.text)
    assert asked == ["overall", "convenience", "information"]  # no staff question: nobody served them here
    response = client.post("/danh-gia", data={"csrf_token": csrf_token(page.text), "action": "send",
                                              "overall": "3", "convenience": "2", "staff": "1",
                                              "information": "9"})
    assert response.status_code == 303 and response.headers["Location"] == "/danh-gia/cam-on"
    thanks = client.get("/danh-gia/cam-on")
    assert "Cảm ơn bạn đã đánh giá" in thanks.text and 'href="/done"' in thanks.text

    (row,) = _rows(app, "SELECT * FROM ratings")
    assert set(row.keys()) == ROW_COLUMNS  # the table has nothing else, and no rowid order
    assert (row["moment"], row["channel"], row["procedure_code"], row["state"]) == (
        "submitted", "kiosk", catalog[SLUG].code, "pending")
    assert json.loads(row["answers"]) == {"overall": 3, "convenience": 2}  # not asked, not a level: left out
    assert re.fullmatch(r"[0-9a-f]{32}", row["rating_id"])
    assert row["local_day"] == _rows(app, "SELECT local_day FROM dossiers")[0][0]
    _nothing_of_the_dossier_in(app, json.dumps(dict(row)))
    assert _rows(app, "SELECT COUNT(*) FROM audit_events WHERE action LIKE 'rating%'")[0][0] == 0

    # One rating per submission: the offer is gone and the page sends the citizen back to the confirmation.
    assert 'href="/danh-gia"' not in client.get("/done").text
    assert client.get("/danh-gia").headers["Location"] == "/done"
    assert client.post("/danh-gia", data={"csrf_token": csrf_token(page.text), "overall": "1"}).status_code == 303
    assert len(_rows(app, "SELECT * FROM ratings")) == 1


def test_skipping_or_choosing_nothing_stores_nothing(app, catalog):
    skipper = app.test_client()
    _submitted(skipper, catalog)
    page = skipper.get("/danh-gia")
    response = skipper.post("/danh-gia", data={"csrf_token": csrf_token(page.text), "action": "skip",
                                               "overall": "3"})
    assert response.status_code == 303 and response.headers["Location"] == "/done"
    assert "Đã nộp hồ sơ" in skipper.get("/done").text  # the confirmation is still there

    silent = app.test_client()
    _submitted(silent, catalog)
    page = silent.get("/danh-gia")
    response = silent.post("/danh-gia", data={"csrf_token": csrf_token(page.text), "action": "send"})
    assert response.headers["Location"] == "/done"
    assert _rows(app, "SELECT COUNT(*) FROM ratings")[0][0] == 0
    assert _rows(app, "SELECT COUNT(*) FROM dossiers")[0][0] == 2


def test_idling_out_on_the_rating_page_loses_nothing(client, app, catalog):
    _submitted(client, catalog)
    page = client.get("/danh-gia")
    with client.session_transaction() as session:
        session["seen"] = int(time.time()) - 3600  # walked away: the session ended long ago
    response = client.post("/danh-gia", data={"csrf_token": csrf_token(page.text), "overall": "3"})
    assert response.status_code in (303, 400)  # a wiped session: back to the start (or its form is stale)
    assert _rows(app, "SELECT COUNT(*) FROM ratings")[0][0] == 0
    assert _rows(app, "SELECT state FROM outbox")[0][0] == "pending"  # the dossier is safe and will be sent
    assert client.get("/danh-gia").headers["Location"] == "/"


def test_rate_after_hand_over_at_the_counter_and_the_day_report(tmp_path, catalog):
    app = create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")}})
    _add(app, "minh", name="Nguyễn Văn Minh")
    clerk = app.test_client()
    _login(clerk, "minh")
    code = _counter_submit(clerk, catalog[SLUG])
    page = clerk.get(f"/agent/d/{code}")
    assert "Trả kết quả" in page.text
    response = clerk.post(f"/agent/d/{code}/hand-over", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 303 and response.headers["Location"] == "/danh-gia"
    (event,) = _rows(app, "SELECT actor, subject FROM audit_events WHERE action = 'result.handed_over'")
    assert tuple(event) == ("minh", _rows(app, "SELECT submission_id FROM dossiers")[0][0])

    page = clerk.get("/danh-gia")  # the screen turned to the citizen
    assert re.findall(r'name="(\w+)" value="3"', page.text) == ["overall", "on_time", "trips", "staff"]
    response = clerk.post("/danh-gia", data={"csrf_token": csrf_token(page.text), "action": "send",
                                             "overall": "2", "staff": "3", "trips": "1"})
    assert response.headers["Location"] == "/danh-gia/cam-on"
    assert 'href="/agent/"' in clerk.get("/danh-gia/cam-on").text
    (row,) = _rows(app, "SELECT * FROM ratings")
    assert (row["moment"], row["channel"], row["procedure_code"]) == ("handed_over", "counter", catalog[SLUG].code)
    assert json.loads(row["answers"]) == {"overall": 2, "staff": 3, "trips": 1}
    _nothing_of_the_dossier_in(app, json.dumps(dict(row)))
    assert clerk.get("/danh-gia").headers["Location"] == "/"  # the offer was used

    # A second hand-over, skipped: recorded as handed over, no rating.
    page = clerk.get(f"/agent/d/{code}")
    clerk.post(f"/agent/d/{code}/hand-over", data={"csrf_token": csrf_token(page.text)})
    page = clerk.get("/danh-gia")
    assert clerk.post("/danh-gia", data={"csrf_token": csrf_token(page.text), "action": "skip"}
                      ).headers["Location"] == "/agent/"
    assert len(_rows(app, "SELECT * FROM ratings")) == 1

    day = _rows(app, "SELECT local_day FROM dossiers")[0][0]
    report = clerk.get("/agent/report").text
    yyyy, mm, dd = day.split("-")
    assert f"{dd}/{mm}/{yyyy}" in report and f">{day}<" not in report.replace(f'data-day="{day}"', "")
    assert "<h2>Nguyễn Văn Minh</h2>" in report and "<h2>minh</h2>" not in report
    assert 'data-ratings-total="1"' in report
    overall = re.search(r'<tr data-criterion="overall">(.*?)</tr>', report, re.S).group(1)
    assert 'data-level="2">1 (100%)' in overall and 'data-level="3">0 (0%)' in overall


def _station_app(folder, url, station_id):
    config = make_station(folder, url, station_id)
    return create_app(station_file=str(folder / "station.toml")), config


def test_ratings_reach_the_central_exactly_once_through_a_flaky_link(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        faults = ["drop_after", "truncate", "http500", "drop_before", "portal200", "forged_ack", "drop_after"]
        with FaultyProxy(central.port, Script(faults), retry_after="0") as proxy:
            app, config = _station_app(tmp_path / "k01", proxy.url, "K01")
            enrol(central.central, config)
            conn = connect(app.config["DATABASE"])
            made = [ratings.record(conn, station_id="K01", channel="kiosk", procedure_code="1.001193",
                                   local_day="2026-03-02", moment="submitted",
                                   answers={"overall": 1 + i % 3, "convenience": 3}) for i in range(7)]
            worker = worker_from_config(config)
            for _ in range(30):
                worker.cycle()
                if ratings.unsent_count(worker.conn) == 0:
                    break
            assert ratings.unsent_count(worker.conn) == 0
            assert {r[0] for r in worker.conn.execute("SELECT state FROM ratings")} == {"sent"}
            worker.close()
            conn.close()
        store = central.central.store
        with store._tx() as cur:
            held = cur.all("SELECT * FROM received_ratings ORDER BY rating_id", ())
            answers = cur.all("SELECT COUNT(*) FROM received_rating_answers", ())[0][0]
        assert sorted(r[0] for r in held) == sorted(made) and answers == 14  # each once, both answers
        assert all(len(r) == 7 for r in held)  # id, station, day, moment, channel, procedure, content hash
        summary = store.rating_summary("2026-03-01", "2026-03-31")
        assert summary["all"]["ratings"] == 7
        assert summary["all"]["criteria"]["overall"]["levels"] == {3: 2, 2: 2, 1: 3}


def test_the_central_takes_only_rating_fields_and_each_id_once(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        app, config = _station_app(tmp_path / "k02", central.url, "K02")
        enrol(central.central, config)
        worker = worker_from_config(config)
        good = {"rating_id": "a" * 32, "station_id": "K02", "local_day": "2026-03-02", "moment": "submitted",
                "channel": "kiosk", "procedure_code": "1.001193", "answers": {"overall": 3}}
        with_code = {**good, "rating_id": "b" * 32, "tracking_code": "K02-260302-0001"}
        other_station = {**good, "rating_id": "c" * 32, "station_id": "K99"}
        held, refused = worker.client.post_ratings([good, with_code, other_station])
        assert held == [good["rating_id"]]
        assert set(refused) == {"b" * 32, "c" * 32} and "tracking_code" in refused["b" * 32]
        # The same id again: the same bytes are held already, other bytes are refused.
        assert worker.client.post_ratings([good]) == ([good["rating_id"]], {})
        held, refused = worker.client.post_ratings([{**good, "answers": {"overall": 1}}])
        assert held == [] and "conflict" in refused[good["rating_id"]]
        worker.close()


def test_the_centrals_summary_page(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        for station_id, levels, code in (("K01", [3, 3, 2, 1], "1.001193"), ("K02", [3, 1], "1.004222")):
            app, config = _station_app(tmp_path / station_id, central.url, station_id)
            enrol(central.central, config)
            conn = connect(app.config["DATABASE"])
            for level in levels:
                ratings.record(conn, station_id=station_id, channel="kiosk", procedure_code=code,
                               local_day="2026-03-02", moment="submitted", answers={"overall": level})
            ratings.record(conn, station_id=station_id, channel="kiosk", procedure_code=code,
                           local_day="2026-01-01", moment="submitted", answers={"overall": 1})  # outside
            conn.close()
            worker = worker_from_config(config)
            worker.cycle()
            assert ratings.unsent_count(worker.conn) == 0
            worker.close()
        staff = logged_in(central.app)
        assert "Đánh giá hài lòng" in staff.get("/staff/").get_data(as_text=True)
        page = staff.get("/staff/ratings?from=2026-03-01&to=2026-03-31").get_data(as_text=True)
        assert 'data-ratings-total="6"' in page and "01/03/2026" in page and "31/03/2026" in page
        overall = re.search(r'<table data-ratings="all">.*?<tr data-criterion="overall">(.*?)</tr>', page, re.S).group(1)
        assert 'data-level="3">3 (50%)' in overall and 'data-level="2">1 (17%)' in overall
        assert 'data-level="1">2 (33%)' in overall
        by_station = re.search(r'<table data-ratings="station">(.*?)</table>', page, re.S).group(1)
        k01 = re.search(r'<tr data-group="K01">(.*?)</tr>', by_station, re.S).group(1)
        assert 'data-k="ratings">4<' in k01 and '<td data-criterion="overall">75% (4)' in k01
        by_procedure = re.search(r'<table data-ratings="procedure">(.*?)</table>', page, re.S).group(1)
        assert '<tr data-group="1.004222"><td>1.004222</td><td data-k="ratings">2<' in by_procedure
        one = staff.get("/staff/ratings?from=2026-03-01&to=2026-03-31&station=K02").get_data(as_text=True)
        assert 'data-ratings-total="2"' in one
        assert staff.get("/staff/ratings?from=nonsense").status_code == 400
