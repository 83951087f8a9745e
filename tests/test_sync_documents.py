"""A dossier's documents reach the central (sync/worker.py, sync/bundle.py): uploaded as resumable blobs before
the dossier, resumed after a cut from the central's offset, uploaded again when the central lost them (428,
a restore), carried on a USB stick, purged with the dossier. Real central over HTTP on 127.0.0.1, real
pages (tests/support/paper.py) through the station's core."""
import base64
import hashlib
import json
import random
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from kiosk.core import audit, documents
from kiosk.core.db import connect, write_transaction
from kiosk.core.sealing import load_or_create_key
from sync.bundle import BundleError, apply_ack_file, export_bundle, import_bundle, seal_bundle
from sync.central import open_central
from sync.keys import load_central_keys, load_or_create_signing_key
from sync.sync_cli import status_report
from sync.worker import station_paths, worker_from_config
from tests.support.faulty_proxy import FaultMix, FaultyProxy, Script
from tests.support.harness import CentralThread, enrol, make_station
from tests.support.paper_dossiers import PAPERS, distinct_page, submit_with_papers

FAST = {"base_delay": 0.02, "max_delay": 0.2, "idle_interval": 0.05, "timeout": 5}
FAULTS = {"pass": 0.80, "drop_before": 0.03, "drop_after": 0.04, "truncate": 0.03, "delay": 0.02,
          "http500": 0.03, "http429": 0.01, "portal200": 0.02, "forged_ack": 0.02}


@pytest.fixture(scope="module")
def pages():
    """Twelve different clean pages (about 145 KB each, as the station keeps a scanned A4 text page)."""
    return [distinct_page(n) for n in range(12)]


def station(tmp_path, url, central, **sync):
    config = make_station(tmp_path / "station", url, sync={**FAST, **sync})
    enrol(central, config)
    return config


def pdfs(config, sid) -> dict[str, bytes]:
    """{sha256: PDF} of a dossier's documents as the station keeps them."""
    paths = station_paths(config)
    conn = connect(paths["database"])
    try:
        key = load_or_create_key(paths["payload_key"])
        return {row["sha256"]: documents.pdf_of(conn, key, sid, row["document_id"])
                for row in documents.of_dossier(conn, sid)}
    finally:
        conn.close()


def unsent(worker, sid) -> list[str]:
    return [row["sha256"] for row in documents.unsent(worker.conn, sid)]


def stored_blobs(central_dir) -> set[str]:
    return {p.name for p in (central_dir / "blob-store" / "blobs").glob("*/*")}


def test_a_dossier_with_two_documents_reaches_the_central_with_exactly_its_pdfs(tmp_path, pages):
    with CentralThread(tmp_path / "central") as central:
        config = station(tmp_path, central.url, central.central)
        sid = submit_with_papers(config, {"giay-khai-sinh": pages[0:2], "so-ho-khau": pages[2:3]})
        kept = pdfs(config, sid)
        assert len(kept) == 2 and all(hashlib.sha256(pdf).hexdigest() == sha for sha, pdf in kept.items())
        worker = worker_from_config(config)
        # `kiosk sync status` says how much of the papers waits to be sent.
        assert status_report(worker.conn)["documents_pending_bytes"] == sum(map(len, kept.values()))
        report = worker.run(until_empty=True, max_seconds=30)
        assert report["acked"] == 1 and unsent(worker, sid) == []
        assert status_report(worker.conn)["documents_pending_bytes"] == 0
        assert stored_blobs(tmp_path / "central") == set(kept)
        for sha, pdf in kept.items():
            held = central.central.blobs.read(sha)
            assert held == pdf and hashlib.sha256(held).hexdigest() == sha
        received = json.loads(central.central.store.submission(sid)["document"])
        assert [(a["document"], a["sha256"], a["bytes"], a["pages"]) for a in received["attachments"]] == [
            (row["document_id"], row["sha256"], row["size_bytes"], row["pages"])
            for row in documents.of_dossier(worker.conn, sid)]
        assert [a["pages"] for a in received["attachments"]] == [2, 1]
        assert central.central.blobs.owners(next(iter(kept))) == ["K01"]
        worker.close()


