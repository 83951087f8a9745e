"""Printing receipts to a fake network printer on 127.0.0.1, decoding what it received."""
import logging
import time

import pytest
import zxingcpp
from click.testing import CliRunner
from escpos.printer import Dummy

from tests.support.fake_printer import FakeNetworkPrinter, unused_port
from devices.printer import (PrinterSettingsError, 
    Status,
    open_printer,
    printer_settings,
    printer_status,
)
from kiosk.device_words import print_outcome
from kiosk.printer_cli import printer as printer_group
from kiosk.receipt_document import Receipt, render_receipt_image
from kiosk.receipts import print_receipt
from tests.bench.receipt_bench import bench_receipt, sample_receipt
from devices.vietqr import PaymentAccount
try:
    from escpos_decoder import DecodeError, decode, names, printed_image
except ImportError:  # tests/ as a package
    from tests.escpos_decoder import DecodeError, decode, names, printed_image

PAYMENT = {"bank_bin": "970436", "account": "0071000123456", "account_name": "UBND PHUONG BEN NGHE"}
FAST = 0.3  # seconds: the timeout the tests give a printer that never answers


def make_receipt(**changes) -> Receipt:
    # Another applicant than the receipt tests' sample, so the log test looks for names of its own.
    return sample_receipt(**{"applicant_masked": "Trần T** B*** N***", "id_masked": "********4321", **changes})


@pytest.fixture
def fake():
    with FakeNetworkPrinter() as printer:
        yield printer


def station(fake: FakeNetworkPrinter, **printer) -> dict:
    return {**fake.config(timeout_s=FAST, **printer), "payment": PAYMENT}


def ink_bands(image) -> int:
    """Horizontal bands of rows with ink, separated by blank rows: about one per line of text."""
    grey = image.convert("L")
    bands, inked_before = 0, False
    for y in range(grey.height):
        inked = grey.crop((0, y, grey.width, y + 1)).getextrema()[0] == 0
        bands += inked and not inked_before
        inked_before = inked
    return bands


def qr_texts(image) -> set[str]:
    return {b.text for b in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)}


# -- the decoder, checked against python-escpos's own encoder -------------------------------------
def test_decoder_reads_what_python_escpos_writes():
    dummy = Dummy()
    dummy.hw("INIT")
    dummy.textln("Hello")
    dummy.set(align="center", bold=True)
    dummy.cut()
    commands = [c for c in decode(dummy.output) if c.name != "code_page"]  # escpos picks one for text
    assert names(commands)[:3] == ["init", "text", "line_feed"]
    assert commands[1].data == b"Hello"
    assert "align" in names(commands) and "bold" in names(commands)
    assert names(commands)[-2:] == ["feed_lines", "cut"]


def test_decoder_refuses_unknown_or_cut_short_bytes():
    with pytest.raises(DecodeError):
        decode(b"\x1b\xff")
    with pytest.raises(DecodeError):
        decode(b"\x1dv0\x00\x02\x00\x02\x00\xff")  # 2x2 bytes announced, 1 sent


# -- printing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("paper_mm, width", [(80, 576), (58, 384)])
def test_receipt_is_printed_as_raster_images_with_readable_codes(fake, paper_mm, width):
    receipt = make_receipt()
    outcome = print_receipt(station(fake, paper_mm=paper_mm), receipt)
    assert outcome.ok and outcome.sent and outcome.status is Status.OK
    assert "Đã in" in print_outcome(outcome, "vi") and "printed" in print_outcome(outcome, "en")

    commands = decode(fake.data)
    sequence = names(commands)
    first_init, last_raster = sequence.index("init"), len(sequence) - 1 - sequence[::-1].index("raster")
    assert set(sequence[:first_init]) == {"status_query"}  # asked before anything was sent
    assert "cut" in sequence[last_raster:]
    assert sequence[-1] == "status_query"  # and asked again after
    assert {c.args[0] for c in commands if c.name == "status_query"} >= {1, 4}

    rasters = [c for c in commands if c.name == "raster"]
    assert all(c.args[1] * 8 == width for c in rasters)
    page = printed_image(commands)
    assert page.width == width and width < page.height < 8 * width
    black = page.convert("L").histogram()[0] / (page.width * page.height)
    assert 0.03 < black < 0.5  # text and codes are there, and it is not a black slab
    payload = PaymentAccount(**PAYMENT).payload(receipt.fee_vnd, f"DVC {receipt.tracking_code}")
    assert qr_texts(page) == {receipt.tracking_url, payload}
    # Above the tracking QR: the heading, the procedure and the fields, each a line of text.
    tracking_qr = next(b for b in zxingcpp.read_barcodes(page) if b.text == receipt.tracking_url)
    top = min(tracking_qr.position.top_left.y, tracking_qr.position.top_right.y)
    assert ink_bands(page.crop((0, 0, width, top))) >= 12
    # What came out of the printer is exactly the on-screen preview.
    assert page.tobytes() == render_receipt_image(receipt, width, PAYMENT).tobytes()


