"""The conditional status pull (docs/sync.md, "Conditional pull"): an idle station's pull answered 304 by
the fast path in front of the central's Flask app (sync/feed.py) from a shared board of heads, without a
database read; never a 304 while the station has a change, whichever process or app instance made it, after
a restore, or for a station revoked or re-keyed elsewhere; refused when not signed right."""
import gc
import json
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import feed, protocol
from sync.central import create_central_app
from sync.client import CentralClient, LinkError
from sync.keys import public_b64
from tests.support.harness import CentralProcess, CentralThread, enrol, make_station, submit_many

from .test_central import document, empty_postgres, signed  # noqa: F401  (empty_postgres: a fixture)

ROOT = Path(__file__).resolve().parents[1]
FEED = "/api/v1/stations/{}/changes?since={}&limit=500"


def make_app(data_dir, **config):
    return create_central_app({"DATA_DIR": str(data_dir), "TESTING": True, **config})


def close(app) -> None:
    """Let an app's database and feed board go (as its process ending would)."""
    store = app.extensions["dvc_central"].store
    store.close()
    store.feed.close()
    gc.collect()


def pull(app, key, since, station_id="K01", tag=None, store=None, now=None, path_station=None):
    """A signed status pull through the app's WSGI stack (the fast path first), conditional unless tag=False."""
    central = app.extensions["dvc_central"]
    if tag is None:
        tag = protocol.feed_tag(store or central.store.identity(), since)
    headers = {"If-None-Match": tag} if tag else {}
    return signed(app.test_client(), key, "GET", FEED.format(path_station or station_id, since),
                  station_id=station_id, now=now, headers=headers)


def feed_of(resp, app) -> dict:
    return protocol.open_document(app.extensions["dvc_central"].signing_key.public_key(), resp.data,
                                  protocol.CHANGES)


@contextmanager
def database_reads(store):
    """Count every use of the store's database connection (each transaction and each plain read)."""
    calls = []
    real_tx, real_conn = store._tx, store._conn

    def tx():
        calls.append("tx")
        return real_tx()

    def conn():
        calls.append("conn")
        return real_conn()

    store._tx, store._conn = tx, conn
    try:
        yield calls
    finally:
        del store._tx, store._conn


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path / "central")


@pytest.fixture
def key(app):
    key = Ed25519PrivateKey.generate()
    app.extensions["dvc_central"].store.enrol("K01", public_b64(key), "Bưu điện Bến Thành")
    return key


def receive(app, key, station_id="K01") -> str:
    doc = document(station_id=station_id)
    resp = signed(app.test_client(), key, "PUT", f"/api/v1/submissions/{doc['submission_id']}",
                  protocol.canonical_json(doc), station_id=station_id)
    assert resp.status_code == 201
    return doc["submission_id"]


def run_python(code: str, *args) -> str:
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


SET_STATUS = """
import sys
from sync.central import open_central
central = open_central(sys.argv[1])
assert central.store.set_status(sys.argv[2], sys.argv[3], "lan")
"""


# -- the fast path ---------------------------------------------------------------------------------------------

def test_an_idle_pull_is_304_and_a_change_makes_it_200(app, key):
    sid = receive(app, key)
    first = pull(app, key, 0)
    assert first.status_code == 200 and [c["seq"] for c in feed_of(first, app)["changes"]] == [1]
    idle = pull(app, key, 1)
    assert (idle.status_code, idle.data) == (304, b"")
    assert idle.headers["ETag"] == protocol.feed_tag(app.extensions["dvc_central"].store.identity(), 1)
    assert idle.headers["Cache-Control"] == "no-store"
    assert app.extensions["central_feed"].answered == 1
    app.extensions["dvc_central"].store.set_status(sid, "processing", "lan")
    changed = pull(app, key, 1)
    assert changed.status_code == 200
    assert [(c["seq"], c["status"]) for c in feed_of(changed, app)["changes"]] == [(2, "processing")]
    assert pull(app, key, 2).status_code == 304
    # Without If-None-Match, or with a tag of another cursor than the one asked for: the full answer.
    assert pull(app, key, 2, tag=False).status_code == 200
    other_cursor = protocol.feed_tag(app.extensions["dvc_central"].store.identity(), 1)
    assert pull(app, key, 2, tag=other_cursor).status_code == 200


