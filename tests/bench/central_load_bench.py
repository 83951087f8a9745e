"""``bench_central_load``: the central as a province runs it (`kiosk central serve --workers N`, gunicorn, on
PostgreSQL behind Debian's nginx with deploy/nginx-central.conf) under 2,000 simulated stations.

Each station is enrolled with its own Ed25519 key and talks to the central with the station's own client
(``sync.client.CentralClient``, one kept-alive connection each, every request signed and every answer's
signature checked). A pool of client processes shares the stations; each station runs cycles every
``poll_interval`` seconds (15 s, as ``[sync] idle_interval``), starting at a random moment of the first
one: a status pull (``changes?since=cursor``, conditional as the sync worker's: ``If-None-Match`` names the
store and cursor it knows, and an idle one is answered 304) and, in the second phase, before it and in
``submit_share`` of the cycles, one new dossier (PUT, about 600 bytes of answers). ``poll_interval=0`` runs
the cycles back to back instead (the most the central does, not a province's load).

Bounded in time: every station's first pull (connections opened, not measured), then ``seconds`` split
into two measured phases, *idle* (pulls only: nothing changed) and *mixed* (dossiers and pulls). CPU
time is read from /proc for the central's processes (gunicorn's arbiter and workers), PostgreSQL's
(every pid pg_stat_activity lists) and nginx's, at the phase boundaries: CPU per idle pull is the idle
phase's CPU over its pulls; CPU per dossier is the mixed phase's CPU, less its pulls at the idle cost,
over its dossiers. Rows as the other benchmarks'; ``python -m tests.bench.central_load_bench`` runs it
alone (``--seconds``, ``--stations``, ``--workers``...).
"""
import argparse
import hashlib
import heapq
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

PHASES = ("warm-up", "idle", "mixed")


