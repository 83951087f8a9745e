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

from tests.bench.card_bench import bench_card_read
from devices.card_cli import card as card_cli
from devices.card_profile import build_profile
from devices.card_reader import (AccessDeniedError, CardBlockedError, CardCommunicationError, CardError, CardKey,
                                 CardNotAnsweringError, CardRemovedError, CardTamperedError, DatesNeededError,
                                 NoCardError, NoReaderError, NotAnIdCardError, ReaderServiceError,
                                 TooManyTriesError, read_cccd, read_with, reader_status)
from devices.card_simulator import CardSimulator
from kiosk import device_words

try:
    from tests.card_fixtures import (CARDS_DIR, card, card_state, csca_dir, insert_card, key, pcscd,  # noqa: F401
                                     profile, test_pki)
except ImportError:
    from card_fixtures import (CARDS_DIR, card, card_state, csca_dir, insert_card, key, pcscd,  # noqa: F401
                               profile, test_pki)

PREFILL = {s.removeprefix("card.") for s in __import__("kiosk.core.catalog", fromlist=["x"]).PREFILL_SOURCES}
VIETNAMESE = set("ăâđêôơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ")


def words(err, lang: str = "vi") -> str:
    """What the kiosk says for a CardError's code (kiosk/messages_devices.toml)."""
    return device_words.card_error(err, lang)


def verification_words(result, lang: str = "vi") -> str:
    return device_words.verification(result.verification, result.verification_reason, result.findings, lang)


def assert_bilingual(err: CardError):
    assert words(err, "vi") and words(err, "en") and words(err, "vi") != words(err, "en")
    assert set(words(err).lower()) & VIETNAMESE, "the Vietnamese message needs its diacritics"


def test_read_gives_the_prefill_fields_and_says_verified(card, key, csca_dir):
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert set(result.fields) <= PREFILL
    assert set(result.fields) == PREFILL  # the synthetic card has every field
    assert result.fields["full_name"] == "Nguyễn Văn Thử"
    assert result.fields["birth_date"] == "1990-05-17"
    assert result.fields["id_number"] == "001090012345"
    assert result.verified is True
    assert verification_words(result).startswith("Đã xác thực")
    assert result.reader_name.startswith("Virtual PCD")
    assert result.photo is None and 2 not in result.checked_data_groups  # DG2 only on request
    assert result.checked_data_groups == [1, 13]


def test_key_from_the_front_qr_opens_the_card(card, key):
    qr = f"{key.number}|012345678|Nguyễn Văn Thử|17051990|Nam|Hà Nội|15042021"
    from_qr = CardKey.from_front_qr(qr)
    assert from_qr.number == key.number and from_qr.birth_date == key.birth_date and not from_qr.has_dates
    result = read_cccd(from_qr, timeout_s=5)  # PACE needs no expiry date
    assert result.access_protocol == "PACE" and result.fields["id_number"] == key.number
    with pytest.raises(DatesNeededError):  # BAC does
        read_cccd(from_qr, timeout_s=5, access="bac")
    assert CardKey.from_front_qr(qr, "17/05/2030") == key


def test_photo_only_on_request(card, key, csca_dir):
    result = read_cccd(key, csca_dir=csca_dir, want_photo=True, timeout_s=5)
    assert result.photo.startswith(b"\xFF\xD8\xFF")
    assert result.checked_data_groups == [1, 2, 13]


def test_without_csca_the_read_works_but_is_not_verified(card, key):
    result = read_cccd(key, timeout_s=5)
    assert result.fields["full_name"] == "Nguyễn Văn Thử"
    assert result.verified is False and "CSCA" in verification_words(result)


def test_the_checked_in_test_card_verifies_against_the_checked_in_csca(insert_card):
    profile = json.loads((CARDS_DIR / "synthetic_cccd.json").read_text(encoding="utf-8"))
    insert_card(profile)
    k = profile["key"]
    result = read_cccd(CardKey.from_strings(k["number"], k["birth_date"], k["expiry_date"]),
                       csca_dir=CARDS_DIR / "csca", timeout_s=5)
    assert result.verified


