"""The blob client helper over real HTTP (resume after a cut, skip what the central has) and the bench."""
import hashlib
import os

import pytest

from tests.bench.sync_bench import bench_sync
from sync.client import CentralClient, LinkError
from tests.support.faulty_proxy import FaultyProxy, Script
from tests.support.harness import CentralThread, enrol, make_station
from sync.keys import load_or_create_signing_key
from sync.worker import station_paths


def test_blob_upload_resumes_after_a_cut_and_skips_what_the_central_has(tmp_path):
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    with CentralThread(tmp_path / "central") as central, \
            FaultyProxy(central.port, Script(["pass", "pass", "drop_after", "drop_before"])) as proxy:
        config = make_station(tmp_path / "station", proxy.url)
        enrol(central.central, config)
        client = CentralClient(proxy.url, "K01", load_or_create_signing_key(station_paths(config)["station_key"]),
                               central.central.signing_key.public_key(), timeout=5)
        with pytest.raises(LinkError):
            # HEAD, chunk 1, chunk 2 arrives but its answer is lost, and the immediate resend is cut too.
            client.upload_blob(data, chunk_size=64 * 1024)
        assert central.central.blobs.offset(sha) == 128 * 1024
        before = proxy.bytes_up
        assert client.upload_blob(data, chunk_size=64 * 1024) == sha
        assert proxy.bytes_up - before < len(data) - 128 * 1024 + 8 * 1024  # only the rest was sent again
        assert central.central.blobs.read(sha) == data
        requests = sum(proxy.faults.values())
        assert client.upload_blob(data) == sha
        assert sum(proxy.faults.values()) == requests + 1  # one HEAD: the central has it
        client.close()


def test_bench_sync_reports_rows_for_loopback_and_the_weak_link():
    rows = bench_sync(n_loopback=20, n_weak_batch=6, n_weak_put=2, min_seconds=0, repeat=1)  # one chunk each
    assert [r["n"] for r in rows] == [20, 20, 6, 2]
    for row in rows:
        assert set(row) >= {"name", "dossiers_per_s", "bytes_per_dossier", "n"}
        assert row["sent"] == row["n"] and row["dossiers_per_s"] > 0 and row["bytes_per_dossier"] > 100
    assert "64 kbit/s" in rows[2]["name"]
