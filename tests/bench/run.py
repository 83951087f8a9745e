"""`make bench` (`python -m tests.bench`): response times of a real station under concurrent citizens, printed as a table.

A station is started as its own process (waitress, the same as `kiosk serve`) on a temporary database;
each client is its own process walking whole applications over HTTP. Two numbers per step: what the
client saw (request to last byte, on loopback) and what the app spent (its Server-Timing header).
"""
import argparse
import multiprocessing
import platform
import random
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kiosk.core.catalog import load_catalog
from tests.support.http_citizen import HttpCitizen
from tests.support.live_station import LiveStation

STEPS = ("start page", "overview", "start", "question (GET)", "question (POST)", "check answers", "consent",
         "submit", "confirmation", "end")


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _client(args):
    port, rounds, seed, think_ms = args
    procs = list(load_catalog().values())
    rng = random.Random(seed)
    citizen = HttpCitizen("127.0.0.1", port, think_s=think_ms / 1000)
    try:
        for _ in range(rounds):
            citizen.apply(rng.choice(procs))
    finally:
        citizen.close()
    return citizen.timings


def bench_wizard(clients: int = 8, rounds: int = 6, think_ms: int = 0, port: int = 0) -> list[dict]:
    """Each client walks whole applications; ``think_ms`` is its pause before each request (0: none, the
    station saturated; a citizen really takes seconds per page). ``port``: the station's (0: a free one)."""
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        station = LiveStation(Path(tmp), station_id="B01", port=port).start()
        port = station.port
        try:
            _client((port, 1, -1, 0))  # warm up: templates compiled, database created
            with multiprocessing.get_context("fork").Pool(clients) as pool:
                results = pool.map(_client, [(port, rounds, seed, think_ms) for seed in range(clients)])
        finally:
            station.stop()
    rows = []
    for step in STEPS:
        client_ms = [c for timings in results for s, c, _ in timings if s == step]
        app_ms = [a for timings in results for s, _, a in timings if s == step and a is not None]
        if client_ms:
            rows.append({"name": f"wizard{' (think ' + str(think_ms) + ' ms)' if think_ms else ''}: {step}",
                         "n": len(client_ms),
                         "p50_ms": percentile(client_ms, 50), "p95_ms": percentile(client_ms, 95),
                         "p99_ms": percentile(client_ms, 99),
                         "app_p95_ms": percentile(app_ms, 95) if app_ms else None})
    return rows


