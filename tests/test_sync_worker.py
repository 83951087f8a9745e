"""The station's sync worker against the real central over HTTP on 127.0.0.1, one fault at a time."""
import random
from datetime import datetime, timedelta, timezone

import pytest

from kiosk.core import audit
from kiosk.core.catalog import Procedure
from kiosk.core.dossiers import open_payload
from tests.support.faulty_proxy import FaultyProxy, Script
from tests.support.harness import PROCEDURE, CentralThread, enrol, make_station, submit_many
from sync.worker import full_jitter, worker_from_config

FAST = {"base_delay": 0.05, "max_delay": 0.4, "idle_interval": 0.05, "timeout": 5}


@pytest.fixture
def central(tmp_path):
    with CentralThread(tmp_path / "central") as central:
        yield central


def station(tmp_path, url, central, **sync):
    config = make_station(tmp_path / "station", url, sync={**FAST, **sync})
    enrol(central.central, config)
    return config


def rows(worker, sql, args=()):
    return [tuple(r) for r in worker.conn.execute(sql, args).fetchall()]


def test_acknowledged_dossiers_are_sent_coded_received_and_audited(tmp_path, central):
    config = station(tmp_path, central.url, central)
    ids = submit_many(config, 5)
    worker = worker_from_config(config)
    report = worker.run(until_empty=True, max_seconds=20)
    assert report["acked"] == 5
    assert rows(worker, "SELECT DISTINCT state FROM outbox") == [("sent",)]
    dossiers = rows(worker, "SELECT submission_id, central_code, status FROM dossiers")
    codes = {sid: code for sid, code, status in dossiers if status == "received"}
    assert set(codes) == set(ids)
    assert all(central.central.store.submission(sid)["central_code"] == codes[sid] for sid in ids)
    events = rows(worker, "SELECT subject, detail FROM audit_events WHERE action = 'dossier.acknowledged'")
    assert {sid for sid, _ in events} == set(ids)
    assert all("Nguyễn" not in detail and "id_number" not in detail for _, detail in events)
    assert audit.verify(worker.conn) == []
    worker.close()


def test_status_changes_flow_back_from_the_feed(tmp_path, central):
    config = station(tmp_path, central.url, central)
    ids = submit_many(config, 3)
    worker = worker_from_config(config)
    worker.run(until_empty=True, max_seconds=20)
    store = central.central.store
    store.set_status(ids[0], "processing", "staff")
    store.set_status(ids[1], "needs_documents", "staff")
    store.set_status(ids[1], "done", "staff")
    store.set_status(ids[2], "returned_by_post", "staff")
    assert worker.cycle()["pulled"] == 4
    status = dict(rows(worker, "SELECT submission_id, status FROM dossiers"))
    assert [status[i] for i in ids] == ["processing", "done", "returned_by_post"]
    assert worker.cycle()["pulled"] == 0  # the cursor moved on
    worker.close()


def test_payloads_are_purged_after_retention_and_restore_window_once_the_central_confirms(tmp_path):
    with CentralThread(tmp_path / "central", RESTORE_WINDOW=3 * 86400) as central:
        config = station(tmp_path, central.url, central, retention_days=2.0)
        ids = submit_many(config, 3)
        worker = worker_from_config(config)
        worker.run(until_empty=True, max_seconds=20)
        assert worker.purge() == 0
        assert open_payload(worker.conn, worker.payload_key, ids[0]) is not None
        later = datetime.now(timezone.utc) + timedelta(days=2, minutes=1)
        # This station's clock jumped days ahead, the central's did not: nothing is purged early.
        assert worker.purge(now=later) == 0
        assert worker.purge(central_now=later) == 0  # and the other way round
        # Past the retention, but the central may still restore a backup without them (3-day window).
        assert worker.purge(now=later, central_now=later) == 0
        assert worker._state("restore_window_s") == str(3 * 86400.0)
        later = datetime.now(timezone.utc) + timedelta(days=3, minutes=1)
        assert worker.purge(now=later, central_now=later) == 3
        assert open_payload(worker.conn, worker.payload_key, ids[0]) is None
        kept = rows(worker, "SELECT tracking_code, central_code, status, payload_sha256 FROM dossiers")
        assert all(all(value is not None for value in row) for row in kept)  # tracking still works
        assert len(rows(worker, "SELECT * FROM audit_events WHERE action = 'dossier.purged'")) == 3
        worker.close()