def test_wrong_number_is_refused_by_pace_then_bac_and_two_tries_is_the_limit(card, key):
    wrong = CardKey("001090012346")
    with pytest.raises(DatesNeededError) as info:  # PACE refused the number alone: ask the dates
        read_cccd(wrong, timeout_s=5)
    assert info.value.pace_refused and info.value.wrong_keys == 1
    dated = CardKey(wrong.number, key.birth_date, key.expiry_date)
    with pytest.raises(TooManyTriesError) as info:  # the second wrong try on this card: ask staff
        read_cccd(dated, timeout_s=5, access="bac", wrong_keys=1)
    assert_bilingual(info.value)
    assert info.value.wrong_keys == 2 and "nhân viên" in words(info.value)
    apdus = card.apdu_count
    with pytest.raises(TooManyTriesError):  # a third is not even tried
        read_cccd(dated, timeout_s=5, access="bac", wrong_keys=2)
    assert card.apdu_count == apdus
    # one wrong try says which numbers to check
    with pytest.raises(AccessDeniedError) as info:
        read_cccd(dated, timeout_s=5, access="bac")
    assert_bilingual(info.value)
    assert "không khớp" in words(info.value) and info.value.wrong_keys == 1
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
    assert "DG13" in words(info.value)


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
    assert not missing["ok"] and missing["code"] == "no_reader"
    assert "đầu đọc" in device_words.reader_state(missing, "vi")


def test_no_reader_at_all(monkeypatch, key):
    import smartcard.System
    monkeypatch.setattr(smartcard.System, "readers", lambda: [])
    with pytest.raises(NoReaderError):
        read_cccd(key, timeout_s=0.2)


