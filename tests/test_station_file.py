"""The station file is checked in one place, against one schema (kiosk/core/station_schema.json), and
`kiosk check` runs the same start checks as `kiosk serve`: a file is refused by both, with the same one-line
message naming the file and the key, or by neither."""
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from devices.printer import PrinterSettings
from devices.vietqr import PaymentAccount
from kiosk.app import create_app
from kiosk.cli import main
from kiosk.core.config import DEFAULTS, SCHEMA, ConfigError, load_station
from kiosk.startup import start_checks
from sync.worker import SyncSettings

ROOT = Path(__file__).resolve().parent.parent


def station_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text + f'[paths]\ndata = "{tmp_path / "var"}"\n', "utf-8")
    return path


def check(path: Path):
    return CliRunner().invoke(main, ["check", "--station", str(path)])


# What the issue found, each with the words its message must hold.
REFUSED_BY_THE_FILE = {
    "unknown section": ("[sesion]\nidle_seconds = 60\n", "sesion: ", "did you mean `session`?"),
    "unknown key": ('[devices]\nprintr = "network"\n', "devices.printr: ", "did you mean `printer`?"),
    "number in quotes": ('[session]\ndraft_idle_minutes = "20"\n', 'session.draft_idle_minutes = "20": ',
                         "must be a whole number, without quotes"),
    "yes/no in quotes": ('[sync]\nbatch_http = "no"\n', 'sync.batch_http = "no": ', "must be true or false"),
    "unknown time zone": ('[station]\ntimezone = "Asia/Hanoi_City"\n', 'station.timezone = "Asia/Hanoi_City": ',
                          "is not a time zone name"),
    "unknown printer connection": ('[devices]\nprinter = "laser"\n', 'devices.printer = "laser": ', "must be one of"),
    "paper width": ("[printer]\npaper_mm = 110\n", "printer.paper_mm = 110: ", "must be one of: 58, 80"),
    "printer timeout": ('[printer]\ntimeout_s = "soon"\n', 'printer.timeout_s = "soon": ', "must be a number"),
    "usb id": ('[printer]\nusb_vendor = "04x16"\n', 'printer.usb_vendor = "04x16": ', "0x..."),
    "whole number as a float": ("[session]\nidle_seconds = 120.0\n", "session.idle_seconds = 120.0: ",
                                "must be a whole number"),
    "boolean for a number": ("[server]\nport = true\n", "server.port = true: ", "must be a whole number"),
    "short warning": ("[session]\nwarning_seconds = 5\n", "session.warning_seconds = 5: ", "must be at least 20"),
    "card wait": ("[devices]\ncard_wait_seconds = 0\n", "devices.card_wait_seconds = 0: ", "from 1 to 300"),
    "missing csca folder": ('[devices]\ncsca_dir = "/no/such/folder"\n', "devices.csca_dir", "folder"),
    "station id": ('[station]\nid = "k1"\n', 'station.id = "k1": ', "2-6 capital letters or digits"),
    "half a payment account": ('[payment]\nbank_bin = "970436"\n', "payment: ", "needs payment.account"),
    "bank bin": ('[payment]\nbank_bin = "9704"\naccount = "0071000123456"\n', "payment.bank_bin", "6-digit"),
    "nan": ("[sync]\ntimeout = nan\n", "sync.timeout = nan: ", "must be a number"),
    "not a table": ('session = "short"\n', 'session = "short": ', "must be a [table]"),
}

# Printer settings that fit the schema but not each other: the start checks find them.
REFUSED_AT_START = {
    "network without a host": ('[devices]\nprinter = "network"\n', "printer.host"),
    "usb without a product": ('[devices]\nprinter = "usb"\n[printer]\nusb_vendor = "0x0416"\n', "printer.usb_product"),
    "unknown profile": ('[printer]\nhost = "10.0.0.9"\nprofile = "NoSuchPrinter"\n', "printer.profile"),
    "impact printer": ('[printer]\nhost = "10.0.0.9"\nprofile = "TM-U220"\n', "printer.profile"),
    "job shorter than one exchange": ('[printer]\nhost = "10.0.0.9"\ntimeout_s = 3\njob_timeout_s = 1\n',
                                      "printer.job_timeout_s"),
}