def test_a_refused_dossier_is_quarantined_with_its_reason_and_never_retried(tmp_path, central):
    config = station(tmp_path, central.url, central)
    bad = Procedure(**{**PROCEDURE.__dict__, "code": "khong-hop-le"})
    good = submit_many(config, 2)
    rejected = submit_many(config, 1, procedure=bad)[0]
    worker = worker_from_config(config)
    report = worker.run(until_empty=True, max_seconds=20)
    assert (report["acked"], report["rejected"]) == (2, 1)
    state, error = rows(worker, "SELECT state, last_error FROM outbox WHERE submission_id = ?", (rejected,))[0]
    assert state == "rejected" and error.startswith("bad_procedure_code")
    assert rows(worker, "SELECT status FROM dossiers WHERE submission_id = ?", (rejected,)) == [("rejected",)]
    assert worker.cycle()["rejected"] == 0  # not offered again
    assert central.central.store.count() == len(good)
    worker.close()


def test_a_revoked_station_blames_no_dossier(tmp_path, central):
    config = station(tmp_path, central.url, central)
    submit_many(config, 2)
    central.central.store.revoke("K01")
    worker = worker_from_config(config)
    report = worker.cycle()
    assert report["refused"] == 1
    assert rows(worker, "SELECT state FROM outbox") == [("pending",), ("pending",)]
    assert "revoked_station" in rows(worker, "SELECT last_error FROM outbox WHERE last_error IS NOT NULL")[0][0]
    worker.close()


@pytest.mark.parametrize("batch_http", [True, False], ids=["batch", "put"])
@pytest.mark.parametrize("fault", ["portal200", "forged_ack", "http500", "truncate", "drop_before",
                                   "drop_after", "http429"])
def test_no_answer_but_the_centrals_own_acknowledgement_marks_a_dossier_sent(tmp_path, central, fault, batch_http):
    with FaultyProxy(central.port, Script([fault]), retry_after="0") as proxy:
        config = station(tmp_path, proxy.url, central, batch_http=batch_http)
        sid = submit_many(config, 1)[0]
        worker = worker_from_config(config)
        report = worker.cycle()
        assert report["transient"] == 1 and report["acked"] == report["duplicate"] == 0
        state, attempts, error = rows(worker, "SELECT state, attempts, last_error FROM outbox")[0]
        assert (state, attempts) == ("pending", 1) and error
        totals = worker.run(until_empty=True, max_seconds=20)
        assert rows(worker, "SELECT state FROM outbox") == [("sent",)]
        # After drop_after or truncate the central had it already: the retry got the same ack again (200).
        assert totals["duplicate" if fault in ("drop_after", "truncate") else "acked"] == 1
        assert central.central.store.count() == 1
        assert rows(worker, "SELECT central_code FROM dossiers")[0][0] == \
            central.central.store.submission(sid)["central_code"]
        worker.close()


def test_a_central_without_the_batch_endpoint_gets_one_put_per_dossier(tmp_path, central):
    seen = []

    def plan(index, method, path):
        seen.append((method, path.split("?")[0].rsplit("/", 1)[-1]))
        return "http404" if path.endswith("/batch") else "pass"

    with FaultyProxy(central.port, plan) as proxy:
        config = station(tmp_path, proxy.url, central)
        ids = submit_many(config, 3)
        worker = worker_from_config(config)
        assert worker.run(until_empty=True, max_seconds=20)["acked"] == 3
        assert seen[:4] == [("POST", "batch")] + [("PUT", sid) for sid in ids]
        worker.close()