def test_pcscd_not_running_is_a_reader_service_error(tmp_path):
    # libpcsclite reads the socket path once per process, so point a fresh process at a dead one.
    code = ("from datetime import date\n"
            "from devices.card_reader import CardKey, read_cccd, CardError\n"
            "from kiosk.device_words import card_error\n"
            "try:\n"
            "    read_cccd(CardKey('001090012345', date(1990,5,17), date(2030,5,17)), timeout_s=0.5)\n"
            "except CardError as e:\n"
            "    print(type(e).__name__, '|', card_error(e, 'vi'))\n")
    env = {**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr
    name, _, message = out.stdout.partition(" | ")
    assert name == ReaderServiceError.__name__
    assert "Đầu đọc thẻ" in message and "nhân viên" in message and "pcscd" not in message  # no jargon


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


def test_cli_read_reports_errors_as_codes(card, key):
    out = CliRunner().invoke(card_cli, ["read", "--number", "001090012346", "--birth", "1990-05-18",
                                        "--expiry", "2030-05-17", "--timeout", "5", "--access", "bac"])
    assert out.exit_code == 1
    error = json.loads(out.output.strip().splitlines()[-1])["error"]
    assert error["type"] == "AccessDeniedError" and error["code"] == "access_denied"
    assert "không khớp" in words(error)  # what the kiosk would say for it
    # PACE refused, then BAC refused: two tries, and the CLI stops there too
    out = CliRunner().invoke(card_cli, ["read", "--number", "001090012346", "--birth", "1990-05-18",
                                        "--expiry", "2030-05-17", "--timeout", "5"])
    assert json.loads(out.output.strip().splitlines()[-1])["error"]["type"] == "TooManyTriesError"


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


def test_bench_card_read_at_a_contactless_readers_pace(pcscd):
    """The bench row of the station's first try (the number alone: PACE) with 80 ms per APDU. Its speed is
    measured by `make bench`; here only its shape and the APDUs it counts."""
    card_state(False)
    stats = bench_card_read(n=2, access="auto", latency_ms=80)
    assert stats["name"] == "card_read_auto_dg1_dg13_sod_80ms_per_apdu"
    assert stats["n"] == 2 and stats["latency_ms"] == 80
    # EF.CardAccess 1, PACE 5 (MSE:Set AT, 4 General Authenticate), SELECT of the application 1; then
    # EF.COM 3, DG1 3, DG13 5 and EF.SOD 6: SELECT, a 4-byte header, the rest in blocks of 0xDF bytes.
    assert stats["apdus"] == 24
    # Every APDU waited its 80 ms: a lower bound that shows the latency was there, not a time limit.
    assert stats["apdus"] * 80 <= stats["p50_ms"] <= stats["p95_ms"]


# --- round 2: reads that never hang, what the chip refuses, cards as issued -----------------------------

def test_a_card_that_stops_answering_fails_in_time_and_the_next_card_reads_at_once(insert_card, profile, key,
                                                                                  csca_dir):
    stuck = insert_card(profile)
    stuck.inject("silent", after=8)  # after PACE, inside the files
    start = time.monotonic()
    with pytest.raises(CardNotAnsweringError) as info:
        read_cccd(key, csca_dir=csca_dir, timeout_s=5, apdu_timeout_s=1.0)
    assert time.monotonic() - start < 2.5
    assert_bilingual(info.value)
    assert "nhấc thẻ ra" in words(info.value)
    # While the silent card holds the reader, a read says so in time instead of waiting behind it.
    start = time.monotonic()
    with pytest.raises(CardNotAnsweringError):
        read_cccd(key, timeout_s=5, apdu_timeout_s=1.0)
    assert time.monotonic() - start < 2.5
    # The citizen takes it off; the next citizen's card reads at once.
    stuck.pull_out()
    card_state(False)
    insert_card(profile)
    start = time.monotonic()
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert result.verified and time.monotonic() - start < 3


def test_the_whole_read_has_a_deadline(insert_card, test_pki, key):
    slow = build_profile(pki=test_pki, with_photo=False)
    slow["latency_ms"] = 150  # every APDU answers, slowly
    insert_card(slow)
    start = time.monotonic()
    with pytest.raises(CardNotAnsweringError):
        read_cccd(key, timeout_s=5, read_timeout_s=1.5)
    assert time.monotonic() - start < 2.5


def test_cli_read_with_a_silent_card_returns_within_its_deadlines(card, key):
    card.inject("silent", after=10)
    start = time.monotonic()
    out = CliRunner().invoke(card_cli, ["read", "--number", key.number, "--timeout", "3", "--apdu-timeout", "1"])
    assert time.monotonic() - start < 3
    assert out.exit_code == 1
    assert json.loads(out.output.strip().splitlines()[-1])["error"]["type"] == "CardNotAnsweringError"


def test_a_one_byte_answer_on_a_card_still_there_is_a_broken_answer_not_a_removal(card, key, csca_dir):
    card.inject("short", after=12)
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)  # read again from login, and it completes
    assert result.logins == 2 and result.verified
    for n in range(1, 40):
        card.inject("short", after=n)
    with pytest.raises(CardCommunicationError) as info:
        read_cccd(key, timeout_s=5)
    assert not isinstance(info.value, CardRemovedError)


def test_a_chip_that_blocks_after_wrong_keys_says_so(insert_card, test_pki, key):
    sim = insert_card(build_profile(pki=test_pki, auth_tries=1))
    with pytest.raises(DatesNeededError):
        read_cccd(CardKey("001090099999"), timeout_s=5)  # one wrong PACE try: the chip's last
    with pytest.raises(CardBlockedError) as info:  # the right key, but the chip has blocked
        read_cccd(key, timeout_s=5)
    assert_bilingual(info.value)
    assert "khóa" in words(info.value) and "thử lại" in words(info.value)  # "do not try again"
    assert sim.wrong_keys == 1  # the blocked answer was not one more try on the chip


def test_pace_refused_by_a_chip_with_another_can_then_bac_with_the_dates(insert_card, test_pki, key, csca_dir):
    sim = insert_card(build_profile(pki=test_pki, can="999999"))  # the "last 6 digits" guess is wrong here
    with pytest.raises(DatesNeededError) as info:
        read_cccd(CardKey(key.number), timeout_s=5)
    assert info.value.pace_refused and info.value.wrong_keys == 1
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5, access="bac", wrong_keys=1)
    assert result.access_protocol == "BAC" and result.verified
    assert sim.wrong_keys == 1  # PACE was not tried again


