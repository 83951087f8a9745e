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


def bench_wizard(clients: int = 8, rounds: int = 6, think_ms: int = 0) -> list[dict]:
    """Each client walks whole applications; ``think_ms`` is its pause before each request (0: none, the
    station saturated; a citizen really takes seconds per page)."""
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-") as tmp:
        station = LiveStation(Path(tmp), station_id="B01").start()
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


def bench_page_load(rounds: int = 5) -> list[dict]:
    """Page load in headless Chromium (Debian's): navigation start to the load event, for each page of
    an application, loaded as a whole page (the slow case; htmx navigation only swaps <main>)."""
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
        station = LiveStation(Path(tmp), station_id="B01").start()
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
                        page.locator("#main form button[type=submit]").click()
                        page.wait_for_function("url => location.href !== url", arg=url)
                    measure(page, "check answers", f"{base}/p/{proc.slug}/check")
                    measure(page, "consent", f"{base}/p/{proc.slug}/submit")
                    page.locator("#consent").check()
                    page.locator("#main form button[type=submit]").click()
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


def print_sync_table(rows: list[dict]) -> None:
    print("| sync benchmark | dossiers | dossiers/s | bytes sent per dossier |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['n']} | {row['dossiers_per_s']:.1f} | {row['bytes_per_dossier']:.0f} |")


def run_all(clients: int = 8, rounds: int = 6, think_ms: int = 0) -> int:
    from tests.bench.card_bench import bench_card_read
    from tests.bench.documents_bench import bench_documents, print_documents_rows
    from tests.bench.pages_bench import bench_pages, print_page_sizes
    from tests.bench.receipt_bench import bench_receipt
    from tests.bench.sync_bench import bench_sync

    rows = bench_wizard(clients, rounds, think_ms)
    rows += bench_page_load()
    rows += [bench_receipt(n=30, paper_mm=80), bench_receipt(n=30, paper_mm=58)]
    card_rows = [bench_card_read(n=10, access="bac"), bench_card_read(n=10, access="pace"),
                 bench_card_read(n=10, access="auto", latency_ms=80)]
    for row in card_rows:
        row["name"] = f"{row['name']} ({row['apdus']} APDUs)"
    rows += card_rows
    page_rows, page_sizes = bench_pages()
    rows += page_rows
    print(f"wizard: {clients} concurrent clients, {rounds} whole applications each, over loopback HTTP, "
          f"{think_ms} ms pause before each request; "
          "page load: navigation start to load event in headless Chromium, one browser; "
          "receipt: compose + status + send + status to the fake network printer; "
          "card: DG1 + DG13 + EF.SOD with Passive Authentication through pcscd from the simulated card, "
          "the last row with the number alone (PACE) and 80 ms per APDU, as a contactless reader takes")
    print_table(rows)
    print()
    print_sync_table(bench_sync())
    print()
    print_documents_rows([bench_documents(mode="gray"), bench_documents(mode="bilevel")])
    print()
    print_page_sizes(page_sizes)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--rounds", type=int, default=6, help="applications each client completes (default 6)")
    parser.add_argument("--think-ms", type=int, default=0,
                        help="each client's pause before a request (0: back to back, the station saturated)")
    args = parser.parse_args()
    return run_all(clients=args.clients, rounds=args.rounds, think_ms=args.think_ms)

