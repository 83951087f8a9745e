"""Printing that holds up (issue 14): a slow printer that prints everything is a success, a job cut off on
its way is followed by a reset, a feed and a cut before the next one, and a reprint POSTed twice with the
same key prints once and is counted once. The printer is the FAKE one of tests/support/fake_printer.py,
slowed down or made to drop the connection."""
import json
import re
import sqlite3
import time

from devices.printer import PrinterSettings, Status, job_budget_s
from kiosk.app import create_app
from kiosk.core.db import connect, write_transaction
from kiosk.receipts import print_receipt, record_request
from tests.bench.receipt_bench import sample_receipt
from tests.support.fake_printer import FakeNetworkPrinter

from .conftest import csrf_token
from .escpos_decoder import decode, names, printed_image
from .test_agent import _add, _counter_submit, _login

SLUG = "dang-ky-khai-tu"


def _rows(app, sql, *args):
    with sqlite3.connect(app.config["DATABASE"]) as conn:
        return conn.execute(sql, args).fetchall()


def _counter(tmp_path, **printer_config):
    """A counter station (with the fake printer's settings, if given) and a staff member logged in."""
    app = create_app({"station": {"kind": "counter", "id": "BD01"}, "paths": {"data": str(tmp_path / "var")},
                      **printer_config})
    _add(app, "minh")
    client = app.test_client()
    _login(client, "minh")
    return app, client


def _submit_at_counter(app, client, catalog) -> str:
    code = _counter_submit(client, catalog[SLUG])  # the staff's finish page, as tests/test_agent.py fills it
    app.extensions["receipts"].wait()
    return code


def _reprint_form(client, code) -> dict:
    page = client.get(f"/agent/d/{code}")
    key = re.search(r'name="reprint_key" value="([^"]+)"', page.text)
    assert key, "the reprint form has no key"
    return {"csrf_token": csrf_token(page.text), "reprint_key": key.group(1)}


def _after_status_queries(commands) -> list[str]:
    """The command names of one connection's job, the status queries before it left out."""
    sequence = names(commands)
    start = next(i for i, name in enumerate(sequence) if name != "status_query")
    return sequence[start:]


# -- the time a job may take ---------------------------------------------------------------------------
def test_a_job_is_given_the_time_its_bytes_need_within_the_cap():
    settings = PrinterSettings(connection="network", host="h", timeout_s=1.0, job_timeout_s=20)
    assert job_budget_s(settings, 0) == 3.0  # the floor: connect, the status before, the status after
    assert job_budget_s(settings, 40_960) == 3.0 + 10.0  # 40 kB at the slowest rate, 4 kB/s
    assert job_budget_s(settings, 400_000) == 20  # capped by printer.job_timeout_s
    serial = PrinterSettings(connection="serial", serial_device="/dev/ttyS0", serial_baudrate=9600,
                             timeout_s=1.0, job_timeout_s=600)
    assert job_budget_s(serial, 9_600) == 3.0 + 10.0  # a 9600-baud line carries 960 bytes a second


# -- a slow printer -------------------------------------------------------------------------------------
def test_a_slow_printer_that_prints_everything_is_a_success():
    # 10 kB/s: the job waits in the sockets' buffers, and the printer answers the status query after the
    # job only once it has printed it, seconds after the last byte was written (timeout_s is 1 s).
    receipt = sample_receipt(fee_vnd=0)
    with FakeNetworkPrinter(rate_bps=10_000) as fake:
        start = time.monotonic()
        outcome = print_receipt(fake.config(paper_mm=58, timeout_s=1.0), receipt)
        elapsed = time.monotonic() - start
        data, jobs, connections = fake.data, fake.jobs, fake.connections
    assert outcome.ok and outcome.sent and not outcome.interrupted and outcome.status is Status.OK
    assert elapsed > len(data) / 10_000 * 0.8 > 3 * 1.0  # it did take its time, far beyond one timeout
    commands = decode(data)
    sequence = names(commands)
    assert jobs == 1 and connections == 1
    assert sequence.count("cut") == 1 and sequence.count("init") == 1  # exactly one job, whole
    assert sequence[-1] == "status_query" and "cut" in sequence[-4:]  # asked after the cut, and answered
    assert printed_image(commands).width == 384