@pytest.mark.parametrize("text, where, words", REFUSED_BY_THE_FILE.values(), ids=REFUSED_BY_THE_FILE.keys())
def test_a_wrong_file_is_refused_by_load_station_and_kiosk_check_alike(tmp_path, text, where, words):
    path = station_file(tmp_path, text)
    with pytest.raises(ConfigError) as refused:
        load_station(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: {where}") and words in message, message
    assert "\n" not in message and " / " in message  # one line: Vietnamese, then English
    result = check(path)
    assert result.exit_code == 1 and result.output == f"Error: {message}\n", result.output
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app(station_file=str(path))
    assert not (tmp_path / "var").exists()  # refused before anything is made


@pytest.mark.parametrize("text, key", REFUSED_AT_START.values(), ids=REFUSED_AT_START.keys())
def test_printer_settings_that_do_not_fit_together_are_refused_by_check_and_serve(tmp_path, text, key):
    path = station_file(tmp_path, text)
    station = load_station(path)  # each key is right on its own
    with pytest.raises(ConfigError) as refused:
        start_checks(station)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and key in message and "\n" not in message, message
    result = check(path)
    assert result.exit_code == 1 and result.output == f"Error: {message}\n", result.output
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app(station_file=str(path))
    served = CliRunner().invoke(main, ["serve", "--station", str(path)])
    assert served.exit_code == 1 and served.output == result.output, served.output


def test_kiosk_serve_refuses_a_wrong_file_with_the_message_of_kiosk_check(tmp_path):
    path = station_file(tmp_path, '[session]\ndraft_idle_minutes = "20"\n')
    served = CliRunner().invoke(main, ["serve", "--station", str(path)])
    assert served.exit_code == 1 and served.output == check(path).output


def test_python_m_kiosk_check_exits_1_with_the_message(tmp_path):
    path = station_file(tmp_path, "[sesion]\nidle_seconds = 60\n")
    message = ""
    try:
        load_station(path)
    except ConfigError as exc:
        message = str(exc)
    done = subprocess.run([sys.executable, "-m", "kiosk", "check", "--station", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == f"Error: {message}", done.stderr
    assert "did you mean `session`?" in message


def test_an_override_is_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"devices\.printr: .*did you mean `printer`\?"):
        create_app({"paths": {"data": str(tmp_path / "var")}, "devices": {"printr": "none"}})


def test_the_example_and_the_defaults_pass(tmp_path, monkeypatch):
    example = load_station(ROOT / "station.example.toml")
    checked = start_checks(example)
    assert checked.catalog and checked.printer.connection == "none" and checked.payment is None
    result = check(ROOT / "station.example.toml")
    assert result.exit_code == 0 and ": ok" in result.output, result.output
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KIOSK_STATION", raising=False)
    defaults = load_station()
    assert defaults["source"] == "<defaults>"
    start_checks(defaults)
    assert not (tmp_path / "var").exists()  # checking makes no data folder


def test_a_full_file_passes_and_reads_as_written(tmp_path):
    path = station_file(tmp_path, '[sync]\nbatch_http = false\nbatch_size = 20\nretention_days = 0.5\n'
                                  '[central]\nurl = "https://mot-cua.example.gov.vn/api"\nkeys_file = ""\n'
                                  '[devices]\nprinter = "usb"\n[printer]\nusb_vendor = "0x0416"\nusb_product = 20497\n'
                                  'paper_mm = 58\ntimeout_s = 2\ncheck_status = false\n'
                                  '[payment]\nbank_bin = 970436\naccount = "0071000123456"\naccount_name = "UBND"\n')
    station = load_station(path)
    checked = start_checks(station)
    assert (checked.printer.usb_vendor, checked.printer.usb_product, checked.printer.check_status) == (0x0416, 0x5011, False)
    assert checked.payment == PaymentAccount("970436", "0071000123456", "UBND")
    settings = SyncSettings.from_config(station)
    assert settings.batch_http is False and settings.batch_size == 20
    assert check(path).exit_code == 0


# -- the schema itself ----------------------------------------------------------------------------------

def _objects(node: dict, where: str = ""):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield where or "(root)", node
        for key, value in node.items():
            if isinstance(value, dict):
                yield from _objects(value, f"{where}/{key}")


def _keys():
    for section, table in SCHEMA["properties"].items():
        for key in table["properties"]:
            yield section, key


def test_the_schema_is_a_2020_12_schema_that_allows_nothing_unknown():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    tables = list(_objects(SCHEMA))
    assert len(tables) == 1 + len(SCHEMA["properties"])
    for where, table in tables:
        assert table.get("additionalProperties") is False, where


def test_every_schema_key_is_documented_and_every_default_is_in_the_schema():
    text = (ROOT / "docs" / "station.md").read_text("utf-8")
    for section, key in _keys():
        assert f"`{section}.{key}`" in text, f"{section}.{key} is not documented in docs/station.md"
    for section, values in DEFAULTS.items():
        for key in values:
            assert key in SCHEMA["properties"][section]["properties"], f"{section}.{key} is not in the schema"


def test_the_schema_names_what_the_code_reads():
    # The sections whose readers live outside the core: a new setting there needs its place in the schema.
    schema = SCHEMA["properties"]
    assert set(schema["sync"]["properties"]) == {f.name for f in dataclasses.fields(SyncSettings)} | {"export_dir"}
    printer = {f.name for f in dataclasses.fields(PrinterSettings)} - {"connection"}
    assert set(schema["printer"]["properties"]) == printer
    assert set(schema["payment"]["properties"]) == {f.name for f in dataclasses.fields(PaymentAccount)}
