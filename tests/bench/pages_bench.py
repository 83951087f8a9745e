"""Benchmarks of a dossier's papers at the station: a page from SANE's test backend to the thumbnail the
citizen checks (scan, clean, seal and keep, thumbnail), a phone photo to a page, a photo of a sheet on a
table straightened, and the submit that wraps 5 pages in PDFs inside its transaction. Pages are made as
the world makes them (tests/support/paper.py). Also the bytes one A4 text page takes.
``python -m tests.bench.pages_bench`` runs it alone; ``make bench`` prints it with the rest."""
import statistics
import tempfile
import time
from pathlib import Path

from devices.scanner import find_scanners, scan_page
from kiosk.core import db, documents, dossiers, drafts
from kiosk.core.catalog import load_catalog
from kiosk.core.config import DEFAULTS
from kiosk.core.pages import clean_page, thumbnail
from kiosk.simulated_devices import TEST_SCANNER_CONF
from tests.support.paper import page_png, phone_photo, photo_on_a_table, text_page

KEY = bytes(32)
DOCUMENTS = DEFAULTS["documents"]
STATION = {"id": "B01", "timezone": "Asia/Ho_Chi_Minh"}


def _row(name: str, samples_ms: list[float]) -> dict:
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"name": name, "n": len(samples_ms), "p50_ms": statistics.median(samples_ms), "p95_ms": pick(0.95),
            "p99_ms": pick(0.99), "app_p95_ms": None}


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def bench_pages(n: int = 5) -> tuple[list[dict], list[dict]]:
    """(timing rows in the main table's form, bytes-per-page rows)."""
    upright = text_page()
    photo = phone_photo(upright)
    table = photo_on_a_table(upright)
    procedure = load_catalog()["dang-ky-khai-tu"]
    rows, sizes = [], []
    with tempfile.TemporaryDirectory(prefix="kiosk-bench-pages-") as tmp:
        tmp = Path(tmp)
        db.migrate(tmp / "station.sqlite3")
        conn = db.connect(tmp / "station.sqlite3")
        sane = tmp / "sane.d"
        sane.mkdir()
        (sane / "dll.conf").write_text("test\n")
        (sane / "test.conf").write_text(TEST_SCANNER_CONF)
        draft_id = drafts.create(conn, KEY, procedure.slug, procedure.version)
        scanners = find_scanners(config_dir=str(sane))
        if scanners:
            def scan_to_thumbnail():  # as kiosk/capture.py does with the station's defaults
                png = scan_page(scanners[0].device, resolution=DOCUMENTS["dpi"], config_dir=str(sane))
                page = clean_page(png, DOCUMENTS["mode"], DOCUMENTS["dpi"])
                page_id = documents.add_page(conn, KEY, draft_id, "giay-bao-tu", page, "scanner")
                thumbnail(documents.page_image(conn, KEY, draft_id, page_id)[0])
                documents.remove_page(conn, draft_id, page_id)
            rows.append(_row(f"documents: scan to thumbnail (SANE test backend, A4 {DOCUMENTS['dpi']} dpi, "
                             f"{DOCUMENTS['mode']})",
                             _timed(scan_to_thumbnail, n)))
        rows.append(_row("documents: phone photo (8.7 MP) to a clean page, gray",
                         _timed(lambda: clean_page(photo), n)))
        rows.append(_row("documents: phone photo (8.7 MP) to a clean page, bilevel",
                         _timed(lambda: clean_page(photo, mode="bilevel"), n)))
        rows.append(_row("documents: photo on a table (12 MP), sheet found and straightened",
                         _timed(lambda: clean_page(table, find_sheet=True), n)))
        page = clean_page(photo)
        rows.append(_row("documents: thumbnail of a kept page", _timed(lambda: thumbnail(page.data), n * 4)))

        def submit_five_pages():
            draft = drafts.create(conn, KEY, procedure.slug, procedure.version)
            for document_id, count in (("giay-bao-tu", 3), ("uy-quyen", 2)):
                for _ in range(count):
                    documents.add_page(conn, KEY, draft, document_id, page, "camera")
            start = time.perf_counter()
            dossiers.submit(conn, key=KEY, station=STATION, channel="kiosk", procedure=procedure,
                            answers={}, draft_id=draft)
            return (time.perf_counter() - start) * 1000
        rows.append(_row("documents: submit with 5 pages (2 PDFs made in the transaction)",
                         [submit_five_pages() for _ in range(n)]))
        conn.close()
    scan = page_png(upright)
    for label, data, mode in (("phone photo of a dense A4 text page", photo, "gray"),
                              ("phone photo of a dense A4 text page", photo, "bilevel"),
                              ("300 dpi scan of the same page", scan, "gray"),
                              ("300 dpi scan of the same page", scan, "bilevel"),
                              ("photo on a table, straightened", table, "gray"),
                              ("photo on a table, straightened", table, "bilevel")):
        kept = clean_page(data, mode=mode, find_sheet=label.startswith("photo on"))
        sizes.append({"name": f"{label}, {mode}", "bytes": kept.size_bytes, "dpi": kept.dpi,
                      "pixels": f"{kept.width}×{kept.height}"})
    return rows, sizes


def print_page_sizes(sizes: list[dict]) -> None:
    print("| page | bytes | dpi | pixels |")
    print("|---|---:|---:|---:|")
    for row in sizes:
        print(f"| {row['name']} | {row['bytes']:,} | {row['dpi']} | {row['pixels']} |")


if __name__ == "__main__":
    from tests.bench.run import print_table
    timing, page_sizes = bench_pages()
    print_table(timing)
    print()
    print_page_sizes(page_sizes)
