"""``bench_sync``: how fast queued dossiers reach the central, on loopback and on a simulated weak link
(64 kbit/s, 600 ms round trip, 5% loss, shaped in Python by the test proxy). ``make bench`` prints it;
``python -m tests.bench --only sync`` runs it alone.

Each row is measured by time, not by count: the worker sends until it has been busy at least
``min_seconds`` (10 by default), then the dossiers it got acknowledged are divided by the time it took.
The outbox is filled in chunks sized from the rate measured so far and drained chunk by chunk; filling it
is not timed. Every row is run ``repeat`` times (3 by default), each on a fresh central and station, and
reported as the median with the smallest and largest run beside it."""
import math
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.faulty_proxy import FaultyProxy, Link
from tests.support.harness import CentralThread, enrol, make_station, submit_many
from sync.worker import worker_from_config

WEAK_LINK = Link(bandwidth_bps=64_000, rtt_s=0.6, loss=0.05)
WEAK = "weak link 64 kbit/s, 600 ms RTT, 5% loss"
# key -> (row name, batch_http, link)
PLAN = {
    "loopback-batch": ("sync loopback, batches", True, None),
    "loopback-put": ("sync loopback, one PUT each", False, None),
    "weak-batch": (f"sync {WEAK}, batches", True, WEAK_LINK),
    "weak-put": (f"sync {WEAK}, one PUT each", False, WEAK_LINK),
}
HEADROOM = 1.25  # a chunk is sized for this much more than the time left, so one more chunk is rarely needed


def _run(folder: Path, name: str, first: int, batch_http: bool, link: Link | None, seed: int,
         min_seconds: float, central_port: int = 0, proxy_port: int = 0) -> dict:
    """One run: chunks of dossiers, each drained by the worker, until it has been busy ``min_seconds``
    (with 0: the first chunk alone, ``first`` dossiers)."""
    with CentralThread(folder / "central", port=central_port) as central:
        proxy = FaultyProxy(central.port, link=link, seed=seed, port=proxy_port).start() if link else None
        try:
            config = make_station(folder / "station", proxy.url if proxy else central.url,
                                  sync={"batch_http": batch_http, "base_delay": 0.2, "max_delay": 2.0,
                                        "idle_interval": 0.05, "timeout": 60})
            enrol(central.central, config)
            worker = worker_from_config(config)
            submitted = acked = chunks = 0
            busy = 0.0
            chunk = first
            while True:
                submit_many(config, chunk, seed=seed * 1_000_003 + submitted)  # not timed
                submitted += chunk
                chunks += 1
                started = time.perf_counter()
                totals = worker.run(until_empty=True, max_seconds=120 + 2 * min_seconds)
                busy += time.perf_counter() - started
                got = totals.get("acked", 0)
                acked += got
                if busy >= min_seconds or got == 0 or worker.pending():
                    break  # long enough, or stuck: report what there is
                left = min_seconds - busy
                chunk = max(1, min(100_000, math.ceil(acked / busy * left * HEADROOM)))
            wire = (proxy.bytes_up + proxy.bytes_down) if proxy else (worker.client.bytes_sent +
                                                                       worker.client.bytes_received)
            worker.close()
        finally:
            if proxy:
                proxy.stop()
    return {"name": name, "dossiers_per_s": round(acked / busy, 2), "bytes_per_dossier": round(wire / max(acked, 1)),
            "n": submitted, "sent": acked, "seconds": round(busy, 2), "chunks": chunks,
            "central_port": int(central.port), "proxy_port": proxy.port if proxy else None}


def _summary(name: str, runs: list[dict]) -> dict:
    rates = [run["dossiers_per_s"] for run in runs]
    return {"name": name, "dossiers_per_s": round(statistics.median(rates), 2),
            "min_per_s": min(rates), "max_per_s": max(rates),
            "bytes_per_dossier": round(statistics.median(run["bytes_per_dossier"] for run in runs)),
            "n": sum(run["n"] for run in runs), "sent": sum(run["sent"] for run in runs),
            "seconds": round(sum(run["seconds"] for run in runs), 2),
            "seconds_per_run": round(statistics.median(run["seconds"] for run in runs), 2),
            "dossiers_per_run": round(statistics.median(run["n"] for run in runs)),
            "repeat": len(runs), "runs": runs}


def bench_sync(n_loopback: int = 300, n_weak_batch: int = 20, n_weak_put: int = 2, seed: int = 1,
               min_seconds: float = 10.0, repeat: int = 3, rows: tuple[str, ...] | None = None,
               central_port: int = 0, proxy_port: int = 0) -> list[dict]:
    """Rows {name, dossiers_per_s (the median), min_per_s, max_per_s, bytes_per_dossier (the median), n
    (dossiers, all runs), sent (acknowledged, all runs), seconds (all runs), seconds_per_run,
    dossiers_per_run, repeat, runs (each run's own row)}.

    ``n_*`` are the first chunk of each run (the rate is measured on it to size the next); with
    ``min_seconds=0`` each run is that one chunk alone. ``rows`` picks rows by key (``PLAN``: loopback-batch,
    loopback-put, weak-batch, weak-put; all by default). ``central_port``/``proxy_port``: fixed ports for
    the central and the shaping proxy (0: a free one). About 4 x ``repeat`` x ``min_seconds``, plus filling
    the outboxes (0.4 ms a dossier)."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    unknown = set(rows or ()) - set(PLAN)
    if unknown:
        raise ValueError(f"unknown sync rows {sorted(unknown)}; valid: {', '.join(PLAN)}")
    first = {"loopback-batch": n_loopback, "loopback-put": n_loopback, "weak-batch": n_weak_batch,
             "weak-put": n_weak_put}
    out = []
    for index, (key, (name, batch_http, link)) in enumerate(PLAN.items()):
        if rows is not None and key not in rows:
            continue
        runs = []
        for attempt in range(repeat):
            with tempfile.TemporaryDirectory(prefix="dvc-bench-") as folder:
                runs.append(_run(Path(folder), name, first[key], batch_http, link, seed + index + 100 * attempt,
                                 min_seconds, central_port, proxy_port))
        out.append(_summary(name, runs))
    return out


def print_sync_rows(rows: list[dict]) -> None:
    print("| sync benchmark | runs | seconds per run | dossiers per run | dossiers/s, median | min–max | "
          "bytes sent per dossier |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['repeat']} | {row['seconds_per_run']:.1f} | {row['dossiers_per_run']} | "
              f"{row['dossiers_per_s']:.1f} | {row['min_per_s']:.1f}–{row['max_per_s']:.1f} | "
              f"{row['bytes_per_dossier']:.0f} |")


if __name__ == "__main__":
    print_sync_rows(bench_sync())