@pytest.mark.parametrize("batch_http", [True, False], ids=["batch", "put"])
def test_every_dossier_and_every_document_arrives_exactly_once_through_faults(tmp_path, pages, batch_http):
    seed = 20261128
    rng = random.Random(seed)
    with CentralThread(tmp_path / "central") as central, \
            FaultyProxy(central.port, FaultMix(FAULTS, seed), seed=seed, delay_s=0.1, retry_after="1") as proxy:
        # Small chunks: many requests per PDF, so the faults fall in the middle of uploads too.
        config = station(tmp_path, proxy.url, central.central, batch_size=5, blob_chunk_bytes=32 * 1024,
                         batch_http=batch_http)
        submitted, used = [], 0
        for n in range(12):
            papers = rng.sample([p["id"] for p in PAPERS], rng.randint(1, 3))
            chosen = {}
            for paper in papers:  # one or two pages each; the pages come round again, so a few documents
                # share their PDF with another dossier's (one blob at the central, as a correction's)
                count = rng.randint(1, 2)
                chosen[paper] = [pages[(used + i) % len(pages)] for i in range(count)][::-1 if n % 2 else 1]
                used += count
            submitted.append(submit_with_papers(config, chosen, seed=n))
        expected = {sha: pdf for sid in submitted for sha, pdf in pdfs(config, sid).items()}
        worker = worker_from_config(config, rng=random.Random(seed))
        worker.run(until_empty=True, max_seconds=45)
        faults = dict(proxy.faults)
        worker.close()
    store = central.central.store
    conn = connect(station_paths(config)["database"])
    try:
        states = dict(conn.execute("SELECT submission_id, state FROM outbox").fetchall())
        acked = conn.execute("SELECT COUNT(*), COUNT(DISTINCT subject) FROM audit_events "
                             "WHERE action = 'dossier.acknowledged'").fetchone()
        codes = dict(conn.execute("SELECT submission_id, central_code FROM dossiers").fetchall())
        not_sent = [r["sha256"] for sid in submitted for r in documents.unsent(conn, sid)]
        chain = audit.verify(conn)
    finally:
        conn.close()
    received = {row["submission_id"]: row for row in store.submissions(limit=100)}
    print(f"\ndocuments exactly once: {len(submitted)} dossiers, {len(expected)} PDFs "
          f"({sum(map(len, expected.values()))} bytes), faults {faults}")
    assert sum(n for name, n in faults.items() if name != "pass") > 10  # the faults did happen
    assert set(received) == set(submitted) and store.count() == len(submitted)  # none lost, none twice
    assert all(states[sid] == "sent" and codes[sid] == received[sid]["central_code"] for sid in submitted)
    assert tuple(acked) == (len(submitted), len(submitted)) and chain == []
    assert len(expected) >= len(submitted) and not_sent == []
    assert stored_blobs(tmp_path / "central") == set(expected)
    assert all(central.central.blobs.read(sha) == pdf for sha, pdf in expected.items())  # every byte


def test_an_upload_cut_in_the_middle_of_a_blob_resumes_from_the_centrals_offset(tmp_path, pages):
    chunk = 64 * 1024
    # HEAD, two chunks, then the third is dropped, and so is its immediate resend on a fresh connection.
    with CentralThread(tmp_path / "central") as central, \
            FaultyProxy(central.port, Script(["pass", "pass", "pass", "drop_before", "drop_before"])) as proxy:
        config = station(tmp_path, proxy.url, central.central, blob_chunk_bytes=chunk)
        sid = submit_with_papers(config, {"giay-khai-sinh": pages[3:5]})
        ((sha, pdf),) = pdfs(config, sid).items()
        assert len(pdf) > 3 * chunk
        worker = worker_from_config(config)
        report = worker.cycle()
        assert report["transient"] == 1 and report["acked"] == 0
        assert central.central.blobs.offset(sha, "K01") == 2 * chunk and unsent(worker, sid) == [sha]
        reason = worker.conn.execute("SELECT last_error FROM outbox WHERE submission_id = ?", (sid,)).fetchone()[0]
        assert reason.startswith("document upload:")
        before = proxy.bytes_up
        assert worker.run(until_empty=True, max_seconds=20)["acked"] == 1
        again = proxy.bytes_up - before
        # The rest of the blob, the submission and the requests' headers: never the whole blob again.
        assert again < len(pdf) - 2 * chunk + 16 * 1024
        assert central.central.blobs.read(sha) == pdf
        print(f"\nresume: blob {len(pdf)} bytes, {2 * chunk} kept by the central, {again} bytes sent after the cut")
        worker.close()


