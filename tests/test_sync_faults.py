"""Exactly once, the hard way: hundreds of dossiers through a proxy that drops, delays, cuts short, fakes
and refuses, while the sync worker process is SIGKILLed at random moments, one worker runs with its clock
two days ahead, and the central is killed and restored from a backup taken while it ran. Every dossier
must arrive exactly once, none lost, none duplicated, each keeping its official code."""
import json
import os
import random
import signal
import subprocess
import time

import pytest

from kiosk.core import audit
from kiosk.core.db import connect
from sync.central import open_central
from tests.support.faulty_proxy import FaultMix, FaultyProxy, Link
from tests.support.harness import CentralProcess, enrol, make_station, submit_many, worker_command
from sync.worker import station_paths

from .test_sync_restore import faketime, put_back, sqlite_backup

FAULTS = {"pass": 0.80, "drop_before": 0.03, "drop_after": 0.04, "truncate": 0.03, "delay": 0.02,
          "http500": 0.03, "http429": 0.01, "portal200": 0.02, "forged_ack": 0.02}
SETTINGS = {"base_delay": 0.02, "max_delay": 0.2, "idle_interval": 0.05, "timeout": 5, "batch_size": 25}


def _usb_round_trip(config, tmp_path) -> int:
    """Meanwhile a USB bundle of what is waiting goes to the central and its acks come back."""
    from kiosk.core.sealing import load_or_create_key
    from sync.bundle import apply_ack_file, export_bundle, import_bundle
    from sync.keys import load_central_keys, load_or_create_signing_key

    paths = station_paths(config)
    signing, bundle_key = load_central_keys(paths["central_keys"])
    conn = connect(paths["database"])
    try:
        result = export_bundle(conn, tmp_path / "usb", station_id="K01",
                               station_key=load_or_create_signing_key(paths["station_key"]),
                               payload_key=load_or_create_key(paths["payload_key"]), central_bundle_key=bundle_key)
        if result["path"] is None:
            return 0
        ack_file, _counts = import_bundle(open_central(tmp_path / "central"), result["path"].read_bytes())
        apply_ack_file(conn, json.dumps(ack_file).encode(), station_id="K01", central_signing_key=signing)
        return result["dossiers"]
    finally:
        conn.close()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.parametrize("batch_http", [True, False], ids=["batch", "put"])
def test_every_dossier_arrives_exactly_once_through_faults_kills_and_a_restart(tmp_path, batch_http):
    seed = int(os.environ.get("DVC_FAULT_SEED", "20261128"))
    rng = random.Random(seed)
    first, later, rounds = 200, 100, 10
    central = CentralProcess(tmp_path / "central").start()
    workers: list[subprocess.Popen] = []
    try:
        # Batches are fast: small ones over a link with some latency keep the worker busy long enough to be
        # killed in the middle of its work.
        link = Link(bandwidth_bps=4_000_000, rtt_s=0.04, loss=0.0) if batch_http else None
        settings = {**SETTINGS, "batch_http": batch_http, "batch_size": 5 if batch_http else 25}
        with FaultyProxy(central.port, FaultMix(FAULTS, seed), link=link, seed=seed, delay_s=0.2,
                         retry_after="1") as proxy:
            config = make_station(tmp_path / "station", proxy.url, sync=settings)
            enrol(open_central(tmp_path / "central"), config)
            submitted = submit_many(config, first, seed=seed)
            kills = bundled = 0
            backup = None
            for round_no in range(rounds):
                # One worker runs with its clock two days ahead (then NTP sets it right for the next).
                proc = subprocess.Popen(worker_command(config, "--max-seconds", "30"),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True, env=faketime("+2d") if round_no == 4 else None)
                workers.append(proc)
                # The web app keeps taking dossiers while the worker runs.
                submitted += submit_many(config, later // rounds, seed=seed + round_no + 1)
                time.sleep(rng.uniform(0.1, 1.5))
                if round_no == 2:
                    bundled = _usb_round_trip(config, tmp_path)
                if round_no == 3:  # the central's nightly backup, taken while it works
                    backup = sqlite_backup(tmp_path / "central/central.sqlite3", tmp_path / "backup.sqlite3")
                if round_no == rounds // 2 + 1:  # it dies and is restored from that backup
                    central.kill()
                    put_back(tmp_path / "central/central.sqlite3", backup)
                    open_central(tmp_path / "central").store.mark_restored()  # as `kiosk central restore`
                    central.start()
                    proxy.set_upstream(central.port)
                if proc.poll() is None:
                    kills += 1
                _kill(proc)
            final = subprocess.run(worker_command(config, "--until-empty", "--max-seconds", "90"),
                                   capture_output=True, text=True, timeout=120)
            assert final.returncode == 0, final.stderr[-2000:]
            faults, statuses = dict(proxy.faults), dict(proxy.statuses)
    finally:
        for proc in workers:
            _kill(proc)
        central.kill()

    store = open_central(tmp_path / "central").store
    received = {row["submission_id"]: row for row in store.submissions(limit=10_000)}
    conn = connect(station_paths(config)["database"])
    try:
        station = {r["submission_id"]: dict(r) for r in conn.execute(
            "SELECT d.submission_id, d.payload_sha256, d.central_code, o.state FROM dossiers d "
            "JOIN outbox o USING (submission_id)")}
        acked_events = conn.execute("SELECT COUNT(*), COUNT(DISTINCT subject) FROM audit_events "
                                    "WHERE action = 'dossier.acknowledged'").fetchone()
        resent = sum(json.loads(detail)["resent"] for (detail,) in conn.execute(
            "SELECT detail FROM audit_events WHERE action = 'central.went_back'"))
        changed = conn.execute("SELECT COUNT(*) FROM audit_events WHERE action = 'dossier.code_changed'").fetchone()[0]
        chain = audit.verify(conn)
        via = dict(conn.execute("SELECT via, COUNT(*) FROM sync_acks GROUP BY via").fetchall())
    finally:
        conn.close()

    lost = set(submitted) - set(received)
    unknown = set(received) - set(submitted)
    path = "batch" if batch_http else "put"
    print(f"\nexactly-once ({path}, seed {seed}): submitted {len(submitted)}, "
          f"received by the central {len(received)}, "
          f"lost {len(lost)}, unknown {len(unknown)}, distinct official codes "
          f"{len({r['central_code'] for r in received.values()})}, worker kills {kills}, "
          f"acknowledgements recorded {acked_events[0]} ({via.get('bundle', 0)} by USB ack file, {bundled} bundled), "
          f"sent again after the central's restore {resent}, codes changed {changed}, "
          f"faults {faults}, central answers {statuses}")
    assert len(submitted) == first + later
    assert not lost and not unknown
    assert store.count() == len(submitted)
    assert len({r["central_code"] for r in received.values()}) == len(submitted)
    assert all(received[sid]["payload_sha256"] == station[sid]["payload_sha256"] for sid in submitted)
    assert all(station[sid]["state"] == "sent" for sid in submitted)
    assert all(station[sid]["central_code"] == received[sid]["central_code"] for sid in submitted)
    # Each recorded once, and once more for each time the restored central was sent it again.
    assert tuple(acked_events) == (len(submitted) + resent, len(submitted))
    assert resent > 0 and changed == 0  # the restore lost some; they came back with their codes
    assert chain == []
    if not batch_http:  # some answers were lost on the way and the resend got the same ack (200)
        assert statuses.get("PUT 200", 0) > 0
    assert kills == rounds  # every worker was still running (busy or waiting) when it was SIGKILLed
