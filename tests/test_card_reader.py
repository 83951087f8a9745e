"""The whole read through the real PC/SC path: pcscd (started by the fixture) + vpcd + the simulator."""
import copy
import json
import logging
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from devices.card_bench import bench_card_read
from devices.card_cli import card as card_cli
from devices.card_profile import build_profile
from devices.card_reader import (AccessDeniedError, CardCommunicationError, CardError, CardKey, CardRemovedError,
                                 CardTamperedError, NoCardError, NoReaderError, NotAnIdCardError,
                                 ReaderServiceError, read_cccd, read_with, reader_status)
from devices.card_simulator import CardSimulator

try:
    from tests.card_fixtures import (CARDS_DIR, card, card_state, csca_dir, insert_card, key, pcscd,  # noqa: F401
                                     profile, test_pki)
except ImportError:
    from card_fixtures import (CARDS_DIR, card, card_state, csca_dir, insert_card, key, pcscd,  # noqa: F401
                               profile, test_pki)

PREFILL = {s.removeprefix("card.") for s in __import__("kiosk.catalog", fromlist=["x"]).PREFILL_SOURCES}
VIETNAMESE = set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")


def assert_bilingual(err: CardError):
    assert err.message_vi and err.message_en and err.message_vi != err.message_en
    assert set(err.message_vi.lower()) & VIETNAMESE, "the Vietnamese message needs its diacritics"


def test_read_gives_the_prefill_fields_and_says_verified(card, key, csca_dir):
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert set(result.fields) <= PREFILL
    assert set(result.fields) == PREFILL  # the synthetic card has every field
    assert result.fields["full_name"] == "Nguyễn Văn Thử"
    assert result.fields["birth_date"] == "1990-05-17"
    assert result.fields["id_number"] == "001090012345"
    assert result.verified is True
    assert result.verification_message_vi.startswith("Đã xác thực")
    assert result.reader_name.startswith("Virtual PCD")
    assert result.photo is None and 2 not in result.checked_data_groups  # DG2 only on request
    assert result.checked_data_groups == [1, 13]


def test_key_from_the_front_qr_opens_the_card(card, key):
    qr = f"{key.number}|012345678|Nguyễn Văn Thử|17051990|Nam|Hà Nội|15042021"
    from_qr = CardKey.from_front_qr(qr)
    assert from_qr == key  # the estimated expiry (renewal at 40) is the one on this card
    assert read_cccd(from_qr, timeout_s=5, access="bac").fields["id_number"] == key.number
    assert CardKey.from_front_qr(qr, "2031-01-01").expiry_date == date(2031, 1, 1)


def test_photo_only_on_request(card, key, csca_dir):
    result = read_cccd(key, csca_dir=csca_dir, want_photo=True, timeout_s=5)
    assert result.photo.startswith(b"\xFF\xD8\xFF")
    assert result.checked_data_groups == [1, 2, 13]


def test_without_csca_the_read_works_but_is_not_verified(card, key):
    result = read_cccd(key, timeout_s=5)
    assert result.fields["full_name"] == "Nguyễn Văn Thử"
    assert result.verified is False and "CSCA" in result.verification_message_vi


def test_the_checked_in_test_card_verifies_against_the_checked_in_csca(insert_card):
    profile = json.loads((CARDS_DIR / "synthetic_cccd.json").read_text(encoding="utf-8"))
    insert_card(profile)
    k = profile["key"]
    result = read_cccd(CardKey.from_strings(k["number"], k["birth_date"], k["expiry_date"]),
                       csca_dir=CARDS_DIR / "csca", timeout_s=5)
    assert result.verified


def test_wrong_number_is_access_denied_by_pace_and_bac(card, key):
    wrong = CardKey("001090012346", key.birth_date, key.expiry_date)
    with pytest.raises(AccessDeniedError) as info:
        read_cccd(wrong, timeout_s=5)
    assert_bilingual(info.value)
    assert "không khớp" in info.value.message_vi
    # the chip still opens with the right key afterwards
    assert read_cccd(key, timeout_s=5).fields["id_number"] == key.number


