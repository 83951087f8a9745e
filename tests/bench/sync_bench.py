"""``bench_sync``: how fast queued dossiers reach the central, on loopback and on a simulated weak link
(64 kbit/s, 600 ms round trip, 5% loss, shaped in Python by the test proxy). ``make bench`` prints it."""
import tempfile
import time
from pathlib import Path

from tests.support.faulty_proxy import FaultyProxy, Link
from tests.support.harness import CentralThread, enrol, make_station, submit_many
from sync.worker import worker_from_config

WEAK_LINK = Link(bandwidth_bps=64_000, rtt_s=0.6, loss=0.05)


def _run(folder: Path, name: str, n: int, batch_http: bool, link: Link | None, seed: int) -> dict:
    with CentralThread(folder / "central") as central:
        proxy = FaultyProxy(central.port, link=link, seed=seed).start() if link else None
        try:
            config = make_station(folder / "station", proxy.url if proxy else central.url,
                                  sync={"batch_http": batch_http, "base_delay": 0.2, "max_delay": 2.0,
                                        "idle_interval": 0.05, "timeout": 60})
            enrol(central.central, config)
            submit_many(config, n, seed=seed)
            worker = worker_from_config(config)
            started = time.perf_counter()
            totals = worker.run(until_empty=True, max_seconds=120)
            elapsed = time.perf_counter() - started
            wire = (proxy.bytes_up + proxy.bytes_down) if proxy else (worker.client.bytes_sent +
                                                                       worker.client.bytes_received)
            sent = totals.get("acked", 0)
            worker.close()
        finally:
            if proxy:
                proxy.stop()
    return {"name": name, "dossiers_per_s": round(sent / elapsed, 2), "bytes_per_dossier": round(wire / max(sent, 1)),
            "n": n, "sent": sent, "seconds": round(elapsed, 2)}


def bench_sync(n_loopback: int = 300, n_weak_batch: int = 100, n_weak_put: int = 8, seed: int = 1) -> list[dict]:
    """Rows {name, dossiers_per_s, bytes_per_dossier, n, sent, seconds}; about 30 s on two cores."""
    weak = "weak link 64 kbit/s, 600 ms RTT, 5% loss"
    plan = [("sync loopback, batches", n_loopback, True, None),
            ("sync loopback, one PUT each", n_loopback, False, None),
            (f"sync {weak}, batches", n_weak_batch, True, WEAK_LINK),
            (f"sync {weak}, one PUT each", n_weak_put, False, WEAK_LINK)]
    rows = []
    for index, (name, n, batch_http, link) in enumerate(plan):
        with tempfile.TemporaryDirectory(prefix="dvc-bench-") as folder:
            rows.append(_run(Path(folder), name, n, batch_http, link, seed + index))
    return rows


if __name__ == "__main__":
    for row in bench_sync():
        print(f"{row['name']:<60} {row['dossiers_per_s']:>8} dossiers/s {row['bytes_per_dossier']:>6} B/dossier "
              f"n={row['n']} ({row['seconds']} s)")