def bench_page_load(rounds: int = 5, port: int = 0) -> list[dict]:
    """Page load in headless Chromium (Debian's): navigation start to the load event, for each page of
    an application, loaded as a whole page (the slow case; htmx navigation only swaps <main>). ``port``:
    the station's (0: a free one)."""
    from playwright.sync_api import sync_playwright

    from tests.support.samples import fill_page_in_browser

    procs = list(load_catalog().values())
    loads: dict[str, list[float]] = {}

    def measure(page, step: str, url: str) -> None:
        page.goto(url)
        ms = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                           " return n.loadEventEnd - n.startTime; }")
        loads.setdefault(step, []).append(ms)

    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        station = LiveStation(Path(tmp), station_id="B01", port=port).start()
        base = station.url
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run"])
                for round_ in range(rounds + 1):  # the first round warms caches and is not counted
                    context = browser.new_context(viewport={"width": 1080, "height": 1920})
                    page = context.new_page()
                    proc = procs[round_ % len(procs)]
                    measure(page, "start page", base + "/")
                    measure(page, "overview", f"{base}/p/{proc.slug}")
                    page.locator("form[action$='/start'] button").click()
                    page.wait_for_url(lambda url: "/q/" in url)
                    while "/q/" in page.url:
                        url = page.url
                        measure(page, "question", url)
                        fill_page_in_browser(page, proc)
                        page.locator("#main").get_by_role("button", name="Tiếp tục").click()
                        page.wait_for_function("url => location.href !== url", arg=url)
                    measure(page, "check answers", f"{base}/p/{proc.slug}/check")
                    measure(page, "consent", f"{base}/p/{proc.slug}/submit")
                    page.locator("#consent").check()
                    page.locator("#main").get_by_role("button", name="Nộp hồ sơ").click()
                    page.wait_for_url(lambda url: url.endswith("/done"))
                    measure(page, "confirmation", f"{base}/done")
                    context.close()
                    if round_ == 0:
                        loads.clear()
                browser.close()
        finally:
            station.stop()
    return [{"name": f"page load (Chromium): {step}", "n": len(ms), "p50_ms": percentile(ms, 50),
             "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99)} for step, ms in loads.items()]


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {multiprocessing.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _cell(value) -> str:
    return "" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))


def print_table(rows: list[dict]) -> None:
    print(f"machine: {_machine()}")
    print()
    print("| benchmark | n | p50 ms | p95 ms | p99 ms | app p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['n']} | {_cell(row.get('p50_ms'))} | {_cell(row.get('p95_ms'))} | "
              f"{_cell(row.get('p99_ms'))} | {_cell(row.get('app_p95_ms'))} |")



# -- the bench groups -----------------------------------------------------------------------------------
@dataclass
class Ports:
    """Where a bench's servers listen. 0 (the default): a free port each time. ``--port-base N`` fixes
    them, to watch with perf, tcpdump or a firewall rule: the station N, the central N+1, the shaping proxy
    of the weak link N+2, the fake network printer N+3. Groups run one after another and reuse them."""
    station: int = 0
    central: int = 0
    proxy: int = 0
    printer: int = 0

    @classmethod
    def from_base(cls, base: int) -> "Ports":
        return cls(station=base, central=base + 1, proxy=base + 2, printer=base + 3)

    def __str__(self) -> str:
        return (f"station {self.station}, central {self.central}, weak-link proxy {self.proxy}, "
                f"printer {self.printer}")


@dataclass
class Options:
    clients: int = 8
    rounds: int = 6
    think_ms: int = 0
    min_seconds: float = 10.0  # rate rows: each run sends at least this long
    repeat: int = 3            # rate rows: runs, reported as the median with min–max
    scale_max: int = 100_000   # scale: dossiers loaded for the last checkpoint (the first is 10k)
    ports: Ports = field(default_factory=Ports)


@dataclass
class Section:
    """What a group gives back: rows of the main table (n, p50/p95/p99 ms, app p95 ms), a clause for the
    line above it saying how they were measured, and tables of its own (callables that print one), printed
    after the main table."""
    rows: list[dict] = field(default_factory=list)
    about: str = ""
    tables: list[Callable[[], None]] = field(default_factory=list)


def _wizard(o: Options) -> Section:
    return Section(bench_wizard(o.clients, o.rounds, o.think_ms, port=o.ports.station),
                   f"wizard: {o.clients} concurrent clients, {o.rounds} whole applications each, over loopback "
                   f"HTTP, {o.think_ms} ms pause before each request")


def _page_load(o: Options) -> Section:
    return Section(bench_page_load(port=o.ports.station),
                   "page load: navigation start to load event in headless Chromium, one browser")


def _receipt(o: Options) -> Section:
    from tests.bench.receipt_bench import bench_receipt

    return Section([bench_receipt(n=30, paper_mm=80, printer_port=o.ports.printer),
                    bench_receipt(n=30, paper_mm=58, printer_port=o.ports.printer)],
                   "receipt: compose + status + send + status to the fake network printer")


def _card(o: Options) -> Section:
    from tests.bench.card_bench import bench_card_read

    rows = [bench_card_read(n=10, access="bac"), bench_card_read(n=10, access="pace"),
            bench_card_read(n=10, access="auto", latency_ms=80)]
    for row in rows:
        row["name"] = f"{row['name']} ({row['apdus']} APDUs)"
    return Section(rows, "card: DG1 + DG13 + EF.SOD with Passive Authentication through pcscd from the "
                         "simulated card, the last row with the number alone (PACE) and 80 ms per APDU, as a "
                         "contactless reader takes")


def _pages(o: Options) -> Section:
    from tests.bench.pages_bench import bench_pages, print_page_sizes

    rows, sizes = bench_pages()
    return Section(rows, "documents: a page's way at the station (scan, photo, thumbnail, submit)",
                   [lambda: print_page_sizes(sizes)])


def _sync(o: Options) -> Section:
    from tests.bench.sync_bench import bench_sync, print_sync_rows

    rows = bench_sync(min_seconds=o.min_seconds, repeat=o.repeat, central_port=o.ports.central,
                      proxy_port=o.ports.proxy)

    def table() -> None:
        print(f"sync: each run sends for at least {o.min_seconds:g} s (filling the outbox not counted), "
              f"{o.repeat} runs a row on a fresh central and station; dossiers/s is the runs' median")
        print_sync_rows(rows)
    return Section(tables=[table])


def _documents(o: Options) -> Section:
    from tests.bench.documents_bench import bench_documents, print_documents_rows

    rows = [bench_documents(mode=mode, central_port=o.ports.central, proxy_port=o.ports.proxy)
            for mode in ("gray", "bilevel")]
    return Section(tables=[lambda: print_documents_rows(rows)])


def _central_load(o: Options) -> Section:
    from tests.bench.central_load_bench import bench_central_load, print_central_load_rows

    rows = bench_central_load(stations=2000, seconds=40)

    def table() -> None:
        print("central load: 2,000 enrolled stations (4 client processes) against `kiosk central serve --workers N` "
              "on PostgreSQL behind nginx; each station pulls its status every 15 s, and in the second half 20% "
              "of its cycles submit a dossier first; CPU is the central's (workers + PostgreSQL + nginx) from /proc")
        print_central_load_rows(rows)
    return Section(tables=[table])


def _idle_pull(o: Options) -> Section:
    from tests.bench.idle_pull_bench import bench_idle_pull, print_idle_pull_rows

    rows = bench_idle_pull(n=5000, stations=200)

    def table() -> None:
        print("idle pull: a station's status pull with nothing new, plain (a signed empty feed from the database) "
              "and conditional (304 from the fast path, sync/feed.py), 200 stations round robin; CPU is the "
              "central's: time.process_time in-process, /proc for the central's own process over HTTP")
        print_idle_pull_rows(rows)
    return Section(tables=[table])


def _scale(o: Options) -> Section:
    from tests.bench.scale_bench import bench_scale, print_scale_rows

    result = bench_scale(scale_max=o.scale_max)

    def table() -> None:
        print(f"scale: one counter station loaded through dossiers.submit to {result['checkpoints'][0]:,} then "
              f"{result['checkpoints'][-1]:,} dossiers (the mix of tests/bench/scale_bench.py); median ms of 20 "
              "requests through the Flask test client (pages) or 20 calls (the worker's queries)")
        print_scale_rows(result)
    return Section(tables=[table])


# The bench groups, in the order they run: name -> (what it measures, function). To add one, write a
# function of Options returning a Section and add its line here; --only and --list follow.
GROUPS: dict[str, tuple[str, Callable[[Options], Section]]] = {
    "wizard": ("whole applications by concurrent HTTP clients against a station process", _wizard),
    "page-load": ("each page of an application loaded in headless Chromium", _page_load),
    "receipt": ("a receipt composed and printed to the fake network printer, 80 and 58 mm", _receipt),
    "card": ("a chip read through pcscd and vpcd from the simulated card (needs pcscd)", _card),
    "pages": ("scanned and photographed pages at the station, and the bytes a page takes", _pages),
    "sync": ("dossiers/s to the central, loopback and the weak link, batches and PUTs", _sync),
    "documents": ("one dossier with 5 scanned pages over the weak link, gray and bilevel (~3 min)",
                  _documents),
    "idle-pull": ("the central's CPU per idle status pull, plain and conditional, in-process and over HTTP",
                  _idle_pull),
    "scale": ("each staff and citizen page and the sync worker's queries at 10k and 100k dossiers (--scale-max), "
              "loaded through the submit path (~2 min)", _scale),
    "central-load": ("2,000 stations' pulls and dossiers against the central's worker processes on PostgreSQL "
                     "behind nginx (~1 min)", _central_load),
}


def run_all(options: Options | None = None, only: list[str] | None = None) -> int:
    """Run the groups named in ``only`` (all by default), in GROUPS' order, and print their tables."""
    options = options or Options()
    names = [name for name in GROUPS if only is None or name in only]
    sections = [GROUPS[name][1](options) for name in names]
    rows = [row for section in sections for row in section.rows]
    abouts = [section.about for section in sections if section.about]
    if options.ports != Ports():
        print(f"fixed ports: {options.ports}")
    if abouts:
        print("; ".join(abouts))
    if rows:
        print_table(rows)
    else:
        print(f"machine: {_machine()}")
    for section in sections:
        for table in section.tables:
            print()
            table()
    return 0


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this group (repeat it, or a comma list); --list names them")
    parser.add_argument("--list", action="store_true", help="print the groups' names and what each measures")
    parser.add_argument("--port-base", type=int, metavar="N",
                        help="fixed ports: the station on N, the central N+1, the weak-link proxy N+2, the fake "
                             "printer N+3 (default: a free port each time)")
    parser.add_argument("--clients", type=int, default=8, help="wizard: concurrent clients (default 8)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="wizard: applications each client completes (default 6)")
    parser.add_argument("--think-ms", type=int, default=0,
                        help="wizard: each client's pause before a request (0: back to back, the station saturated)")
    parser.add_argument("--min-seconds", type=float, default=10.0,
                        help="sync: each run sends for at least this long (default 10)")
    parser.add_argument("--scale-max", type=int, default=100_000,
                        help="scale: dossiers loaded for the last checkpoint (default 100000; the first is 10000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="sync: runs of each row, reported as the median with min–max (default 3)")
    args = parser.parse_args(argv)
    if args.list:
        width = max(map(len, GROUPS))
        for name, (what, _) in GROUPS.items():
            print(f"{name:<{width}}  {what}")
        return 0
    only = _names(args.only)
    unknown = [name for name in only or () if name not in GROUPS]
    if unknown:
        parser.error(f"unknown bench group {', '.join(map(repr, unknown))}; valid: {', '.join(GROUPS)}")
    if args.port_base is not None and not 1 <= args.port_base <= 65535 - 3:
        parser.error("--port-base must be between 1 and 65532 (it uses N to N+3)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.scale_max < 1000:
        parser.error("--scale-max must be at least 1000")
    if args.min_seconds < 0:
        parser.error("--min-seconds cannot be negative")
    ports = Ports.from_base(args.port_base) if args.port_base is not None else Ports()
    options = Options(clients=args.clients, rounds=args.rounds, think_ms=args.think_ms,
                      min_seconds=args.min_seconds, repeat=args.repeat, ports=ports, scale_max=args.scale_max)
    return run_all(options, only)