def test_wrong_birth_date_is_access_denied_by_bac(card, key):
    wrong = CardKey(key.number, date(1990, 5, 18), key.expiry_date)
    with pytest.raises(AccessDeniedError):
        read_cccd(wrong, timeout_s=5, access="bac")
    # PACE with the CAN (last 6 digits of the number) does not need the dates
    assert read_cccd(wrong, timeout_s=5, access="pace").access_protocol == "PACE"


def test_pace_is_used_when_the_chip_offers_it_and_bac_otherwise(insert_card, test_pki, key, csca_dir):
    sim = insert_card(build_profile(pki=test_pki, pace_parameter_id=12))  # NIST P-256
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert result.access_protocol == "PACE" and result.verified
    sim.pull_out()
    card_state(False)
    insert_card(build_profile(pki=test_pki, pace_parameter_id=None))
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert result.access_protocol == "BAC" and result.verified
    with pytest.raises(NotAnIdCardError):
        read_cccd(key, timeout_s=5, access="pace")


def test_card_pulled_out_mid_read(card, key):
    card.inject("remove", after=9)  # inside DG13
    with pytest.raises(CardRemovedError) as info:
        read_cccd(key, timeout_s=5)
    assert_bilingual(info.value)


@pytest.mark.parametrize("access", ["pace", "bac"])
@pytest.mark.parametrize("fault", ["garbage", "truncate", "bad_mac", "plain_error"])
def test_one_broken_answer_restarts_from_login_and_the_read_completes(card, key, csca_dir, fault, access):
    card.inject(fault, after=12)  # while reading DG1 or DG13
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5, access=access)
    assert result.logins == 2 and result.access_protocol == access.upper()
    assert result.verified and result.fields["full_name"] == "Nguyễn Văn Thử"


@pytest.mark.parametrize("fault", ["garbage", "truncate"])
def test_answers_that_keep_breaking_end_in_a_clear_error(card, key, fault):
    for n in range(1, 60):
        card.inject(fault, after=n)
    with pytest.raises(CardCommunicationError) as info:
        read_cccd(key, timeout_s=5)
    assert_bilingual(info.value)


def test_block_size_falls_back_when_the_chip_wants_smaller_reads(insert_card, test_pki, key, csca_dir):
    insert_card(build_profile(pki=test_pki, max_read=0x40))
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert result.verified and result.fields["residence"].startswith("Số 1")


def test_a_tampered_file_is_refused(insert_card, profile, key, csca_dir):
    tampered = copy.deepcopy(profile)
    dg13 = bytes.fromhex(tampered["files"]["010D"])
    tampered["files"]["010D"] = dg13.replace("Nguyễn Văn Thử".encode(), "Nguyễn Văn Giả".encode()).hex()
    insert_card(tampered)
    with pytest.raises(CardTamperedError) as info:
        read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert_bilingual(info.value)
    assert "DG13" in info.value.message_vi


def test_a_card_that_is_not_an_id_card(insert_card, profile, key):
    sim = insert_card(profile)
    sim.process = lambda apdu: b"\x6A\x82"  # no eMRTD application
    with pytest.raises(NotAnIdCardError) as info:
        read_cccd(key, timeout_s=5)
    assert_bilingual(info.value)


def test_no_card_on_the_reader(pcscd, key):
    card_state(False)
    start = time.monotonic()
    with pytest.raises(NoCardError) as info:
        read_cccd(key, timeout_s=0.5)
    assert time.monotonic() - start < 3
    assert_bilingual(info.value)


def test_no_such_reader(pcscd, key):
    with pytest.raises(NoReaderError) as info:
        read_cccd(key, reader_name="Reader That Is Not There", timeout_s=0.3)
    assert_bilingual(info.value)


def test_reader_status_for_the_device_page(card):
    status = reader_status()
    assert status["ok"] and status["card_present"] and status["readers"][0].startswith("Virtual PCD")
    card.pull_out()
    card_state(False)
    assert reader_status()["card_present"] is False
    missing = reader_status("Reader That Is Not There")
    assert not missing["ok"] and "đầu đọc" in missing["message_vi"]