def test_a_bac_only_chip_asks_for_the_dates_without_a_wrong_try(insert_card, test_pki, key, csca_dir):
    sim = insert_card(build_profile(pki=test_pki, pace_parameter_id=None))
    with pytest.raises(DatesNeededError) as info:
        read_cccd(CardKey(key.number), timeout_s=5)
    assert not info.value.pace_refused and info.value.wrong_keys == 0 and sim.wrong_keys == 0


@pytest.mark.parametrize("pace_id", [13, None])
def test_a_card_with_no_expiry(insert_card, test_pki, csca_dir, pace_id):
    from devices.card_profile import SYNTHETIC_PERSON
    person = {**SYNTHETIC_PERSON, "birth_date": "1960-02-03", "issue_date": "2021-06-01", "no_expiry": True}
    insert_card(build_profile(person, pki=test_pki, pace_parameter_id=pace_id))
    if pace_id is None:
        key = CardKey.from_strings(person["id_number"], "03/02/1960", "Không thời hạn")
        assert key.no_expiry and key.expiry_date is None
    else:
        key = CardKey(person["id_number"])
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert result.access_protocol == ("PACE" if pace_id else "BAC") and result.verification == "verified"
    assert result.fields["no_expiry"] is True and "expiry_date" not in result.fields


def test_an_expired_signer_certificate_is_verified_with_a_warning(insert_card, tmp_path, key):
    from cryptography.hazmat.primitives import serialization

    from devices.card_profile import make_test_pki
    pki = make_test_pki("Old CSCA", ds_expired=True)
    (tmp_path / "csca.pem").write_bytes(pki.csca_cert.public_bytes(serialization.Encoding.PEM))
    insert_card(build_profile(pki=pki))
    result = read_cccd(key, csca_dir=tmp_path, timeout_s=5)
    assert result.verified and result.verification == "verified_warning"
    assert verification_words(result).startswith("Đã xác thực, có lưu ý") and "hết hạn" in verification_words(result)
    assert "expired" in verification_words(result, "en")


def test_a_card_laid_out_by_another_encoder_reads_every_field(insert_card, test_pki, key, csca_dir):
    """DG13 bytes from asn1crypto in the wrapped layout of real cards, signed into the card, read over PC/SC."""
    from tests.test_dg13 import CARD, CARD_FIELDS, wrapped
    insert_card(build_profile(pki=test_pki, dg13=wrapped(CARD)))
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert result.verification == "verified" and result.unreadable == []
    assert {name: result.fields.get(name) for name in CARD_FIELDS} == CARD_FIELDS


def test_a_dg13_that_does_not_parse_fills_nothing_from_it(insert_card, test_pki, key, csca_dir):
    broken = bytes.fromhex("6D0A300802010106032BD316")  # a header cut short: no SET of fields
    insert_card(build_profile(pki=test_pki, dg13=broken))
    result = read_cccd(key, csca_dir=csca_dir, timeout_s=5)
    assert result.unreadable == ["dg13"]
    assert "full_name" not in result.fields  # never the MRZ's capitals without diacritics
    assert set(result.fields) <= {"birth_date", "expiry_date", "id_number"}  # from the signed MRZ only
    assert "Không đọc được" in verification_words(result)


def test_the_status_page_says_a_silent_card_holds_the_reader_without_waiting_for_it(insert_card, profile, key):
    stuck = insert_card(profile)
    stuck.inject("silent", after=3)
    with pytest.raises(CardNotAnsweringError):
        read_cccd(key, timeout_s=5, apdu_timeout_s=1.0)
    start = time.monotonic()
    status = reader_status()
    assert time.monotonic() - start < 5  # the connect deadline (3 s), not until the card is lifted
    assert not status["ok"] and status["card_present"] and "Thẻ không trả lời" in device_words.reader_state(status, "vi")
    stuck.pull_out()
    card_state(False)
    assert reader_status()["card_present"] is False
