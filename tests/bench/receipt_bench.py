"""Benchmark: compose one receipt and print it to the fake network printer, as the web app does after a
submission (status check, render, send, status check), through a real TCP socket on 127.0.0.1."""
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kiosk.receipt_document import Receipt, draw_receipt
from kiosk.receipts import print_receipt
from tests.support.fake_printer import FakeNetworkPrinter

# Made-up sample data (no real person, place, account or telephone line).
SAMPLE_PAYMENT = {"bank_bin": "970436", "account": "0071000123456", "account_name": "UBND PHUONG MAU",
                  "bank_name": "Vietcombank"}
DOC_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def sample_receipt(**changes) -> Receipt:
    """A receipt with made-up data, as a kiosk prints it (benchmarks, tests, the docs' pictures);
    ``changes`` override."""
    fields = dict(
        station_name="Bưu điện Trung tâm Sài Gòn – Quầy số 3",
        agency="UBND Phường Sài Gòn",
        procedure_name="Đăng ký khai sinh",
        procedure_code="1.001193",
        applicant_masked="Nguyễn V** A*",
        id_masked="********2345",
        submitted_at=datetime(2026, 11, 27, 16, 5, tzinfo=timezone(timedelta(hours=7))),
        processing_days=3,
        fee_vnd=50000,
        tracking_code="K01-261127-0007-X",
        tracking_url="http://127.0.0.1:8080/track/K01-261127-0007-X",
        competent_agency="Ủy ban nhân dân cấp xã nơi cư trú của người cha hoặc người mẹ",
        documents_declared=True,
        delivery="in_person",
        result_address="Quầy số 3, số 10 đường Mẫu Thử, phường Sài Gòn, TP. Hồ Chí Minh",
        hotline="1900 0000",
    )
    fields.update(changes)
    return Receipt(**fields)


def counter_sample_receipt(**changes) -> Receipt:
    """The same dossier as a counter prints it, reprinted after sync: the documents checked, the
    receiving officer, the fee taken in cash, the result by post, and the central's mã hồ sơ."""
    fields = dict(
        station_name="Bưu điện Trung tâm Sài Gòn – Quầy số 3",
        documents=("Tờ khai đăng ký khai sinh theo mẫu", "Giấy chứng sinh (bản chính)",
                   "Giấy chứng nhận kết hôn của cha mẹ (bản sao)"),
        documents_declared=False,
        delivery="post",
        fee_paid_vnd=50000,
        officer="Trần Thị Mẫu",
        central_code="000.00.12.H29-261127-0007",
        tracking_code="BD01-261127-0007-X",
        tracking_url="http://127.0.0.1:8080/track/BD01-261127-0007-X",
    )
    fields.update(changes)
    return sample_receipt(**fields)


def doc_images(folder: Path = DOC_IMAGES) -> list[Path]:
    """Draw the docs' pictures of the receipt (docs/printer.md): the kiosk's and the counter's samples at
    58 and 80 mm, with the station's payment account. ``python -m tests.bench.receipt_bench docs``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, receipt in (("kiosk", sample_receipt()), ("counter", counter_sample_receipt())):
        for paper_mm, width in ((58, 384), (80, 576)):
            path = folder / f"receipt-{name}-{paper_mm}mm.png"
            draw_receipt(receipt, width, SAMPLE_PAYMENT).image.save(path, format="PNG", optimize=True)
            written.append(path)
    return written


def _percentile(sorted_ms: list[float], q: float) -> float:
    if len(sorted_ms) == 1:
        return sorted_ms[0]
    cuts = statistics.quantiles(sorted_ms, n=100, method="inclusive")
    return cuts[round(q) - 1]


def bench_receipt(n: int = 50, paper_mm: int = 80, printer_port: int = 0) -> dict:
    """Time ``n`` receipts (compose + print with both status checks); milliseconds per receipt.
    ``printer_port``: the fake printer's port (0: a free one)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    receipt = sample_receipt()
    with FakeNetworkPrinter(port=printer_port) as fake:
        config = {**fake.config(paper_mm=paper_mm), "payment": SAMPLE_PAYMENT}
        print_receipt(config, receipt)  # warm up: fonts, printer profile
        times = []
        for _ in range(n):
            start = time.perf_counter()
            outcome = print_receipt(config, receipt)
            times.append((time.perf_counter() - start) * 1000)
            if not outcome.ok:
                raise RuntimeError(f"the fake printer did not print: {outcome.status.code}")
    times.sort()
    return {
        "name": f"receipt compose+print, fake network printer {paper_mm} mm",
        "p50_ms": round(_percentile(times, 50), 2),
        "p95_ms": round(_percentile(times, 95), 2),
        "p99_ms": round(_percentile(times, 99), 2),
        "n": n,
    }


if __name__ == "__main__":
    if sys.argv[1:] == ["docs"]:
        for written in doc_images():
            print(written)
    else:
        print(bench_receipt())