def test_retry_after_is_honoured(tmp_path, central):
    with FaultyProxy(central.port, Script(["http429"]), retry_after="120") as proxy:
        config = station(tmp_path, proxy.url, central)
        submit_many(config, 1)
        worker = worker_from_config(config)
        before = datetime.now(timezone.utc)
        worker.cycle()
        (due,) = rows(worker, "SELECT next_attempt_at FROM outbox")[0]
        assert datetime.fromisoformat(due) >= before + timedelta(seconds=119)
        assert worker.next_wait() >= 119
        worker.close()


def test_full_jitter_stays_within_its_capped_window():
    rng = random.Random(1)
    for attempt in range(40):
        window = min(30.0, 0.5 * 2 ** attempt)
        waits = [full_jitter(attempt, 0.5, 30.0, rng) for _ in range(50)]
        assert all(0 <= w <= window for w in waits)
    assert max(full_jitter(50, 0.5, 30.0, rng) for _ in range(200)) > 20  # spreads over the whole window


def test_the_worker_never_holds_a_write_lock_while_on_the_network(tmp_path, central):
    """The web app writes while the worker waits on a slow link: a submit must not block."""
    with FaultyProxy(central.port, Script(["delay"]), delay_s=3.0) as proxy:
        config = station(tmp_path, proxy.url, central)
        submit_many(config, 3)
        worker = worker_from_config(config)
        import threading
        import time
        t = threading.Thread(target=worker.run, kwargs={"until_empty": True, "max_seconds": 20})
        t.start()
        time.sleep(0.3)
        started = time.monotonic()
        submit_many(config, 1, seed=9)
        assert time.monotonic() - started < 1.5  # the worker's request is still on the wire (3 s)
        t.join(timeout=30)
        assert not t.is_alive()
        assert rows(worker, "SELECT COUNT(*) FROM outbox WHERE state = 'sent'")[0][0] == 4
        worker.close()


def test_a_station_whose_clock_drifted_offline_corrects_it_from_the_central(tmp_path, central):
    config = station(tmp_path, central.url, central)
    submit_many(config, 2)
    worker = worker_from_config(config)
    worker.client.clock_offset = -2 * 3600  # two hours slow
    assert worker.cycle()["acked"] == 2
    assert abs(worker.client.clock_offset) < 5
    worker.close()


def test_a_connection_the_central_closed_while_idle_is_reopened_not_counted_as_a_failure(tmp_path, central):
    with FaultyProxy(central.port, Script(["close_after"] * 3)) as proxy:
        config = station(tmp_path, proxy.url, central)
        submit_many(config, 1)
        worker = worker_from_config(config)
        first = worker.cycle()  # the push's connection is closed after its answer; the pull reopens one
        submit_many(config, 1, seed=5)
        second = worker.cycle()
        assert (first["acked"], second["acked"], first["transient"] + second["transient"]) == (1, 1, 0)
        worker.close()


def test_a_wrong_payload_key_blames_no_dossier(tmp_path, central):
    config = station(tmp_path, central.url, central)
    submit_many(config, 2)
    worker = worker_from_config(config)
    worker.payload_key = bytes(32)
    assert worker.cycle()["refused"] == 1
    assert rows(worker, "SELECT DISTINCT state FROM outbox") == [("pending",)]
    assert central.central.store.count() == 0
    worker.close()


def test_sigterm_stops_the_worker_process_cleanly(tmp_path, central):
    import json
    import signal
    import subprocess
    import time

    from kiosk.core.db import connect
    from tests.support.harness import worker_command
    from sync.worker import station_paths

    config = station(tmp_path, "http://127.0.0.1:9", central, idle_interval=60.0)  # nothing listens there
    submit_many(config, 2)
    proc = subprocess.Popen(worker_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Wait (bounded) until the worker has finished a cycle, so its SIGTERM handler is installed.
        conn = connect(station_paths(config)["database"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and conn.execute(
                "SELECT COUNT(*) FROM sync_state WHERE name = 'last_cycle'").fetchone()[0] == 0:
            time.sleep(0.1)
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["pending"] == 2 and report["transient"] >= 1