def test_width_comes_from_the_printer_profile(fake):
    outcome = print_receipt(station(fake, profile="TM-T88V", paper_mm=58), make_receipt())
    assert outcome.ok
    assert {c.args[1] * 8 for c in decode(fake.data) if c.name == "raster"} == {512}


def test_printer_without_a_cutter_gets_no_cut_command(fake):
    assert print_receipt(station(fake, profile="NT-5890K"), make_receipt()).ok
    sequence = names(decode(fake.data))
    assert "cut" not in sequence and "raster" in sequence and "feed_lines" in sequence


def test_no_payment_code_when_free_or_not_configured(fake):
    receipt = make_receipt(fee_vnd=0)
    assert print_receipt(station(fake), receipt).ok
    assert qr_texts(printed_image(decode(fake.data))) == {receipt.tracking_url}
    fake.clear()
    config = fake.config(timeout_s=FAST)  # no [payment]
    assert print_receipt(config, make_receipt()).ok
    assert qr_texts(printed_image(decode(fake.data))) == {make_receipt().tracking_url}


@pytest.mark.parametrize(
    "state, status, words",
    [
        ("paper_out", Status.PAPER_OUT, "hết giấy"),
        ("cover_open", Status.COVER_OPEN, "Nắp máy in"),
        ("offline", Status.OFFLINE, "không phản hồi"),
    ],
)
def test_printer_that_cannot_print_gets_nothing_and_the_receipt_goes_on_screen(fake, state, status, words):
    fake.state = state
    outcome = print_receipt(station(fake), make_receipt())
    assert not outcome.ok and not outcome.sent and outcome.status is status
    assert words in print_outcome(outcome, "vi") and "màn hình" in print_outcome(outcome, "vi")
    assert "on screen" in print_outcome(outcome, "en")
    assert set(names(decode(fake.data))) == {"status_query"}  # no receipt bytes were sent


def test_paper_low_still_prints_and_says_so(fake):
    fake.state = "paper_low"
    outcome = print_receipt(station(fake), make_receipt())
    assert outcome.ok and outcome.status is Status.PAPER_LOW
    assert "sắp hết giấy" in print_outcome(outcome, "vi")
    assert "raster" in names(decode(fake.data))


def test_paper_running_out_during_the_job_is_reported(fake):
    fake.after_job = "paper_out"
    outcome = print_receipt(station(fake), make_receipt())
    assert not outcome.ok and outcome.sent and outcome.status is Status.PAPER_OUT
    assert "raster" in names(decode(fake.data))


def test_printer_that_never_answers_costs_at_most_the_timeout():
    with FakeNetworkPrinter("silent") as fake:
        start = time.monotonic()
        outcome = print_receipt(station(fake), make_receipt())
        elapsed = time.monotonic() - start
    assert not outcome.ok and not outcome.sent and outcome.status is Status.OFFLINE
    assert elapsed < 3 * FAST
    assert "raster" not in names(decode(fake.data))


def test_a_slow_printer_is_abandoned_at_the_job_deadline():
    # Each answer comes within the 0.3 s timeout, but the job as a whole may take 0.5 s only.
    with FakeNetworkPrinter(answer_delay_s=0.2) as fake:
        start = time.monotonic()
        outcome = print_receipt(station(fake, job_timeout_s=0.5), make_receipt())
        elapsed = time.monotonic() - start
        assert not outcome.ok and outcome.status is Status.OFFLINE
        assert elapsed < 0.5 + 0.15
        fake.answer_delay_s = 0.0
        assert print_receipt(station(fake, job_timeout_s=0.5), make_receipt()).ok  # the same, quick, prints


def test_switched_off_printer_is_reported_quickly():
    config = {"devices": {"printer": "network"}, "printer": {"host": "127.0.0.1", "port": unused_port(), "timeout_s": FAST}}
    start = time.monotonic()
    outcome = print_receipt(config, make_receipt())
    assert time.monotonic() - start < 2 * FAST
    assert not outcome.ok and outcome.status is Status.OFFLINE


def test_status_query_bytes_inside_an_image_are_not_answered(fake):
    import socket

    with socket.create_connection(("127.0.0.1", fake.port), timeout=FAST) as conn:
        conn.sendall(b"\x1dv0\x00\x01\x00\x03\x00" + b"\x10\x04\x01")  # 1x3 raster whose data is DLE EOT 1
        conn.sendall(b"\x10\x04\x04")  # a real query
        assert conn.recv(16) == b"\x12"
    assert fake.status_queries == [4]