def station_key(seed: int, index: int):
    """The simulated station's key, the same in every process that derives it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"dvc-load:{seed}:{index}".encode()).digest())


def station_id(index: int) -> str:
    return f"L{index:04d}"


def _enrol(database: str, stations: int, seed: int) -> None:
    """Enrol the stations in one transaction (`kiosk central enrol` does one each)."""
    import psycopg

    from sync.keys import public_b64

    at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    rows = [(station_id(i), public_b64(station_key(seed, i)), f"Bưu điện xã {i}", at) for i in range(stations)]
    with psycopg.connect(database) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO stations (station_id, public_key, name, enrolled_at) VALUES (%s, %s, %s, %s) "
                            "ON CONFLICT (station_id) DO UPDATE SET public_key = excluded.public_key", rows)


def _document(sid: str, number: int, rng: random.Random) -> tuple[str, bytes]:
    from kiosk.core import tracking_code
    from kiosk.core.dossiers import canonical_json
    from tests.support.harness import sample_answers

    submission_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    day = datetime.now(timezone.utc).strftime("%y%m%d")
    doc = {"submission_id": submission_id, "tracking_code": tracking_code.make(sid, day, number),
           "station_id": sid, "channel": "kiosk",
           "procedure": {"code": "1.004884", "slug": "cap-ban-sao-trich-luc-khai-sinh", "version": "2026.1"},
           "submitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "answers": sample_answers(rng), "supersedes": None}
    return submission_id, canonical_json(doc)


def _client(args) -> list[tuple]:
    """One client process: its stations in ``threads`` threads; returns (phase, kind, ms, ok, error)."""
    import threading

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from sync.client import CentralClient

    (url, central_public, indexes, seed, threads, poll_interval, submit_share, marks, conditional) = args
    central_key = Ed25519PublicKey.from_public_bytes(central_public)
    warm_end, idle_end, mixed_end = marks  # time.monotonic() values (one clock for every process)
    records: list[tuple] = []
    lock = threading.Lock()

    def phase(at: float) -> str:
        return "warm-up" if at < warm_end else "idle" if at < idle_end else "mixed"

    def run(mine: list[int], thread_no: int):
        rng = random.Random(seed * 1000003 + indexes[0] * 101 + thread_no)
        clients = {i: CentralClient(url, station_id(i), station_key(seed, i), central_key, timeout=30) for i in mine}
        cursors = {i: 0 for i in mine}
        stores: dict[int, dict] = {}  # the store each station last saw: its pulls are conditional, as the worker's
        numbers = {i: 0 for i in mine}
        out = []

        def cycle(i: int, submit: bool):
            client = clients[i]
            if submit:
                numbers[i] += 1
                submission_id, body = _document(station_id(i), numbers[i], rng)
                started = time.monotonic()
                outcome = client.put_submission(submission_id, body, hashlib.sha256(body).hexdigest())
                out.append((phase(started), "dossier", (time.monotonic() - started) * 1000, outcome.kind == "acked",
                            "" if outcome.kind == "acked" else f"{outcome.kind}: {outcome.reason[:60]}"))
            started = time.monotonic()
            try:
                doc = client.changes(cursors[i], 500, stores.get(i) if conditional else None)
                if doc is not None:  # None: 304, nothing after the cursor
                    cursors[i] = doc["cursor"]
                    stores[i] = doc["store"]
                ok, error = True, ""
            except Exception as exc:  # noqa: BLE001  (LinkError, NotGenuine: counted, the station goes on)
                ok, error = False, f"{type(exc).__name__}: {str(exc)[:60]}"
            out.append((phase(started), "pull after a dossier" if submit else "pull",
                        (time.monotonic() - started) * 1000, ok, error))

        # Warm-up: every station's first pull, back to back (its connection opened, its cursor learnt).
        for i in mine:
            if time.monotonic() >= warm_end:
                break
            cycle(i, False)
        # Then cycles every poll_interval, each station from a random moment of the first interval.
        now = max(time.monotonic(), warm_end)
        due = [(now + (rng.uniform(0, poll_interval) if poll_interval else 0), i) for i in mine]
        heapq.heapify(due)
        while due:
            at, i = heapq.heappop(due)
            if at >= mixed_end:
                break
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() >= mixed_end:
                break
            mixed = time.monotonic() >= idle_end
            cycle(i, mixed and rng.random() < submit_share)
            heapq.heappush(due, (max(at + poll_interval, time.monotonic()) if poll_interval else time.monotonic(), i))
        for client in clients.values():
            client.close()
        with lock:
            records.extend(out)

    chunks = [indexes[t::threads] for t in range(threads)]
    workers = [threading.Thread(target=run, args=(chunk, n)) for n, chunk in enumerate(chunks) if chunk]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return records


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def bench_central_load(stations: int = 2000, seconds: float = 40.0, workers: int | None = None, threads: int = 8,
                       clients: int = 4, client_threads: int = 25, poll_interval: float = 15.0,
                       submit_share: float = 0.2, warm_up: float | None = None, conditional: bool = True,
                       seed: int = 1) -> list[dict]:
    """Rows {name, n, per_s, cpu_ms, cpu_app_ms, cpu_db_ms, cpu_proxy_ms, p50_ms, p95_ms, errors, ...}: the
    idle pulls, the pulls after a dossier, and the dossiers. ``seconds`` is the measured time (two phases
    of half each), after a warm-up of at most ``warm_up`` seconds (default: a quarter of ``seconds``, at
    least 5). ``conditional``: pulls name the store and cursor they know (``If-None-Match``), as the sync
    worker's do, and an idle one is answered 304; False: plain pulls, each a signed feed page."""
    from tests.support.central_cluster import CentralWorkers, CpuMeter, fresh_database, postgres_pids
    from tests.support.postgres import throwaway_postgres
    from tests.support.nginx import Nginx, nginx_available

    from sync.keys import load_or_create_signing_key
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if not nginx_available():
        raise RuntimeError("nginx is missing: `make bench` installs Debian's nginx")
    workers = workers or max(2, os.cpu_count() or 2)
    warm_up = max(5.0, seconds / 4) if warm_up is None else warm_up
    with throwaway_postgres() as server, tempfile.TemporaryDirectory(prefix="dvc-bench-load-") as folder:
        if server is None:
            raise RuntimeError("no PostgreSQL: set DVC_TEST_POSTGRES_URL or install Debian's postgresql")
        database = fresh_database(server, "dvc_central_load")
        # The schema first, then the stations, then the workers: they start knowing every station.
        from sync.central import open_central

        open_central(Path(folder) / "central", database).store.close()
        _enrol(database, stations, seed)
        with CentralWorkers(Path(folder) / "central", database, workers=workers, threads=threads) as central, \
                Nginx(central.port) as nginx:
            public = load_or_create_signing_key(Path(folder) / "central" / "central.ed25519").public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw)
            meters = {"app": CpuMeter(central.pids), "db": CpuMeter(lambda: postgres_pids(server)),
                      "proxy": CpuMeter(nginx.pids)}
            start = time.monotonic() + 3.0  # the client processes are started by then
            marks = (start + warm_up, start + warm_up + seconds / 2, start + warm_up + seconds)
            indexes = list(range(stations))
            jobs = [(nginx.url, public, indexes[c::clients], seed, client_threads, poll_interval, submit_share, marks,
                     conditional) for c in range(clients)]
            cpu: dict[str, dict[str, float]] = {}
            with multiprocessing.get_context("spawn").Pool(clients) as pool:
                pending = pool.map_async(_client, jobs)
                for name, mark in zip(PHASES, marks):
                    time.sleep(max(0.0, mark - time.monotonic()))
                    if name == "warm-up":  # the measured phases start
                        for meter in meters.values():
                            meter.start()
                        continue
                    cpu[name] = {key: meter.stop() for key, meter in meters.items()}
                    for meter in meters.values():
                        meter.start()
                records = [r for chunk in pending.get(timeout=seconds + warm_up + 120) for r in chunk]
    return _rows(records, cpu, stations, workers, seconds, poll_interval, submit_share, conditional)


