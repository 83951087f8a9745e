"""``bench_documents``: how long one dossier with five scanned pages (a document of three pages and one of
two, real-world-like pages from tests/support/paper.py) takes to reach the central over the weak link
(64 kbit/s, 600 ms round trip, 5% loss, shaped in Python by the test proxy): documents uploaded as resumable
blobs, then the dossier. ``make bench`` prints it; ``python -m tests.bench.documents_bench`` runs it alone."""
import tempfile
import time
from pathlib import Path

from sync.worker import worker_from_config
from tests.bench.sync_bench import WEAK_LINK
from tests.support.faulty_proxy import FaultyProxy, Link
from tests.support.harness import CentralThread, enrol, make_station
from tests.support.paper_dossiers import distinct_page, submit_with_papers

TARGET_S = 120.0  # a dossier with its papers within two minutes on the weak link


def bench_documents(link: Link | None = WEAK_LINK, seed: int = 1, chunk_bytes: int = 64 * 1024,
                    mode: str = "gray", central_port: int = 0, proxy_port: int = 0) -> dict:
    """One row: {name, n (pages), seconds, pdf_bytes_per_page, wire_bytes_per_page, requests, acked}; ``mode``
    is the station's ``[documents] mode`` the pages are cleaned in (gray, the default, or bilevel);
    ``central_port``/``proxy_port``: fixed ports for the central and the shaping proxy (0: a free one)."""
    pages = [distinct_page(1000 + n, mode) for n in range(5)]
    with tempfile.TemporaryDirectory(prefix="dvc-bench-") as tmp:
        folder = Path(tmp)
        with CentralThread(folder / "central", port=central_port) as central:
            proxy = FaultyProxy(central.port, link=link, seed=seed, port=proxy_port).start()
            try:
                config = make_station(folder / "station", proxy.url,
                                      sync={"base_delay": 0.2, "max_delay": 2.0, "idle_interval": 0.05,
                                            "timeout": 60, "blob_chunk_bytes": chunk_bytes})
                enrol(central.central, config)
                sid = submit_with_papers(config, {"giay-khai-sinh": pages[:3], "so-ho-khau": pages[3:]})
                worker = worker_from_config(config)
                pdf_bytes = sum(row["size_bytes"] for row in worker.conn.execute(
                    "SELECT size_bytes FROM dossier_documents WHERE submission_id = ?", (sid,)))
                started = time.perf_counter()
                totals = worker.run(until_empty=True, max_seconds=600)
                elapsed = time.perf_counter() - started
                worker.close()
            finally:
                proxy.stop()
    where = "loopback" if link is None else (f"{link.bandwidth_bps / 1000:g} kbit/s, {link.rtt_s * 1000:g} ms RTT, "
                                             f"{link.loss:.0%} loss")
    return {"name": f"one dossier with 5 scanned pages (3 + 2, {mode}), {where}", "n": 5, "seconds": round(elapsed, 1),
            "pdf_bytes_per_page": round(pdf_bytes / 5),
            "wire_bytes_per_page": round((proxy.bytes_up + proxy.bytes_down) / 5),
            "requests": sum(proxy.faults.values()), "acked": totals.get("acked", 0), "target_s": TARGET_S}


def print_documents_rows(rows: list[dict]) -> None:
    print("| documents benchmark | pages | seconds | PDF bytes per page | bytes on the wire per page | requests |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} (target < {row['target_s']:.0f} s) | {row['n']} | {row['seconds']:.1f} | "
              f"{row['pdf_bytes_per_page']} | {row['wire_bytes_per_page']} | {row['requests']} |")


if __name__ == "__main__":
    import sys

    print_documents_rows([bench_documents(mode=mode) for mode in (sys.argv[1:] or ["gray", "bilevel"])])