@pytest.mark.parametrize(
    "state, status",
    [("ok", Status.OK), ("paper_low", Status.PAPER_LOW), ("paper_out", Status.PAPER_OUT),
     ("cover_open", Status.COVER_OPEN), ("offline", Status.OFFLINE), ("silent", Status.OFFLINE)],
)
def test_printer_status(state, status):
    with FakeNetworkPrinter(state) as fake:
        assert printer_status(station(fake)) is status
        assert "raster" not in names(decode(fake.data))


def test_status_messages_are_vietnamese_and_english():
    from kiosk.device_words import printer_status as words
    for status in Status:
        assert words(status, "vi") and words(status, "en") and words(status, "vi") != words(status, "en")


# -- connections from the station file -------------------------------------------------------------
def test_auto_without_a_printer_means_on_screen():
    assert printer_settings({"devices": {"printer": "auto"}}).connection == "none"
    outcome = print_receipt({"devices": {"printer": "auto"}}, make_receipt())
    assert not outcome.ok and outcome.status is Status.NO_PRINTER and "màn hình" in print_outcome(outcome, "vi")
    assert printer_status({"devices": {"printer": "none"}, "printer": {"host": "10.0.0.9"}}) is Status.NO_PRINTER
    assert open_printer({"devices": {"printer": "none"}}) is None


def test_auto_uses_the_configured_connection(fake):
    config = {"devices": {"printer": "auto"}, "printer": {"host": "127.0.0.1", "port": fake.port, "timeout_s": FAST}}
    assert printer_settings(config).connection == "network"
    assert print_receipt(config, make_receipt()).ok
    assert printer_settings({"printer": {"usb_vendor": "0x0416", "usb_product": "0x5011"}}).connection == "usb"
    assert printer_settings({"printer": {"serial_device": "/dev/ttyS0"}}).connection == "serial"
    assert printer_settings({"printer": {"file_path": "/dev/usb/lp0"}}).connection == "file"


def test_usb_ids_may_be_hex_strings_or_numbers():
    settings = printer_settings({"devices": {"printer": "usb"}, "printer": {"usb_vendor": "0x0416", "usb_product": 20497}})
    assert (settings.usb_vendor, settings.usb_product) == (0x0416, 0x5011)


@pytest.mark.parametrize(
    "devices, printer, key",
    [
        ("laser", {}, "devices.printer"),
        ("network", {}, "printer.host"),
        ("usb", {"usb_vendor": 0x0416}, "printer.usb_product"),
        ("network", {"host": "h", "port": 70000}, "printer.port"),
        ("network", {"host": "h", "paper_mm": 110}, "printer.paper_mm"),
        ("network", {"host": "h", "profile": "NoSuchPrinter"}, "printer.profile"),
        ("network", {"host": "h", "timeout_s": "soon"}, "printer.timeout_s"),
        ("usb", {"usb_vendor": "04x16", "usb_product": 1}, "printer.usb_vendor"),
        ("network", {"host": "h", "profile": "TM-U220"}, "printer.profile"),  # impact printer: no raster
        ("network", {"host": "h", "timeout_s": 3, "job_timeout_s": 1}, "printer.job_timeout_s"),
    ],
)
def test_wrong_settings_name_their_key_and_never_raise_from_print(devices, printer, key):
    config = {"devices": {"printer": devices}, "printer": printer, "source": "station.toml"}
    with pytest.raises(PrinterSettingsError, match=key.replace(".", r"\.")):
        printer_settings(config)
    outcome = print_receipt(config, make_receipt())
    assert not outcome.ok and outcome.status is Status.CONFIG_ERROR
    assert printer_status(config) is Status.CONFIG_ERROR


@pytest.mark.parametrize("payment", [{"bank_bin": "12", "account": "0071000123456"}, PaymentAccount("970436", "00-71")])
def test_a_wrong_payment_account_leaves_out_the_payment_code_not_the_receipt(fake, caplog, payment):
    receipt = make_receipt()
    outcome = print_receipt(fake.config(timeout_s=FAST), receipt, payment)
    assert outcome.ok
    assert qr_texts(printed_image(decode(fake.data))) == {receipt.tracking_url}
    assert "payment" in caplog.text
    fake.clear()
    assert print_receipt({**fake.config(timeout_s=FAST), "payment": {"bank_bin": "97", "account": "1"}}, receipt).ok


def test_every_printer_setting_is_documented():
    from dataclasses import fields
    from pathlib import Path

    from devices.printer import PrinterSettings

    doc = (Path(__file__).parents[1] / "docs" / "printer.md").read_text(encoding="utf-8")
    for setting in fields(PrinterSettings):
        if setting.name != "connection":
            assert f"printer.{setting.name}" in doc, f"printer.{setting.name} is not in docs/printer.md"
    for key in ("bank_bin", "account", "account_name", "bank_name"):
        assert f"payment.{key}" in doc