def _rows(records, cpu, stations, workers, seconds, poll_interval, submit_share, conditional=True) -> list[dict]:
    half = seconds / 2
    idle = [r for r in records if r[0] == "idle" and r[1] == "pull"]
    mixed = [r for r in records if r[0] == "mixed"]
    mixed_pulls = [r for r in mixed if r[1] != "dossier"]
    dossiers = [r for r in mixed if r[1] == "dossier"]
    warm = [r for r in records if r[0] == "warm-up"]

    def per(total: float, n: int) -> float | None:
        return round(total * 1000 / n, 3) if n else None

    idle_cpu = cpu.get("idle", {})
    per_pull = {k: (v / len(idle) if idle else 0.0) for k, v in idle_cpu.items()}
    mixed_cpu = cpu.get("mixed", {})
    dossier_cpu = {k: max(0.0, v - per_pull.get(k, 0.0) * len(mixed_pulls)) for k, v in mixed_cpu.items()}
    pace = f"every {poll_interval:g} s" if poll_interval else "back to back"
    kind = "conditional" if conditional else "plain"
    where = f"{stations} stations {pace}, {kind} pulls, {workers} central workers + PostgreSQL + nginx"

    def row(name, items, cpu_split, n_for_cpu, extra=None):
        ms = [r[2] for r in items if r[3]]
        errors = sum(1 for r in items if not r[3])
        kinds = sorted({r[4].split(":")[0] for r in items if not r[3]})
        return {"name": name, "n": len(items), "per_s": round(len(items) / half, 1),
                "cpu_ms": per(sum(cpu_split.values()), n_for_cpu),
                "cpu_app_ms": per(cpu_split.get("app", 0.0), n_for_cpu),
                "cpu_db_ms": per(cpu_split.get("db", 0.0), n_for_cpu),
                "cpu_proxy_ms": per(cpu_split.get("proxy", 0.0), n_for_cpu),
                "p50_ms": _percentile(ms, 50), "p95_ms": _percentile(ms, 95), "errors": errors,
                "error_kinds": kinds, "seconds": half, **(extra or {})}

    return [
        row(f"central load: idle pulls ({where})", idle, idle_cpu, len(idle),
            {"warm_up_pulls": len(warm), "warm_up_errors": sum(1 for r in warm if not r[3])}),
        row(f"central load: dossiers ({where}, {submit_share:.0%} of cycles submit)", dossiers, dossier_cpu,
            len(dossiers)),
        row(f"central load: pulls beside them ({where})", mixed_pulls, {}, 0),
    ]


def print_central_load_rows(rows: list[dict]) -> None:
    """The rows as a Markdown table (CPU is the central's: workers + PostgreSQL + nginx, per request)."""
    def cell(value, fmt="{:.1f}"):
        return "" if value is None else fmt.format(value) if isinstance(value, float) else str(value)

    print("| central load | n | per s | CPU ms each (app + db + proxy) | p50 ms | p95 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        split = ""
        if r["cpu_ms"] is not None:
            split = (f"{r['cpu_ms']:.2f} ({r['cpu_app_ms']:.2f} + {r['cpu_db_ms']:.2f} + "
                     f"{r['cpu_proxy_ms']:.2f})")
        print(f"| {r['name']} | {r['n']} | {cell(r['per_s'])} | {split} | {cell(r['p50_ms'])} | "
              f"{cell(r['p95_ms'])} | {r['errors']}{' ' + ','.join(r['error_kinds']) if r['error_kinds'] else ''} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.central_load_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=40.0, help="measured time, two phases of half each")
    parser.add_argument("--warm-up", type=float, default=None, help="seconds for every station's first pull")
    parser.add_argument("--workers", type=int, default=None, help="central worker processes (default: cores, at least 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per central worker")
    parser.add_argument("--clients", type=int, default=4, help="client processes sharing the stations")
    parser.add_argument("--client-threads", type=int, default=25, help="threads per client process")
    parser.add_argument("--poll-interval", type=float, default=15.0, help="seconds between a station's cycles (0: back to back)")
    parser.add_argument("--submit-share", type=float, default=0.2, help="share of the mixed phase's cycles that submit a dossier")
    parser.add_argument("--plain-pulls", action="store_true", help="pulls without If-None-Match (each a signed page)")
    args = parser.parse_args(argv)
    rows = bench_central_load(args.stations, args.seconds, args.workers, args.threads, args.clients, args.client_threads,
                              args.poll_interval, args.submit_share, args.warm_up, not args.plain_pulls)
    print_central_load_rows(rows)
    print(f"warm-up: {rows[0]['warm_up_pulls']} first pulls, {rows[0]['warm_up_errors']} errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
