"""What operators do to a running station, through real processes and HTTP on 127.0.0.1: stop the worker
(SIGTERM, --max-seconds) on a link that does not answer, start a second worker, correct the clock, and
what arrives from the network or a stick too large to hold."""
import gzip
import json
import signal
import socket
import subprocess
import threading
import time
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kiosk.core.db import connect
from sync import bundle as bundle_mod
from sync import protocol
from tests.support.harness import CentralThread, enrol, make_station, submit_many, worker_command
from sync.worker import station_paths, worker_from_config

from .test_sync_bundle import outbox_states, setup  # noqa: F401

FAST = {"base_delay": 0.05, "max_delay": 0.4, "idle_interval": 0.05, "timeout": 30}


def station_at(tmp_path, url, **sync):
    """A station enrolled at a central (its keys trusted), whose central URL is ``url``."""
    from sync.central import open_central
    config = make_station(tmp_path / "station", url, sync={**FAST, **sync})
    enrol(open_central(tmp_path / "central"), config)
    return config


class SilentServer:
    """Something at the central's address that accepts connections and then never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # read nothing, answer nothing

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def test_sigterm_is_honoured_within_one_exchange_on_a_link_that_does_not_answer(tmp_path, silent):
    config = station_at(tmp_path, silent.url)
    submit_many(config, 3)
    proc = subprocess.Popen(worker_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not silent.held and time.monotonic() < deadline:  # the worker is inside its first exchange
            time.sleep(0.05)
        assert silent.held, "the worker never connected"
        time.sleep(0.3)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        stopped_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert stopped_in < 3, f"SIGTERM took {stopped_in:.1f} s with a 30 s HTTP timeout"
    report = json.loads(out.strip().splitlines()[-1])
    assert report["pending"] == 3  # nothing lost, nothing marked sent


def test_max_seconds_holds_on_a_link_that_does_not_answer(tmp_path, silent):
    config = station_at(tmp_path, silent.url)
    submit_many(config, 2)
    started = time.monotonic()
    out = subprocess.run(worker_command(config, "--max-seconds", "2"), capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    assert took < 2 + 4, f"--max-seconds 2 ran {took:.1f} s"  # 2 s, plus the start of a Python process
    assert json.loads(out.stdout.strip().splitlines()[-1])["pending"] == 2


def test_a_second_worker_on_one_station_exits_with_a_clear_message(tmp_path, silent):
    config = station_at(tmp_path, silent.url, idle_interval=60.0)
    first = subprocess.Popen(worker_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = station_paths(config)["database"].parent / "sync-worker.lock"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.05)
        second = subprocess.run(worker_command(config, "--once"), capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert "Một tiến trình đồng bộ khác đang chạy" in second.stderr and str(first.pid) in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    # Once the first has gone, a worker starts again (a killed one would free the lock the same way).
    again = subprocess.run(worker_command(config, "--once"), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr


class GzipBomb(BaseHTTPRequestHandler):
    """At the central's address: a 200 with a small gzip body that inflates to 200 MiB."""

    body = gzip.compress(b"\0" * (200 << 20), 9)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_PUT = do_POST

    def log_message(self, *args):
        pass


