"""Tracking at any station: two stations enrolled at one reference central over HTTP on 127.0.0.1; a
dossier taken and synced at K01 is tracked on K02's own tracking page (the Flask test client of K02's app,
with K02's station file), which asks the central (signed, rate-limited, no personal data) and says clearly
when it cannot know."""
import http.client
import http.server
import json
import random
import socket
import threading
import time

import pytest

from kiosk.app import create_app
from kiosk.core import tracking_code
from sync import protocol
from sync.client import CentralClient, TrackBusy
from sync.keys import load_central_keys, load_or_create_signing_key
from sync.tracking import CentralTracking
from sync.worker import station_paths, worker_from_config
from tests.support.harness import CentralThread, enrol, make_station, sample_answers, submit_many

FAST = {"base_delay": 0.05, "max_delay": 0.4, "idle_interval": 0.05, "timeout": 5}
UNREACHABLE = "Máy này đang không kết nối được với hệ thống trung tâm"


def _station(tmp_path, name, url, central, station_id):
    config = make_station(tmp_path / name, url, station_id=station_id, sync=FAST)
    enrol(central.central, config)
    return config


def _synced_at(config, n=1):
    ids = submit_many(config, n, seed=7)
    worker = worker_from_config(config)
    worker.run(until_empty=True, max_seconds=20)
    worker.close()
    return ids


