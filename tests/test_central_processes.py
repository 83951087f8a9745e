"""The central as a province runs it: three worker processes (`kiosk central serve --workers 3`, gunicorn)
on PostgreSQL behind Debian's nginx with the shipped deploy/nginx-central.conf. Stations' sync workers
send at once through the fault proxy (cuts, resets, twins of a request, 500s, portals), one central
worker is SIGKILLed in the middle; every dossier must arrive exactly once, with one official code each.
The same submission or blob chunk sent to every worker at once makes one record; the retention purge
runs in one process only; two notification senders never send one row twice."""
import hashlib
import http.client
import itertools
import random
import re
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiosk.core import tracking_code
from kiosk.core.db import connect
from sync import protocol
from sync.central import create_central_app, open_central
from sync.central_workers import PurgeRunner
from sync.keys import public_b64
from sync.worker import station_paths
from tests.conftest import postgres_admin
from tests.support.central_cluster import CentralWorkers, fresh_database
from tests.support.faulty_proxy import FaultMix, FaultyProxy
from tests.support.harness import enrol, make_station, submit_many, worker_command
from tests.support.nginx import Nginx, nginx_available

pytestmark = pytest.mark.slow

FAULTS = {"pass": 0.70, "drop_before": 0.03, "drop_after": 0.04, "reset": 0.04, "duplicate": 0.08,
          "truncate": 0.03, "delay": 0.02, "http500": 0.03, "http429": 0.01, "portal200": 0.01, "forged_ack": 0.01}
SETTINGS = {"base_delay": 0.02, "max_delay": 0.2, "idle_interval": 0.05, "timeout": 10}
STATIONS, DOSSIERS = 8, 40
_sequence = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(postgres_server, tmp_path_factory):
    """Three central worker processes on a fresh PostgreSQL database, nginx in front."""
    if not nginx_available():
        pytest.skip("no nginx: install Debian's nginx (make test does)")
    postgres_admin(postgres_server).close()  # skips when there is no PostgreSQL
    url = fresh_database(postgres_server, "dvc_central_processes")
    folder = tmp_path_factory.mktemp("cluster")
    central = CentralWorkers(folder / "central", url, workers=3, threads=4).start()
    try:
        with Nginx(central.port) as nginx:
            yield SimpleNamespace(central=central, nginx=nginx, url=url, data=folder / "central")
    finally:
        central.stop()