def test_no_reader_at_all(monkeypatch, key):
    import smartcard.System
    monkeypatch.setattr(smartcard.System, "readers", lambda: [])
    with pytest.raises(NoReaderError):
        read_cccd(key, timeout_s=0.2)


def test_pcscd_not_running_is_a_reader_service_error(tmp_path):
    # libpcsclite reads the socket path once per process, so point a fresh process at a dead one.
    code = ("from datetime import date\n"
            "from devices.card_reader import CardKey, read_cccd, CardError\n"
            "try:\n"
            "    read_cccd(CardKey('001090012345', date(1990,5,17), date(2030,5,17)), timeout_s=0.5)\n"
            "except CardError as e:\n"
            "    print(type(e).__name__, '|', e.message_vi)\n")
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    name, _, message = out.stdout.partition(" | ")
    assert name == ReaderServiceError.__name__
    assert "pcscd" in message and "không chạy" in message


def test_keys_data_and_photo_stay_out_of_logs_and_reprs(card, key, csca_dir, caplog):
    caplog.set_level(logging.DEBUG)
    result = read_cccd(key, csca_dir=csca_dir, want_photo=True, timeout_s=5)
    text = caplog.text + repr(result) + repr(key)
    for secret in ("001090012345", "090012345", "Nguyễn", "NGUYEN", "1990", "Hà Nội"):
        assert secret not in text
    assert "card read" in caplog.text


def test_a_read_opens_no_file_for_writing(card, key, csca_dir, monkeypatch):
    import builtins
    import io
    writes = []
    real_open = builtins.open

    def watching_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", watching_open)
    monkeypatch.setattr(io, "open", watching_open)
    result = read_cccd(key, csca_dir=csca_dir, want_photo=True, timeout_s=5)
    assert result.photo and writes == []


def test_cli_read_prints_fields_and_status(card, key, csca_dir):
    out = CliRunner().invoke(card_cli, ["read", "--number", key.number, "--birth", "17/05/1990",
                                        "--expiry", "2030-05-17", "--csca-dir", str(csca_dir), "--timeout", "5"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["verified"] is True and data["fields"]["full_name"] == "Nguyễn Văn Thử"
    assert "photo" not in data


def test_cli_read_reports_errors_in_both_languages(card, key):
    out = CliRunner().invoke(card_cli, ["read", "--number", "001090012346", "--birth", "1990-05-18",
                                        "--expiry", "2030-05-17", "--timeout", "5"])
    assert out.exit_code == 1
    error = json.loads(out.output.strip().splitlines()[-1])["error"]
    assert error["type"] == "AccessDeniedError" and "không khớp" in error["message_vi"]


def test_cli_simulate_puts_a_card_on_the_reader(pcscd, tmp_path, key):
    out = CliRunner().invoke(card_cli, ["make-profile", str(tmp_path)])
    assert out.exit_code == 0, out.output
    profile_path = tmp_path / "synthetic_cccd.json"
    proc = subprocess.Popen([sys.executable, "-c", "from devices.card_cli import card; card()", "simulate",
                             str(profile_path), "--seconds", "20"], cwd=Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        result = read_cccd(key, csca_dir=tmp_path / "csca", timeout_s=10)
        assert result.verified and result.fields["id_number"] == key.number
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    card_state(False)


def test_reader_logic_without_pcsc(profile, key, csca_dir):
    """The same read against the simulator directly: no vpcd, useful to isolate reader logic."""
    class Direct:
        apdu_count = 0
        reader_name = "direct"

        def __init__(self, sim):
            self.sim = sim

        def transmit(self, apdu):
            self.apdu_count += 1
            return self.sim.process(apdu)

    result = read_with(Direct(CardSimulator(profile)), key, csca_dir=csca_dir, access="bac")
    assert result.verified and 15 <= result.apdu_count <= 25  # SELECT + BAC + 4 files in 0xDF blocks


def test_bench_card_read(pcscd):
    card_state(False)
    stats = bench_card_read(n=5)
    assert stats["name"] == "card_read_bac_dg1_dg13_sod" and stats["n"] == 5 and 15 <= stats["apdus"] <= 25
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] < 2000