# -- a job cut off on its way ---------------------------------------------------------------------------
def test_a_dropped_job_is_followed_by_reset_feed_and_cut(tmp_path, catalog):
    with FakeNetworkPrinter(drop_after_bytes=20_000) as fake:
        app, client = _counter(tmp_path, **fake.config())
        printer = app.extensions["receipts"]
        code = _submit_at_counter(app, client, catalog)  # the first receipt: dropped after 20 kB
        assert fake.drops == 1 and len(fake.received[0]) == 20_000
        assert _rows(app, "SELECT status, ok FROM receipt_prints") == [("offline", 0)]
        assert printer.needs_recovery
        [(detail,)] = _rows(app, "SELECT detail FROM audit_events WHERE action = 'receipt.not_printed'")
        assert json.loads(detail)["interrupted"] is True
        page = client.get(f"/agent/d/{code}").text  # staff see it, in words, not a code
        assert "data-printer-recovering" in page and "Lần in trước bị ngắt giữa chừng" in page
        assert 'data-print-status="offline">' in page and ">offline<" not in page

        client.post(f"/agent/d/{code}/reprint", data=_reprint_form(client, code))
        printer.wait()
        recovered = _after_status_queries(decode(fake.received[1]))
        # Reset, feed the half-printed strip past the cutter and cut; then the receipt, from its own reset.
        assert recovered[:4] == ["init", "feed_lines", "cut", "init"]
        assert recovered[4] == "raster" and recovered.count("cut") == 2 and fake.jobs == 2
        assert not printer.needs_recovery
        assert "data-printer-recovering" not in client.get(f"/agent/d/{code}").text
        assert _rows(app, "SELECT status, ok FROM receipt_prints ORDER BY id") == [("offline", 0), ("ok", 1)]
        [(detail,)] = _rows(app, "SELECT detail FROM audit_events WHERE action = 'receipt.printed'")
        assert json.loads(detail)["recovery"] is True

        client.post(f"/agent/d/{code}/reprint", data=_reprint_form(client, code))
        printer.wait()
        assert _after_status_queries(decode(fake.received[2]))[:2] == ["init", "raster"]  # no recovery now


# -- a reprint POSTed twice -----------------------------------------------------------------------------
def test_a_reprint_posted_twice_with_one_key_prints_once(tmp_path, catalog):
    with FakeNetworkPrinter() as fake:
        app, client = _counter(tmp_path, **fake.config())
        code = _submit_at_counter(app, client, catalog)
        assert fake.jobs == 1
        form = _reprint_form(client, code)
        first = client.post(f"/agent/d/{code}/reprint", data=form)
        app.extensions["receipts"].wait()
        again = client.post(f"/agent/d/{code}/reprint", data=form)  # a replay, or the second click
        app.extensions["receipts"].wait()
        assert first.status_code == again.status_code == 303
        assert first.headers["Location"] == again.headers["Location"] == f"/agent/d/{code}"
        assert fake.jobs == 2  # the receipt, and one reprint
        assert _rows(app, "SELECT kind FROM ledger WHERE kind = 'reprint'") == [("reprint",)]
        assert _rows(app, "SELECT COUNT(*) FROM audit_events WHERE action = 'receipt.reprint'") == [(1,)]
        assert _rows(app, "SELECT request_key FROM receipt_prints WHERE request_key IS NOT NULL") == \
            [(form["reprint_key"],)]

        client.post(f"/agent/d/{code}/reprint", data=_reprint_form(client, code))  # the form again: a new key
        app.extensions["receipts"].wait()
        assert fake.jobs == 3
        assert _rows(app, "SELECT COUNT(*) FROM ledger WHERE kind = 'reprint'") == [(2,)]
        assert len(_rows(app, "SELECT id FROM receipt_prints")) == 3


def test_a_reprint_without_a_printer_is_counted_once_per_key(tmp_path, catalog):
    app, client = _counter(tmp_path)  # no printer: the receipt is shown on screen
    code = _submit_at_counter(app, client, catalog)
    page = client.get(f"/agent/d/{code}")
    assert 'name="reprint_key"' not in page.text  # no printer, no reprint offered (tests/test_refusals.py)
    form = {"csrf_token": csrf_token(page.text), "reprint_key": "k" * 22}  # a form from before the printer went
    for _ in range(2):
        assert client.post(f"/agent/d/{code}/reprint", data=form).status_code == 303
    assert _rows(app, "SELECT COUNT(*) FROM ledger WHERE kind = 'reprint'") == [(1,)]
    assert _rows(app, "SELECT status, ok, request_key FROM receipt_prints") == \
        [("no_printer", 0, form["reprint_key"])]
    # A form without a key (an older page) is still a reprint, once per POST.
    client.post(f"/agent/d/{code}/reprint", data={"csrf_token": form["csrf_token"]})
    assert _rows(app, "SELECT COUNT(*) FROM ledger WHERE kind = 'reprint'") == [(2,)]


def test_two_requests_with_one_key_record_one_job(tmp_path, catalog):
    # The key is unique in the table, so two server threads racing with the same form record one job.
    app, client = _counter(tmp_path)
    code = _submit_at_counter(app, client, catalog)
    (sid,) = _rows(app, "SELECT submission_id FROM dossiers WHERE tracking_code = ?", code)[0]
    conn = connect(app.config["DATABASE"])
    try:
        with write_transaction(conn):
            first = record_request(conn, sid, "minh", "k" * 22)
            second = record_request(conn, sid, "minh", "k" * 22)
            unkeyed = [record_request(conn, sid, "citizen") for _ in range(2)]
    finally:
        conn.close()
    assert first is not None and second is None and None not in unkeyed