@pytest.fixture
def central(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        yield central


@pytest.fixture
def stations(tmp_path, central):
    """K01 took a dossier and synced it; K02 is another station of the same central."""
    a = _station(tmp_path, "a", central.url, central, "K01")
    b = _station(tmp_path, "b", central.url, central, "K02")
    (sid,) = _synced_at(a)
    return a, b, sid


def _client_of(config):
    return create_app(station_file=config["source"]).test_client()


def test_a_dossier_taken_at_one_station_is_tracked_at_another(central, stations):
    a, b, sid = stations
    held = central.central.store.submission(sid)
    code = held["tracking_code"]
    client = _client_of(b)
    typed = code.replace("-", " ").lower()
    response = client.get("/track", query_string={"code": typed})
    assert response.status_code == 303 and response.headers["Location"].endswith(f"/track/{code}")
    page = client.get(response.headers["Location"])
    assert page.status_code == 200
    text = page.text
    assert 'data-status="received"' in text and "Cơ quan đã nhận hồ sơ" in text
    assert "hệ thống trung tâm" in text and 'data-source="central"' in text
    assert held["central_code"] in text and 'data-station="K01"' in text and code in text
    # Nothing of the citizen: not a name, an ID or phone number, nor any other answer.
    answers = sample_answers(random.Random(7))  # what submit_many gave the dossier
    for field in ("full_name", "id_number", "birth_date", "phone", "residence", "subject_name", "purpose"):
        assert str(answers[field]) not in text, field
    assert "Traceback" not in text


def test_a_status_change_at_the_central_shows_at_the_other_station(central, stations):
    a, b, sid = stations
    code = central.central.store.submission(sid)["tracking_code"]
    client = _client_of(b)
    assert central.central.store.set_status(sid, "needs_documents", "cán bộ")
    assert "Cần bổ sung giấy tờ" in client.get(f"/track/{code}").text
    assert central.central.store.set_status(sid, "done", "cán bộ")
    page = client.get(f"/track/{code}").text
    assert 'data-status="done"' in page and "Đã có kết quả" in page


def test_an_unknown_code_is_not_found_at_the_central(central, stations):
    _a, b, _sid = stations
    client = _client_of(b)
    unknown = tracking_code.make("K01", "200101", 7)
    response = client.get("/track", query_string={"code": unknown})
    assert response.status_code == 303
    page = client.get(response.headers["Location"])
    assert page.status_code == 404
    assert "trên hệ thống trung tâm" in page.text and UNREACHABLE not in page.text


def test_the_central_answers_only_what_tracking_needs_signed(central, stations):
    """The API itself: a signed dvc-central-track/1 naming the code, the asking station and its nonce; the
    document holds the fields listed and nothing of the dossier's document; 404 signed too."""
    _a, b, sid = stations
    code = central.central.store.submission(sid)["tracking_code"]
    paths = station_paths(b)
    client = CentralClient(central.url, "K02", load_or_create_signing_key(paths["station_key"]),
                           load_central_keys(paths["central_keys"])[0], 5)
    found = client.track(code)
    assert set(found) == {"status", "central_code", "received_at", "procedure_code", "status_at", "station_id",
                          "station_name"}
    assert found["station_id"] == "K01" and found["status"] == "received"
    assert client.track(code.replace("-", "")) == found  # dashes are not part of the code
    assert client.track(tracking_code.make("K09", "200101", 1)) is None
    raw = client.request("GET", f"/api/v1/track/{code}?nonce=ab")
    assert raw.status == 200 and "answers" not in raw.body.decode() and "full_name" not in raw.body.decode()
    missing = client.request("GET", f"/api/v1/track/{tracking_code.make('K09', '200101', 1)}?nonce=ab")
    assert missing.status == 404 and json.loads(missing.body)["error"] == "not_found"
    assert protocol.open_document(client.central_key, missing.body, protocol.TRACK)["found"] is False
    client.close()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed at once: nothing listens there


def test_the_central_down_gives_the_clear_message_quickly(tmp_path):
    central = CentralThread(tmp_path / "central").__enter__()  # stopped by the test itself, once
    a = _station(tmp_path, "a", central.url, central, "K01")
    b = _station(tmp_path, "b", central.url, central, "K02")
    (sid,) = _synced_at(a)
    code = central.central.store.submission(sid)["tracking_code"]
    client = _client_of(b)
    assert client.get(f"/track/{code}").status_code == 200
    central.stop()
    started = time.monotonic()
    page = client.get(f"/track/{code}")
    assert time.monotonic() - started < 3.5
    assert page.status_code == 503 and UNREACHABLE in page.text and "Traceback" not in page.text
    assert "data-status" not in page.text


def test_a_central_that_never_answers_costs_at_most_the_timeout_once(tmp_path, central):
    """A port that accepts and then says nothing (a dead link behind a NAT): the page comes within the 3 s
    timeout with the message, and the next lookup does not wait again."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever answers
    try:
        b = _station(tmp_path, "b", f"http://127.0.0.1:{silent.getsockname()[1]}", central, "K02")
        client = _client_of(b)
        code = tracking_code.make("K01", "261128", 42)
        started = time.monotonic()
        page = client.get(f"/track/{code}")
        first = time.monotonic() - started
        assert 2.5 < first < 4.5 and page.status_code == 503 and UNREACHABLE in page.text
        started = time.monotonic()
        assert UNREACHABLE in client.get(f"/track/{code}").text
        assert time.monotonic() - started < 1.0  # the link is known to be down for a few seconds
    finally:
        silent.close()


def test_nothing_listening_gives_the_message(tmp_path, central):
    b = _station(tmp_path, "b", f"http://127.0.0.1:{_refused_port()}", central, "K02")
    page = _client_of(b).get(f"/track/{tracking_code.make('K01', '261128', 42)}")
    assert page.status_code == 503 and UNREACHABLE in page.text


def test_the_centrals_rate_limit_says_try_later(tmp_path):
    with CentralThread(tmp_path / "central", TRACK_BURST=2, TRACK_RATE=0.01) as central:
        a = _station(tmp_path, "a", central.url, central, "K01")
        b = _station(tmp_path, "b", central.url, central, "K02")
        (sid,) = _synced_at(a)
        code = central.central.store.submission(sid)["tracking_code"]
        client = _client_of(b)
        assert [client.get(f"/track/{code}").status_code for _ in range(2)] == [200, 200]
        busy = client.get(f"/track/{code}")
        assert busy.status_code == 503 and "thử lại sau" in busy.text and int(busy.headers["Retry-After"]) > 0
        assert "Hệ thống trung tâm đang bận" in busy.text
        # The budget is the asking station's: K01 still gets its answer.
        paths = station_paths(a)
        other = CentralClient(central.url, "K01", load_or_create_signing_key(paths["station_key"]),
                              load_central_keys(paths["central_keys"])[0], 5)
        assert other.track(code)["status"] == "received"
        other.track(code)  # its two
        with pytest.raises(TrackBusy) as refused:
            other.track(code)
        assert refused.value.retry_after and refused.value.retry_after > 0
        other.close()


class _TamperingProxy:
    """A fake central in front of the real one: passes each request on and, in the answer, turns the
    dossier's status to 'done' (keeping the central's signature, which then does not verify)."""

    def __init__(self, upstream_port: int):
        upstream = upstream_port

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=5)
                conn.request("GET", self.path, headers={k: v for k, v in self.headers.items()})
                answer = conn.getresponse()
                body = answer.read()
                try:
                    envelope = json.loads(body)
                    envelope["document"]["dossier"]["status"] = "done"
                    body = json.dumps(envelope).encode()
                except (ValueError, KeyError, TypeError):
                    pass
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_answer_whose_signature_does_not_verify_is_refused(tmp_path, central, stations):
    a, _b, sid = stations
    code = central.central.store.submission(sid)["tracking_code"]
    proxy = _TamperingProxy(central.port)
    try:
        c = _station(tmp_path, "c", proxy.url, central, "K03")
        paths = station_paths(c)
        client = CentralClient(proxy.url, "K03", load_or_create_signing_key(paths["station_key"]),
                               load_central_keys(paths["central_keys"])[0], 5)
        with pytest.raises(protocol.NotGenuine):
            client.track(code)
        client.close()
        page = _client_of(c).get(f"/track/{code}")
        assert page.status_code == 503 and UNREACHABLE in page.text
        assert "Đã có kết quả" not in page.text and 'data-status="done"' not in page.text
    finally:
        proxy.stop()


def test_a_station_without_the_centrals_keys_tracks_only_its_own(tmp_path, central):
    config = make_station(tmp_path / "alone", central.url, station_id="K05")  # never enrolled or trusted
    tracking = CentralTracking(config)
    assert not tracking.connected() and tracking.lookup(tracking_code.make("K01", "261128", 42)).kind == "not_connected"
    client = _client_of(config)
    other = tracking_code.make("K01", "261128", 42)
    assert "Không tìm thấy hồ sơ" in client.get("/track", query_string={"code": other}).text
    assert client.get(f"/track/{other}").status_code == 404