def test_the_fast_path_reads_no_database(app, key):
    receive(app, key)
    store = app.extensions["dvc_central"].store
    assert pull(app, key, 1).status_code == 304  # the station's key is read once, then held
    with database_reads(store) as calls:
        for _ in range(50):
            assert pull(app, key, 1).status_code == 304
    assert calls == []
    # Even with the database gone, an idle station is answered (and a pull with a change is not).
    store.close()
    store._connect = lambda: (_ for _ in ()).throw(RuntimeError("no database"))
    assert pull(app, key, 1).status_code == 304
    with pytest.raises(RuntimeError, match="no database"):
        pull(app, key, 0)


def test_a_pull_not_signed_right_is_refused_on_the_fast_path(app, key):
    receive(app, key)
    assert pull(app, key, 1).status_code == 304
    store = app.extensions["dvc_central"].store
    client = app.test_client()
    path = FEED.format("K01", 1)
    tag = protocol.feed_tag(store.identity(), 1)
    with database_reads(store) as calls:
        stranger = pull(app, Ed25519PrivateKey.generate(), 1)
        assert (stranger.status_code, json.loads(stranger.data)["error"]) == (401, "bad_signature")
        unsigned = client.get(path, headers={"If-None-Match": tag, protocol.H_STATION: "K01"})
        assert (unsigned.status_code, json.loads(unsigned.data)["error"]) == (401, "bad_body_hash")
        headers = protocol.sign_request(key, "K01", "GET", path, b"")
        no_signature = client.get(path, headers={**headers, protocol.H_SIGNATURE: "", "If-None-Match": tag})
        assert (no_signature.status_code, json.loads(no_signature.data)["error"]) == (401, "bad_signature")
        other_path = client.get(path.replace("limit=500", "limit=499"), headers={**headers, "If-None-Match": tag})
        assert (other_path.status_code, json.loads(other_path.data)["error"]) == (401, "bad_signature")
        stale = pull(app, key, 1, now=time.time() - 3600)
        assert (stale.status_code, json.loads(stale.data)["error"]) == (401, "stale_timestamp")
        assert stale.headers["X-Frame-Options"] == "DENY"
    assert calls == []  # refused from memory: a stranger costs no database read
    assert app.extensions["central_feed"].refused == 5
    # A station unknown here, or asking for another station's feed, goes to the view, which refuses it.
    other = Ed25519PrivateKey.generate()
    assert pull(app, other, 1, station_id="K99").status_code == 403
    store.enrol("K02", public_b64(other))
    assert pull(app, other, 1, station_id="K02", path_station="K01").status_code == 403


def test_the_view_answers_304_when_the_fast_path_cannot_tell(tmp_path):
    app = make_app(tmp_path / "central", FEED_FAST_PATH=False)
    key = Ed25519PrivateKey.generate()
    app.extensions["dvc_central"].store.enrol("K01", public_b64(key))
    receive(app, key)
    assert "central_feed" not in app.extensions
    idle = pull(app, key, 1)
    assert (idle.status_code, idle.data) == (304, b"") and idle.headers["ETag"].endswith('/1"')
    assert pull(app, key, 0).status_code == 200


# -- other processes and app instances ------------------------------------------------------------------------

def test_a_change_made_by_another_app_or_process_is_never_answered_304(tmp_path):
    data = tmp_path / "central"
    serving, other = make_app(data), make_app(data)
    key = Ed25519PrivateKey.generate()
    other.extensions["dvc_central"].store.enrol("K01", public_b64(key))
    sid = receive(other, key)
    assert pull(serving, key, 0).status_code == 200  # enrolled and received through the other instance
    assert pull(serving, key, 1).status_code == 304
    other.extensions["dvc_central"].store.set_status(sid, "processing", "lan")
    assert [c["status"] for c in feed_of(pull(serving, key, 1), serving)["changes"]] == ["processing"]
    assert pull(serving, key, 2).status_code == 304
    run_python(SET_STATUS, data, sid, "done")  # a process of its own, as `kiosk central ...` or a worker
    assert [c["status"] for c in feed_of(pull(serving, key, 2), serving)["changes"]] == ["done"]
    assert pull(serving, key, 3).status_code == 304
    assert pull(other, key, 3).status_code == 304