def _cut_batches(count: int):
    """A plan that drops the first ``count`` batch requests before the central sees them (twice each: the
    client retries a dropped kept-alive connection once at once)."""
    seen = []

    def plan(index, method, path):
        if path.endswith("/submissions/batch") and len(seen) < 2 * count:
            seen.append(index)
            return "drop_before"
        return "pass"
    return plan


def test_a_central_that_lost_its_blobs_answers_428_and_the_station_uploads_them_again(tmp_path, pages):
    central_dir = tmp_path / "central"
    with CentralThread(central_dir) as central, FaultyProxy(central.port, _cut_batches(1)) as proxy:
        config = station(tmp_path, proxy.url, central.central)
        sid = submit_with_papers(config, {"giay-khai-sinh": pages[5:6], "uy-quyen": pages[6:7]})
        kept = pdfs(config, sid)
        worker = worker_from_config(config)
        # The documents go up, the dossier does not (its batch is cut): the station holds them uploaded.
        assert worker.cycle()["transient"] == 1 and unsent(worker, sid) == []
        shutil.rmtree(central_dir / "blob-store" / "blobs")  # the central loses them (a restore, a new disk)
        with write_transaction(worker.conn):  # due now, not after its backoff
            worker.conn.execute("UPDATE outbox SET next_attempt_at = ?", ("2000-01-01T00:00:00+00:00",))
        report = worker.cycle()
        assert report["transient"] == 1 and report["acked"] == 0
        reason = worker.conn.execute("SELECT last_error FROM outbox WHERE submission_id = ?", (sid,)).fetchone()[0]
        assert reason.startswith("HTTP 428 missing_blobs (2)")
        assert sorted(unsent(worker, sid)) == sorted(kept)  # marked to upload again
        assert worker.run(until_empty=True, max_seconds=20)["acked"] == 1
        assert all(central.central.blobs.read(sha) == pdf for sha, pdf in kept.items())

        # A central restored from a backup: the rewind resends the dossier and its documents are offered
        # again; those it lost are uploaded again.
        shutil.rmtree(central_dir / "blob-store" / "blobs")
        worker.rewind(worker.known_store(), "restored", resend_all=True)
        assert sorted(unsent(worker, sid)) == sorted(kept)
        assert worker.run(until_empty=True, max_seconds=20)["duplicate"] == 1
        assert unsent(worker, sid) == [] and all(central.central.blobs.read(sha) == pdf for sha, pdf in kept.items())
        worker.close()


def _bundle_station(tmp_path, pages):
    central = open_central(tmp_path / "central")
    config = make_station(tmp_path / "station", "http://127.0.0.1:9", sync=FAST)
    enrol(central, config)
    ids = [submit_with_papers(config, {"giay-khai-sinh": pages[7:8], "so-ho-khau": pages[8:10]}, seed=1),
           submit_with_papers(config, {"uy-quyen": pages[10:11]}, seed=2)]
    paths = station_paths(config)
    signing, bundle_key = load_central_keys(paths["central_keys"])
    keys = {"station_id": "K01", "station_key": load_or_create_signing_key(paths["station_key"]),
            "payload_key": load_or_create_key(paths["payload_key"]), "central_bundle_key": bundle_key}
    return central, config, ids, signing, keys