def _count(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT COUNT(*) FROM submissions").fetchone()[0]


def _upstream_5xx(nginx: Nginx) -> list[str]:
    """Access log lines whose answer came from the workers with a 5xx (nginx's own 502 included)."""
    return [line for line in nginx.access_log() if line.split('"')[2].split()[0].startswith("5")]


def test_stations_through_faults_reach_three_processes_exactly_once_while_one_is_killed(cluster, tmp_path):
    seed = 20261202
    configs, submitted = [], {}
    central = open_central(cluster.data, cluster.url)
    with FaultyProxy(cluster.nginx.port, FaultMix(FAULTS, seed), seed=seed, delay_s=0.2, retry_after="1") as proxy:
        for i in range(STATIONS):
            # Half send batches (small ones, so there are many requests), half one PUT per dossier.
            batch = i % 2 == 0
            config = make_station(tmp_path / f"s{i}", proxy.url, station_id=f"P{i:02d}",
                                  sync={**SETTINGS, "batch_http": batch, "batch_size": 4 if batch else 25})
            enrol(central, config)
            configs.append(config)
            submitted[config["station"]["id"]] = submit_many(config, DOSSIERS, seed=seed + i)
        central.store.close()
        total = STATIONS * DOSSIERS
        before = set(cluster.central.worker_pids())
        workers = [subprocess.Popen(worker_command(c, "--until-empty", "--max-seconds", "45"),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in configs]
        try:
            # One central worker is SIGKILLed in the middle of the run; the arbiter starts another.
            deadline = time.monotonic() + 30
            while _count(cluster.url) < total // 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            received_at_kill = _count(cluster.url)
            killed = cluster.central.kill_worker()
            for w in workers:
                w.communicate(timeout=60)
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        codes = [w.returncode for w in workers]
        # Whatever the faults left (a worker's 45 s ran out): one more pass, as the next cycle would.
        for config, code in zip(configs, codes):
            if code != 0:
                final = subprocess.run(worker_command(config, "--until-empty", "--max-seconds", "30"),
                                       capture_output=True, text=True, timeout=60)
                assert final.returncode == 0, final.stderr[-2000:]
        faults, statuses = dict(proxy.faults), dict(proxy.statuses)
    after = set(cluster.central.wait_for_workers(3))

    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as conn:
        rows = conn.execute("SELECT submission_id, station_id, payload_sha256, central_code FROM submissions").fetchall()
        received_changes = conn.execute("SELECT submission_id, COUNT(*) FROM changes WHERE status = 'received' "
                                        "GROUP BY submission_id").fetchall()
    central_rows = {r[0]: r for r in rows}
    five_hundreds = _upstream_5xx(cluster.nginx)
    # "$upstream_status" lists every try: "502, 201" is a request nginx sent again after the kill.
    tried_again = [line for line in cluster.nginx.access_log() if "," in line.split('"')[-2]]
    gunicorn_log = cluster.central.log.read_text()
    print(f"\nthree central processes behind nginx: {total} dossiers from {STATIONS} stations, "
          f"{received_at_kill} received when worker {killed} was killed; station workers' exits {codes}; "
          f"faults {faults}; answers {statuses}; 5xx from the workers {len(five_hundreds)}; sent again by nginx "
          f"{len(tried_again)}")

    assert killed in before and killed not in after and len(after) == 3  # replaced
    assert 0 < received_at_kill < total  # killed in the middle of the run
    assert len(rows) == total  # none lost, none twice (the submission id is the key)
    assert len({r[3] for r in rows}) == total  # official codes unique
    assert all(n == 1 for _sid, n in received_changes) and len(received_changes) == total  # one change each
    assert faults.get("duplicate", 0) > 0 and faults.get("reset", 0) > 0
    assert any("(twin)" in key for key in statuses)  # twins reached the central
    for config in configs:
        station_id = config["station"]["id"]
        conn = connect(station_paths(config)["database"])
        try:
            station = {r["submission_id"]: dict(r) for r in conn.execute(
                "SELECT d.submission_id, d.payload_sha256, d.central_code, o.state FROM dossiers d "
                "JOIN outbox o USING (submission_id)")}
            acked = conn.execute("SELECT COUNT(*), COUNT(DISTINCT subject) FROM audit_events "
                                 "WHERE action = 'dossier.acknowledged'").fetchone()
        finally:
            conn.close()
        assert set(station) == set(submitted[station_id])
        for sid, row in station.items():
            assert row["state"] == "sent"  # every error the station met was answered in the end
            assert central_rows[sid][1] == station_id
            assert central_rows[sid][2] == row["payload_sha256"]  # the content hash, both sides
            assert central_rows[sid][3] == row["central_code"]
        assert tuple(acked) == (DOSSIERS, DOSSIERS)  # each acknowledgement recorded once
    # A request cut by the kill is sent once more by nginx (proxy_next_upstream): at most the killed
    # worker's threads' requests could end as a 502, and the app itself never failed.
    assert len(five_hundreds) <= 4, five_hundreds
    assert "Exception on" not in gunicorn_log and "Traceback" not in gunicorn_log


def _document(station_id: str) -> dict:
    return {"submission_id": str(uuid.uuid4()),
            "tracking_code": tracking_code.make(station_id, "261202", next(_sequence)),
            "station_id": station_id, "channel": "counter",
            "procedure": {"code": "1.004884", "slug": "trich-luc", "version": "1"},
            "submitted_at": "2026-12-02T03:00:00+00:00", "answers": {"copies": 1}, "supersedes": None}


def _signed_request(port: int, key, station_id: str, method: str, path: str, body: bytes = b"",
                    headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None,
                     headers={**protocol.sign_request(key, station_id, method, path, body), **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _enrolled(cluster, station_id: str):
    key = Ed25519PrivateKey.generate()
    central = open_central(cluster.data, cluster.url)
    try:
        central.store.enrol(station_id, public_b64(key))
    finally:
        central.store.close()
    return key


def test_the_same_submissions_sent_to_every_worker_at_once_make_one_record_each(cluster):
    key = _enrolled(cluster, "P90")
    docs = [_document("P90") for _ in range(8)]
    bodies = [protocol.canonical_json(d) for d in docs]
    barrier = threading.Barrier(12)

    def send(n):
        order = list(range(len(docs)))
        random.Random(n).shuffle(order)
        barrier.wait(timeout=20)
        return [(i, *_signed_request(cluster.nginx.port, key, "P90", "PUT",
                                     f"/api/v1/submissions/{docs[i]['submission_id']}", bodies[i])) for i in order]

    with ThreadPoolExecutor(12) as pool:
        answers = [a for result in pool.map(send, range(12)) for a in result]
    for i, doc in enumerate(docs):
        mine = [(status, body) for j, status, body in answers if j == i]
        assert sorted(status for status, _ in mine) == [200] * 11 + [201]
        assert len({body for _, body in mine}) == 1  # the same signed acknowledgement, byte for byte
    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT central_code) FROM submissions WHERE station_id = 'P90'"
                            ).fetchone() == (8, 8)


def test_one_upload_chunked_to_every_worker_at_once_is_kept_whole(cluster):
    key = _enrolled(cluster, "P91")
    data = random.Random(7).randbytes(300_000)
    sha = hashlib.sha256(data).hexdigest()
    half = len(data) // 2
    path = f"/api/v1/blobs/{sha}"

    def chunk(start, end):
        barrier = threading.Barrier(10)

        def put(_):
            barrier.wait(timeout=20)
            return _signed_request(cluster.nginx.port, key, "P91", "PUT", path, data[start:end],
                                   {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"})
        with ThreadPoolExecutor(10) as pool:
            return [status for status, _ in pool.map(put, range(10))]

    # The same first chunk to three processes (4 threads each) at once: one appends it, the others are told
    # where the upload stands; never two appends (a process-wide lock would let two workers append).
    first = chunk(0, half)
    assert sorted(first) == [202] + [409] * 9, first
    last = chunk(half, len(data))
    assert set(last) <= {200, 201} and 201 in last, last
    central = open_central(cluster.data, cluster.url)
    try:
        assert central.blobs.read(sha) == data
        assert central.blobs.offset(sha) == 0  # no unfinished upload left behind
    finally:
        central.store.close()


def test_the_purge_runs_in_one_process_and_another_takes_over_when_it_dies(cluster, tmp_path):
    # In the cluster: one of the workers announced it runs the purge (another after it, if the first
    # test's SIGKILL hit the holder and a minute passed).
    holders = [int(re.search(r"pid (\d+)", line).group(1)) for line in cluster.central.lines
               if "runs the purge" in line]
    assert holders
    central = open_central(cluster.data, cluster.url)
    first, second = PurgeRunner(central, cluster.url), PurgeRunner(central, cluster.url)
    try:
        if holders[-1] in cluster.central.worker_pids():
            # The holder has it: nobody else takes it while its connection lives.
            assert not first._take() and not second._take()
        else:
            # The holder was the worker killed: its session ended with it, and the lock with it.
            assert first._take() and not second._take()
            first._drop()  # the cluster's workers take it at their next try
    finally:
        central.store.close()
    # On SQLite, an flock on <data>/central-purge.lock; freed when the holder's descriptor goes (it dies).
    local = open_central(tmp_path / "sqlite-central")
    try:
        one, two = PurgeRunner(local, None), PurgeRunner(local, None)
        assert one._take() and not two._take()
        one._drop()  # as its process dying
        assert two._take()
        two._drop()
    finally:
        local.store.close()


def test_the_purge_lock_moves_on_postgresql_when_its_holder_goes(postgres_server, tmp_path):
    postgres_admin(postgres_server).close()
    url = fresh_database(postgres_server, "dvc_central_purge_lock")
    central = open_central(tmp_path / "central", url)
    try:
        one, two = PurgeRunner(central, url), PurgeRunner(central, url)
        assert one._take() and not two._take()
        one._conn.close()  # the holder's session ends (a killed worker's connection)
        assert not one._take() or not two._take()  # whichever asks first has it; never both
        holder = one if one._conn is not None else two
        other = two if holder is one else one
        assert holder._take() and not other._take()
        holder._drop()
        other._drop()
    finally:
        central.store.close()


class CountingGateway:
    """An SMS gateway that counts what it is asked to send, from any thread."""

    def __init__(self):
        self.sent, self._lock = [], threading.Lock()

    def send(self, address, tracking_code, status):
        time.sleep(0.002)  # a gateway takes a moment: the two senders overlap
        with self._lock:
            self.sent.append((tracking_code, status))


def test_two_notification_senders_on_one_database_send_each_row_once(postgres_server, tmp_path):
    postgres_admin(postgres_server).close()
    url = fresh_database(postgres_server, "dvc_central_notify_procs")
    gateway = CountingGateway()
    config = {"DATABASE": url, "NOTIFY_SMS_GATEWAY": gateway, "NOTIFY_INTERVAL": 0}
    one = create_central_app({**config, "DATA_DIR": str(tmp_path / "a")})
    # The second process's data folder holds the same keys (they are the central's, wherever it runs).
    (tmp_path / "b").mkdir(mode=0o700)
    for name in ("central-documents.key", "central.ed25519", "central.x25519", "central-session.key"):
        (tmp_path / "b" / name).write_bytes((tmp_path / "a" / name).read_bytes())
    two = create_central_app({**config, "DATA_DIR": str(tmp_path / "b")})
    store = one.extensions["dvc_central"].store
    store.enrol("P92", public_b64(Ed25519PrivateKey.generate()))
    for _ in range(30):
        doc = {**_document("P92"), "notify": {"sms": "0912345678", "consent": True}}
        body = protocol.canonical_json(doc)
        store.receive("P92", doc["submission_id"], protocol.sha256_hex(body), body.decode(), doc["tracking_code"],
                      "1.004884")
    senders = [one.extensions["central_notifications"], two.extensions["central_notifications"]]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: s.send_due(), senders * 2))
    assert len(gateway.sent) == 30 and len(set(gateway.sent)) == 30
    assert {r["state"] for r in store.notifications()} == {"sent"}
    for app in (one, two):
        app.extensions["dvc_central"].store.close()