def test_file_printer_prints_without_status(tmp_path):
    target = tmp_path / "lp0"
    outcome = print_receipt({"devices": {"printer": "file"}, "printer": {"file_path": str(target), "paper_mm": 58}}, make_receipt())
    assert outcome.ok and outcome.status is Status.UNCHECKED
    commands = decode(target.read_bytes())
    assert "status_query" not in names(commands)
    assert make_receipt().tracking_url in qr_texts(printed_image(commands))


def test_file_printer_in_a_missing_directory_is_offline(tmp_path):
    outcome = print_receipt({"devices": {"printer": "file"}, "printer": {"file_path": str(tmp_path / "no" / "lp0")}}, make_receipt())
    assert not outcome.ok and outcome.status is Status.OFFLINE


def test_missing_usb_and_serial_devices_are_offline():
    pytest.importorskip("usb")
    pytest.importorskip("serial")
    usb = {"devices": {"printer": "usb"}, "printer": {"usb_vendor": 0x0416, "usb_product": 0x5011, "timeout_s": FAST}}
    serial = {"devices": {"printer": "serial"}, "printer": {"serial_device": "/dev/no-such-tty", "timeout_s": FAST}}
    for config in (usb, serial):
        assert printer_status(config) is Status.OFFLINE
        assert print_receipt(config, make_receipt()).status is Status.OFFLINE


def test_check_status_can_be_turned_off_for_printers_that_do_not_answer():
    with FakeNetworkPrinter("silent") as fake:
        outcome = print_receipt(station(fake, check_status=False), make_receipt())
        assert outcome.ok and outcome.status is Status.UNCHECKED
        assert "status_query" not in names(decode(fake.data))


def test_no_personal_data_in_the_logs(fake, caplog):
    receipt = make_receipt()
    caplog.set_level(logging.DEBUG)
    for state in ("ok", "paper_out", "silent"):
        fake.state = state
        print_receipt(station(fake), receipt)
    print_receipt({"devices": {"printer": "network"}, "printer": {"host": "127.0.0.1", "port": unused_port()}}, receipt)
    assert caplog.records  # there is something to look at
    for secret in ("Trần", "Ngọc", "Bích", "079188004321", "004321"):
        assert secret not in caplog.text


# -- kiosk printer ... ------------------------------------------------------------------------------
def test_printer_test_command_prints_a_test_page(fake, tmp_path):
    path = tmp_path / "station.toml"
    path.write_text(f'[devices]\nprinter = "network"\n[printer]\nhost = "127.0.0.1"\nport = {fake.port}\npaper_mm = 58\ntimeout_s = {FAST}\n')
    preview = tmp_path / "test.png"
    result = CliRunner().invoke(printer_group, ["test", "--station", str(path), "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    assert "status: ok" in result.output and "Đã in trang thử" in result.output
    page = printed_image(decode(fake.data))
    assert page.width == 384 and qr_texts(page) == {"https://dichvucong.gov.vn"}
    assert preview.read_bytes().startswith(b"\x89PNG")


def test_printer_commands_fail_when_the_printer_cannot_print(fake, tmp_path):
    fake.state = "cover_open"
    path = tmp_path / "station.toml"
    path.write_text(f'[devices]\nprinter = "network"\n[printer]\nhost = "127.0.0.1"\nport = {fake.port}\ntimeout_s = {FAST}\n')
    for command in ("test", "status"):
        result = CliRunner().invoke(printer_group, [command, "--station", str(path)])
        assert result.exit_code == 1 and "cover_open" in result.output and "Nắp máy in" in result.output


def test_printer_command_reports_a_wrong_station_file(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('[devices]\nprinter = "network"\n')
    result = CliRunner().invoke(printer_group, ["test", "--station", str(path)])
    assert result.exit_code != 0 and "printer.host" in result.output


# -- benchmark ---------------------------------------------------------------------------------------
def test_bench_receipt_reports_percentiles():
    result = bench_receipt(n=3)
    assert set(result) == {"name", "p50_ms", "p95_ms", "p99_ms", "n"} and result["n"] == 3
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] < 5000


def test_importing_the_printer_leaves_the_applications_logging_alone():
    import subprocess
    import sys

    code = "import logging, devices.printer; print(len(logging.root.handlers))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0"


def test_a_refused_connection_leaves_no_socket_open():
    import gc
    import warnings

    config = {"devices": {"printer": "network"}, "printer": {"host": "127.0.0.1", "port": unused_port(), "timeout_s": FAST}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert print_receipt(config, make_receipt()).status is Status.OFFLINE
        assert printer_status(config) is Status.OFFLINE
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