def test_a_station_revoked_or_rekeyed_elsewhere_is_refused_on_its_next_pull(tmp_path):
    data = tmp_path / "central"
    serving, other = make_app(data), make_app(data)
    key = Ed25519PrivateKey.generate()
    serving.extensions["dvc_central"].store.enrol("K01", public_b64(key))
    receive(serving, key)
    assert pull(serving, key, 1).status_code == 304  # the key is held in this process now
    new_key = Ed25519PrivateKey.generate()
    other.extensions["dvc_central"].store.enrol("K01", public_b64(new_key))  # re-keyed in another instance
    assert json.loads(pull(serving, key, 1).data)["error"] == "bad_signature"
    assert pull(serving, new_key, 1).status_code == 304
    other.extensions["dvc_central"].store.revoke("K01")
    revoked = pull(serving, new_key, 1)
    assert (revoked.status_code, json.loads(revoked.data)["error"]) == (403, "revoked_station")
    # Enrolled again and revoked by `kiosk central revoke` in a process of its own.
    other.extensions["dvc_central"].store.enrol("K01", public_b64(new_key))
    assert pull(serving, new_key, 1).status_code == 304
    done = subprocess.run([sys.executable, "-m", "sync.central_cli", "revoke", "K01", "--data", str(data)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(pull(serving, new_key, 1).data)["error"] == "revoked_station"


def test_several_central_processes_share_changes_and_revocations(tmp_path):
    """Two real central processes on one data folder and database, over HTTP; changes and a revocation
    made by a third process."""
    data = tmp_path / "central"
    setup = make_app(data)
    central = setup.extensions["dvc_central"]
    key = Ed25519PrivateKey.generate()
    central.store.enrol("K01", public_b64(key))
    sid = receive(setup, key)
    central_key = central.signing_key.public_key()
    store = central.store.identity()
    close(setup)
    processes = [CentralProcess(data).start(), CentralProcess(data).start()]
    clients = [CentralClient(f"http://127.0.0.1:{p.port}", "K01", key, central_key, timeout=10) for p in processes]
    try:
        for client in clients:
            assert [c["seq"] for c in client.changes(0, store=store)["changes"]] == [1]
            assert client.changes(1, store=store) is None
        for status, seq in (("processing", 2), ("done", 3)):
            run_python(SET_STATUS, data, sid, status)
            for client in clients:
                assert [c["seq"] for c in client.changes(seq - 1, store=store)["changes"]] == [seq]
                assert client.changes(seq, store=store) is None
        done = subprocess.run([sys.executable, "-m", "sync.central_cli", "revoke", "K01", "--data", str(data)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        for client in clients:
            with pytest.raises(LinkError, match="HTTP 403"):
                client.changes(3, store=store)
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.kill()


def test_postgresql_changes_from_another_instance(tmp_path, empty_postgres):
    data = tmp_path / "central"
    serving = make_app(data, DATABASE=empty_postgres)
    other = make_app(data, DATABASE=empty_postgres)
    key = Ed25519PrivateKey.generate()
    serving.extensions["dvc_central"].store.enrol("K01", public_b64(key))
    sid = receive(serving, key)
    assert pull(serving, key, 1).status_code == 304
    with database_reads(serving.extensions["dvc_central"].store) as calls:
        assert pull(serving, key, 1).status_code == 304
    assert calls == []
    other.extensions["dvc_central"].store.set_status(sid, "processing", "lan")
    assert [c["seq"] for c in feed_of(pull(serving, key, 1), serving)["changes"]] == [2]
    assert pull(serving, key, 2).status_code == 304
    for each in (serving, other):
        close(each)


# -- slots shared by stations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("hashing", ["same home slot", "same hash"])
def test_stations_sharing_a_slot_never_get_a_wrong_304(tmp_path, monkeypatch, hashing):
    """Three stations forced into one home slot (probed apart) or one hash (one slot holding the highest
    head of the three): random changes and pulls; a pull is 304 exactly when the database has nothing after
    the station's cursor."""
    if hashing == "same home slot":
        monkeypatch.setattr(feed, "station_hash", lambda station_id: (ord(station_id[-1]) << 40) | 7)
    else:
        monkeypatch.setattr(feed, "station_hash", lambda station_id: 12345)
    app = make_app(tmp_path / "central")
    central = app.extensions["dvc_central"]
    keys = {sid: Ed25519PrivateKey.generate() for sid in ("K01", "K02", "K03")}
    for station_id, key in keys.items():
        central.store.enrol(station_id, public_b64(key))
    dossiers = {station_id: receive(app, key, station_id) for station_id, key in keys.items()}
    cursors = dict.fromkeys(keys, 0)
    statuses = list(protocol.STATUSES)
    rng = random.Random(7)
    for step in range(120):
        station_id = rng.choice(list(keys))
        if rng.random() < 0.3:
            central.store.set_status(dossiers[station_id], statuses[step % len(statuses)], "lan")
            continue
        resp = pull(app, keys[station_id], cursors[station_id], station_id=station_id)
        head = central.store.head(station_id)
        assert resp.status_code == (304 if head == cursors[station_id] else 200), (step, station_id)
        if resp.status_code == 200:
            cursors[station_id] = feed_of(resp, app)["cursor"]
    fast = app.extensions["central_feed"].answered
    assert fast > 0
    if hashing == "same home slot":
        slots = {central.store.feed.find(feed.station_hash(s)) for s in keys}
        assert slots == {7, 8, 9}


# -- restores --------------------------------------------------------------------------------------------------

def test_a_store_marked_restored_is_never_answered_304_with_the_old_identity(app, key):
    receive(app, key)
    store = app.extensions["dvc_central"].store
    before = store.identity()
    assert pull(app, key, 1, store=before).status_code == 304
    after = store.mark_restored()
    resp = pull(app, key, 1, store=before)
    assert resp.status_code == 200 and feed_of(resp, app)["store"] == after
    assert pull(app, key, 1, store=after).status_code == 304


def test_a_store_marked_restored_by_another_process_is_never_answered_304(tmp_path, app, key):
    receive(app, key)
    store = app.extensions["dvc_central"].store
    before = store.identity()
    assert pull(app, key, 1, store=before).status_code == 304
    out = run_python("import sys, json\nfrom pathlib import Path\nfrom sync.central_backup import mark_restored\n"
                     "print(json.dumps(mark_restored(Path(sys.argv[1]), None)))", tmp_path / "central")
    after = json.loads(out)
    assert after["generation"] == before["generation"] + 1
    resp = pull(app, key, 1, store=before)
    assert resp.status_code == 200 and feed_of(resp, app)["store"] == after  # this process learnt it too
    assert pull(app, key, 1, store=after).status_code == 304


def test_a_database_put_back_behind_the_slots_is_found_behind_the_cursor(tmp_path):
    """The database copied back by hand while the central was stopped (same identity: nothing marked it
    restored), the board left with heads past it: the next start rebuilds the board from the database, so
    the station's cursor, ahead of it, gets the full answer showing the head behind it."""
    data = tmp_path / "central"
    app = make_app(data)
    key = Ed25519PrivateKey.generate()
    app.extensions["dvc_central"].store.enrol("K01", public_b64(key))
    sid = receive(app, key)
    import sqlite3

    copy = sqlite3.connect(tmp_path / "copy.sqlite3")
    sqlite3.connect(data / "central.sqlite3").backup(copy)
    copy.close()
    store = app.extensions["dvc_central"].store
    for status in ("processing", "needs_documents", "done"):
        store.set_status(sid, status, "lan")
    assert pull(app, key, 4).status_code == 304
    identity = store.identity()
    close(app)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data / 'central.sqlite3'}{suffix}").unlink(missing_ok=True)
    (tmp_path / "copy.sqlite3").rename(data / "central.sqlite3")
    again = make_app(data)
    assert again.extensions["dvc_central"].store.identity() == identity
    assert again.extensions["dvc_central"].store.feed.head("K01") == 1
    resp = pull(again, key, 4, store=identity)
    assert resp.status_code == 200 and feed_of(resp, again)["head"] == 1


def test_a_central_restored_from_a_backup_is_never_answered_304(tmp_path):
    from sync.central_backup import backup_central, restore_central

    data = tmp_path / "central"
    app = make_app(data)
    key = Ed25519PrivateKey.generate()
    app.extensions["dvc_central"].store.enrol("K01", public_b64(key))
    sid = receive(app, key)
    archive = backup_central(data, None, tmp_path / "backups")["path"]
    app.extensions["dvc_central"].store.set_status(sid, "processing", "lan")
    before = app.extensions["dvc_central"].store.identity()
    assert pull(app, key, 2).status_code == 304
    close(app)
    after = restore_central(data, None, Path(archive))["identity"]
    assert after["generation"] > before["generation"]
    again = make_app(data)
    resp = pull(again, key, 2, store=before)
    assert resp.status_code == 200 and feed_of(resp, again)["head"] == 1


# -- the board file ------------------------------------------------------------------------------------------

def test_the_board_is_private_rebuilt_at_a_cold_start_and_joined_by_a_second_process(tmp_path):
    data = tmp_path / "central"
    app = make_app(data)
    key = Ed25519PrivateKey.generate()
    app.extensions["dvc_central"].store.enrol("K01", public_b64(key))
    receive(app, key)
    path = data / feed.FILE_NAME
    assert path.stat().st_mode & 0o777 == 0o600 and (data / feed.LIVE_NAME).stat().st_mode & 0o777 == 0o600
    assert path.read_bytes()[:8] == b"DVCFEED1"
    board = app.extensions["dvc_central"].store.feed
    board.raise_head("K01", 9)  # as a change whose commit failed: too high, a database read, never wrong
    joined = make_app(data)  # another process while this one runs: the slots are kept, not rebuilt
    assert joined.extensions["dvc_central"].store.feed.head("K01") == 9
    assert pull(joined, key, 1).status_code == 304  # from the view, which read the database
    assert joined.extensions["central_feed"].answered == 0
    close(joined)
    close(app)
    path.write_bytes(b"not a board")  # damaged, or another format: rebuilt at the next start
    again = make_app(data)
    assert again.extensions["dvc_central"].store.feed.head("K01") == 1
    assert pull(again, key, 1).status_code == 304


# -- the station's side ----------------------------------------------------------------------------------------

def test_the_station_sends_conditional_pulls_and_takes_304_as_no_change(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        config = make_station(tmp_path / "station", central.url,
                              sync={"base_delay": 0.05, "max_delay": 0.2, "idle_interval": 0.05})
        enrol(central.central, config)
        submit_many(config, 2)
        from sync.worker import worker_from_config

        worker = worker_from_config(config)
        try:
            assert worker.run(until_empty=True, max_seconds=30).get("acked") == 2
            fast = central.app.extensions["central_feed"]
            before, cursor = fast.answered, worker.cursor()
            assert cursor == 2
            assert worker.pull() == 0 and worker.cursor() == cursor
            assert fast.answered == before + 1
            sid = central.central.store.submissions()[0]["submission_id"]
            central.central.store.set_status(sid, "processing", "lan")
            assert worker.pull() == 1 and worker.cursor() == 3
            assert worker.pull() == 0 and fast.answered == before + 2
        finally:
            worker.close()


def test_the_client_with_an_older_central_and_with_a_304_not_of_the_central(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        key = Ed25519PrivateKey.generate()
        central.central.store.enrol("K01", public_b64(key))
        receive(central.app, key)
        store = central.central.store.identity()
        client = CentralClient(central.url, "K01", key, central.central.signing_key.public_key(), timeout=10)
        try:
            assert client.changes(1, store=store) is None
            wsgi = central.app.wsgi_app

            def older(environ, start_response):  # a central from before conditional pulls
                environ.pop("HTTP_IF_NONE_MATCH", None)
                return wsgi(environ, start_response)

            central.app.wsgi_app = older
            assert client.changes(1, store=store)["changes"] == []

            def portal(environ, start_response):  # a 304 that does not answer the station's question
                start_response("304 Not Modified", [("ETag", '"something/else"')])
                return []

            central.app.wsgi_app = portal
            with pytest.raises(LinkError, match="304"):
                client.changes(1, store=store)
            central.app.wsgi_app = wsgi
            assert client.changes(1, store=store) is None
        finally:
            client.close()


def test_the_tag_names_the_store_its_generation_and_the_cursor():
    store = {"store_id": "f2eefcdb45823cedaa4b8720268f624d", "generation": 3}
    assert protocol.feed_tag(store, 41) == '"f2eefcdb45823cedaa4b8720268f624d/3/41"'
    for bad_store, since in ((None, 1), ({}, 1), ({"store_id": 'x"y', "generation": 1}, 1),
                             ({"store_id": "abc", "generation": "1"}, 1), ({"store_id": "abc", "generation": True}, 1),
                             ({"store_id": "abc", "generation": 1}, -1), ({"store_id": "abc", "generation": 1}, "1")):
        assert protocol.feed_tag(bad_store, since) is None