def test_a_usb_bundle_carries_the_documents_and_its_ack_file_marks_them_uploaded(tmp_path, pages):
    central, config, ids, signing, keys = _bundle_station(tmp_path, pages)
    expected = {sha: pdf for sid in ids for sha, pdf in pdfs(config, sid).items()}
    conn = connect(station_paths(config)["database"])
    try:
        result = export_bundle(conn, tmp_path / "usb", **keys)
        assert (result["dossiers"], result["documents"], result["left"]) == (2, 3, 0)
        data = result["path"].read_bytes()
        ack_file, counts = import_bundle(central, data)
        assert counts == {"created": 2, "duplicate": 0, "rejected": 0, "deferred": 0}
        assert stored_blobs(tmp_path / "central") == set(expected)
        assert all(central.blobs.read(sha) == pdf for sha, pdf in expected.items())
        assert central.blobs.owners(next(iter(expected))) == ["K01"]
        assert import_bundle(central, data)[1]["duplicate"] == 2  # importing twice changes nothing
        assert all(documents.unsent(conn, sid) for sid in ids)  # not before the ack file comes back
        applied = apply_ack_file(conn, json.dumps(ack_file).encode(), station_id="K01", central_signing_key=signing)
        assert applied["acknowledged"] == 2
        assert all(documents.unsent(conn, sid) == [] for sid in ids)
        assert all(row["uploaded_at"] for sid in ids for row in documents.of_dossier(conn, sid))
        assert export_bundle(conn, tmp_path / "usb2", **keys)["path"] is None  # nothing waits any more
    finally:
        conn.close()


def test_a_bundle_keeps_to_its_document_budget_and_refuses_a_document_that_does_not_match(tmp_path, pages):
    central, config, ids, _signing, keys = _bundle_station(tmp_path, pages)
    first = sum(map(len, pdfs(config, ids[0]).values()))
    conn = connect(station_paths(config)["database"])
    try:
        result = export_bundle(conn, tmp_path / "usb", document_bytes=first, **keys)
        assert (result["dossiers"], result["left"]) == (1, 1)  # the second waits for the next bundle
    finally:
        conn.close()
    # A document whose bytes are not what its name says: the whole bundle is refused, nothing imported.
    pdf = next(iter(pdfs(config, ids[1]).values()))
    body = '{"x":1}'
    _header, data = seal_bundle({"items": [{"submission_id": ids[1], "body": body}],
                                 "blobs": [{"sha256": "0" * 64, "data": base64.b64encode(pdf).decode()}]},
                                station_id="K01", station_key=keys["station_key"],
                                central_bundle_key=keys["central_bundle_key"], dossiers=1)
    with pytest.raises(BundleError, match=r"blobs entry 0: blobs\[0\].data does not hash to its sha256"):
        import_bundle(central, data)
    assert central.store.count() == 0 and stored_blobs(tmp_path / "central") == set()


def test_purging_after_the_acknowledgement_drops_the_pdfs(tmp_path, pages):
    with CentralThread(tmp_path / "central", RESTORE_WINDOW=0) as central:
        config = station(tmp_path, central.url, central.central, retention_days=1.0)
        sid = submit_with_papers(config, {"giay-khai-sinh": pages[11:12]})
        worker = worker_from_config(config)
        assert worker.run(until_empty=True, max_seconds=20)["acked"] == 1
        assert [row["held"] for row in documents.of_dossier(worker.conn, sid)] == [1]
        later = datetime.now(timezone.utc) + timedelta(days=1, minutes=1)
        assert worker.purge(now=later, central_now=later) == 1
        (row,) = documents.of_dossier(worker.conn, sid)
        assert row["held"] == 0 and row["sha256"] and row["uploaded_at"]  # the name and hash stay
        assert documents.pdf_of(worker.conn, worker.payload_key, sid, row["document_id"]) is None
        assert documents.pending_bytes(worker.conn) == 0
        worker.close()


def test_bench_documents_reports_its_row_on_loopback():
    from tests.bench.documents_bench import bench_documents

    row = bench_documents(link=None)
    assert row["acked"] == 1 and row["n"] == 5 and "loopback" in row["name"]
    assert 20_000 < row["pdf_bytes_per_page"] < 200_000 and row["wire_bytes_per_page"] > row["pdf_bytes_per_page"]