class HugeAnswer(GzipBomb):
    """At the central's address: an answer of 50 MiB."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", str(50 << 20))
        self.end_headers()
        try:
            for _ in range(50):
                self.wfile.write(b"x" * (1 << 20))
        except OSError:
            pass

    do_PUT = do_POST


@pytest.mark.parametrize("handler", [GzipBomb, HugeAnswer], ids=["gzip-bomb", "huge"])
def test_an_answer_too_large_is_refused_and_nothing_is_lost(tmp_path, handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = station_at(tmp_path, f"http://127.0.0.1:{server.server_port}", timeout=10)
        submit_many(config, 2)
        worker = worker_from_config(config)
        report = worker.cycle()
        assert report["transient"] == 1 and report["acked"] == 0
        error = worker.conn.execute("SELECT last_error FROM outbox WHERE last_error IS NOT NULL").fetchone()[0]
        assert "MiB" in error
        assert worker.pending() == 2
        worker.close()
    finally:
        server.shutdown()
        server.server_close()


def test_inflate_is_bounded_and_strict():
    data = b"dossier " * 1000
    assert protocol.inflate(gzip.compress(data), 1 << 20) == data
    assert protocol.inflate(zlib.compress(data), 1 << 20, wbits=15) == data
    with pytest.raises(protocol.TooLarge):
        protocol.inflate(gzip.compress(b"\0" * (10 << 20)), 1 << 20)
    with pytest.raises(zlib.error):
        protocol.inflate(gzip.compress(data)[:-20], 1 << 20)  # cut short


def test_a_signed_bundle_holding_a_zlib_bomb_is_refused_whole(tmp_path, setup, monkeypatch):  # noqa: F811
    central, central_dir, config, runner = setup
    submit_many(config, 3)
    bomb = zlib.compress(b"\0" * (protocol.MAX_BUNDLE_INFLATED_BYTES + (16 << 20)), 9)
    real = zlib.compress
    monkeypatch.setattr(bundle_mod.zlib, "compress", lambda data, level=-1: bomb)
    from sync.sync_cli import sync as sync_group
    out = runner.invoke(sync_group, ["--station", config["source"], "export", str(tmp_path / "usb")])
    monkeypatch.setattr(bundle_mod.zlib, "compress", real)
    assert out.exit_code == 0, out.output
    (bundle_file,) = (tmp_path / "usb").glob("*.dvcbundle")
    from sync.central_cli import central as central_group
    result = runner.invoke(central_group, ["import", "--data", str(central_dir), str(bundle_file)])
    assert result.exit_code != 0 and "256 MiB" in result.output and "nothing imported" in result.output
    assert "Traceback" not in result.output
    assert central.store.count() == 0 and outbox_states(config) == {"pending": 3}


@contextmanager
def enrolled_station(tmp_path, dossiers: int):
    """A central, an enrolled station with ``dossiers`` waiting, and its worker: (config, worker)."""
    with CentralThread(tmp_path / "central") as central:
        config = make_station(tmp_path / "station", central.url, sync={**FAST})
        enrol(central.central, config)
        submit_many(config, dossiers)
        worker = worker_from_config(config)
        try:
            yield config, worker
        finally:
            worker.close()


def test_a_retry_time_set_by_a_clock_since_corrected_backwards_is_due_now(tmp_path):
    with enrolled_station(tmp_path, 2) as (_config, worker):
        days_ahead = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat(timespec="milliseconds")
        with worker.conn:
            worker.conn.execute("UPDATE outbox SET attempts = 1, next_attempt_at = ?", (days_ahead,))
        assert worker.next_wait() == 0.0
        assert worker.cycle()["acked"] == 2  # not three days later


def test_the_clocks_are_noted_and_a_station_clock_far_off_is_reported(tmp_path):
    with enrolled_station(tmp_path, 1) as (config, worker):
        worker.cycle()
        state = dict(worker.conn.execute("SELECT name, value FROM sync_state").fetchall())
        assert abs(int(state["clock_skew_seconds"])) <= 2
        assert abs((datetime.fromisoformat(state["central_clock"]) - datetime.now(timezone.utc)).total_seconds()) < 5
    conn = connect(station_paths(config)["database"])
    try:
        with conn:
            conn.execute("UPDATE sync_state SET value = '7200' WHERE name = 'clock_skew_seconds'")
        from sync.sync_cli import status_report
        report = status_report(conn)
    finally:
        conn.close()
    assert report["clock_skew_seconds"] == 7200 and report["clock_warning"] == "clock_ahead"
    from click.testing import CliRunner

    from sync.sync_cli import sync as sync_group
    out = CliRunner().invoke(sync_group, ["--station", config["source"], "status"]).output
    assert "Đồng hồ của trạm nhanh 120 phút so với hệ thống trung tâm" in out and "120 min ahead" in out
