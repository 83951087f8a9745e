"""DG1, DG13, EF.COM, the front QR and Passive Authentication; fuzzed: bad input gives a clean CardError."""
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import card_tlv, cccd
from devices.card_errors import CardDataError, CardError, CardTamperedError, QrFormatError
from devices.card_profile import SYNTHETIC_PERSON, build_profile, build_sod, make_test_pki
from devices.card_reader import parse_front_qr
from devices.mrz import parse_td1
from devices.passive_auth import passive_authentication
from devices.secure_messaging import unprotect_response
from kiosk import device_words

try:
    from tests.card_fixtures import csca_dir, profile, test_pki  # noqa: F401
except ImportError:
    from card_fixtures import csca_dir, profile, test_pki  # noqa: F401

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def files_of(profile_dict) -> dict[int, bytes]:
    return {int(fid, 16): bytes.fromhex(hexdata) for fid, hexdata in profile_dict["files"].items()}


# --- DG1 / MRZ -------------------------------------------------------------------------------------

def test_td1_example_of_icao_9303_part_5():
    mrz = ("I<UTOD231458907<<<<<<<<<<<<<<<" "7408122F1204159UTO<<<<<<<<<<<6" "ERIKSSON<<ANNA<MARIA<<<<<<<<<<")
    parsed = parse_td1(mrz)
    assert parsed["document_number"] == "D23145890"
    assert parsed["birth_date"] == "1974-08-12"
    assert parsed["expiry_date"] == "2012-04-15"
    assert parsed["sex"] == "F"
    assert parsed["name"] == "ERIKSSON ANNA MARIA"
    assert all(parsed["checks"].values())


def test_dg1_of_the_synthetic_card(profile):
    mrz = cccd.parse_dg1(files_of(profile)[cccd.EF_DG1])
    assert mrz["document_number"] == "090012345"  # the last 9 digits of the CCCD number
    assert mrz["optional_data_1"].startswith("001090012345")
    assert mrz["name"] == "NGUYEN VAN THU"
    assert all(mrz["checks"].values())


# --- DG13 ------------------------------------------------------------------------------------------

def test_dg13_gives_every_prefill_field(profile):
    dg13 = cccd.parse_dg13(files_of(profile)[cccd.EF_DG13])
    assert dg13.layout == "wrapped"  # the synthetic card lays DG13 out as issued cards do
    assert dg13.fields == SYNTHETIC_PERSON
    assert dg13.fields["full_name"] == "Nguyễn Văn Thử"
    assert dg13.fields["birth_date"] == "1990-05-17"
    assert dg13.unreadable == [] and dg13.unknown == {} and not dg13.no_expiry


def test_the_checked_in_test_card_still_parses():
    # tests/cards/synthetic_cccd.json may predate the wrapped layout; both layouts are read.
    card = json.loads((Path(__file__).parent / "cards" / "synthetic_cccd.json").read_text(encoding="utf-8"))
    dg13 = cccd.parse_dg13(bytes.fromhex(card["files"]["010D"]))
    assert dg13.fields == SYNTHETIC_PERSON and dg13.unreadable == []


def test_dg13_tolerates_missing_and_unknown_fields():
    raw = card_tlv.encode(0x0C, b"ABC123")
    person = {"id_number": "001090012345", "full_name": "Lê Thị Thử", "birth_date": "1985-01-02",
              "no_expiry": True, "mother_name": "Phạm Thị Mẹ", "unknown": {16: raw, 20: b""}}
    for layout in ("wrapped", "flat"):
        dg13 = cccd.parse_dg13(cccd.build_dg13(person, layout=layout))
        assert dg13.layout == layout
        assert dg13.fields == {"id_number": "001090012345", "full_name": "Lê Thị Thử", "birth_date": "1985-01-02",
                               "mother_name": "Phạm Thị Mẹ"}
        assert dg13.no_expiry  # "Không thời hạn" on the card: no expiry date in fields
        assert dg13.unknown == {16: raw, 20: b""}
        assert dg13.unreadable == []


def test_dg13_field_16_is_not_taken_as_the_old_number():
    # Field 16 is unconfirmed; the old number is field 15. A 9-digit 16 stays raw.
    raw = card_tlv.encode(0x0C, b"012345678")
    dg13 = cccd.parse_dg13(cccd.build_dg13({"id_number": "001090012345", "unknown": {16: raw}}))
    assert dg13.fields == {"id_number": "001090012345"}
    assert dg13.unknown == {16: raw}


def test_dg13_with_printable_strings_and_nested_sequences():
    fields = (card_tlv.encode(0x30, card_tlv.encode(0x02, b"\x01") + card_tlv.encode(0x13, b"001090012345"))
              + card_tlv.encode(0x30, card_tlv.encode(0x02, b"\x0D")
                                + card_tlv.encode(0x30, card_tlv.encode(0x0C, "Cha".encode())
                                                  + card_tlv.encode(0x0C, "Mẹ".encode()))))
    header = card_tlv.encode(0x02, b"\x01") + card_tlv.encode(0x06, bytes.fromhex("28D316010008"))
    data = card_tlv.encode(0x6D, card_tlv.encode(0x30, header + card_tlv.encode(0x31, fields)))
    assert cccd.parse_dg13(data).fields == {"id_number": "001090012345", "father_name": "Cha", "mother_name": "Mẹ"}


def test_dg13_text_is_normalised_to_nfc():
    decomposed = "Nguye\u0302\u0303n"  # ê + combining tilde, as some encoders write it
    data = cccd.build_dg13({"full_name": decomposed})  # written as given
    assert decomposed.encode() in data
    assert cccd.parse_dg13(data).fields["full_name"] == "Nguyễn"


@pytest.mark.parametrize("data", [b"", b"\x6D", b"\x6D\x05\x30", b"\x61\x00", b"\x6D\x84\xFF\xFF\xFF\xFF"])
def test_dg13_garbage_is_a_data_error(data):
    with pytest.raises(CardDataError):
        cccd.parse_dg13(data)


def test_ef_com_lists_the_data_groups(profile):
    assert cccd.parse_com(files_of(profile)[cccd.EF_COM])["data_groups"] == [1, 2, 13]


# --- front QR --------------------------------------------------------------------------------------

QR = "001090012345|012345678|Nguyễn Văn Thử|17051990|Nam|Số 1 Đường Kiểm Thử, Hà Nội|15042021"


def test_front_qr_gives_the_key_inputs():
    parsed = parse_front_qr(QR)
    assert parsed["number"] == "001090012345"
    assert parsed["birth_date"] == "1990-05-17"
    assert parsed["old_number"] == "012345678"
    assert parsed["full_name"] == "Nguyễn Văn Thử"
    assert parsed["issue_date"] == "2021-04-15"
    assert parsed["expiry_date_estimated"] == "2030-05-17"  # issued at 30: renew at 40


def test_front_qr_without_old_number_and_with_extra_fields():
    parsed = parse_front_qr("001090012345||Trần B|01012000|Nữ|Huế|10102022|extra|more\n")
    assert parsed["old_number"] is None
    assert parsed["expiry_date_estimated"] == "2025-01-01"  # issued at 22: renew at 25


@pytest.mark.parametrize("text", ["", "hello", "1|2|3|4|5|6|7", "00109001234|x|A|17051990|Nam|HN|15042021",
                                  "001090012345||A|31021990|Nam|HN|15042021",
                                  "001090012345||A|17051990|Nam|HN|2021",
                                  "001090012345||||Nam|HN|15042021", "https://example.invalid/qr"])
def test_front_qr_refuses_other_text(text):
    with pytest.raises(QrFormatError) as info:
        parse_front_qr(text)
    assert info.value.code == "qr_format"
    assert "QR" in device_words.card_error(info.value, "vi") and "QR" in device_words.card_error(info.value, "en")


# --- Passive Authentication ------------------------------------------------------------------------

def signed_inputs(profile_dict):
    files = files_of(profile_dict)
    return files[cccd.EF_SOD], {1: files[cccd.EF_DG1], 13: files[cccd.EF_DG13], 2: files[cccd.EF_DG2]}


def test_genuine_data_is_verified_against_the_csca(profile, csca_dir):
    sod, groups = signed_inputs(profile)
    result = passive_authentication(sod, groups, csca_dir)
    assert result.verified and result.checked_data_groups == [1, 2, 13]
    assert result.reason == "signed" and result.findings == ()
    assert device_words.verification(result.status, result.reason, result.findings, "vi").startswith("Đã xác thực")


def test_without_csca_the_result_says_not_verified(profile, tmp_path):
    sod, groups = signed_inputs(profile)
    for folder in (None, tmp_path, tmp_path / "missing"):
        result = passive_authentication(sod, groups, folder)
        assert not result.verified
        assert result.reason == "no_csca"
        assert "Chưa xác thực" in device_words.verification(result.status, result.reason, result.findings, "vi")
        assert "Not verified" in device_words.verification(result.status, result.reason, result.findings, "en")


def test_a_card_signed_under_another_csca_is_not_verified(csca_dir):
    other = build_profile(pki=make_test_pki("Other CSCA"), with_photo=False)
    files = files_of(other)
    result = passive_authentication(files[cccd.EF_SOD], {1: files[cccd.EF_DG1], 13: files[cccd.EF_DG13]}, csca_dir)
    assert not result.verified and result.reason == "untrusted_signer"
    assert "không thuộc" in device_words.verification(result.status, result.reason, result.findings, "vi")


@pytest.mark.parametrize("kind", ["rsa", "rsa-pss"])
def test_rsa_signed_cards_verify_and_a_bit_flip_in_the_signature_is_refused(kind, tmp_path):
    from cryptography.hazmat.primitives import serialization
    pki = make_test_pki(f"RSA {kind}", kind=kind)
    (tmp_path / "csca.der").write_bytes(pki.csca_cert.public_bytes(serialization.Encoding.DER))
    sod, groups = signed_inputs(build_profile(pki=pki))
    assert passive_authentication(sod, groups, tmp_path).verified
    signature_end = len(sod) - 1  # the signature is the last field of the SignerInfo
    broken = sod[:signature_end] + bytes([sod[signature_end] ^ 1])
    with pytest.raises(CardTamperedError):
        passive_authentication(broken, groups, tmp_path)


def test_a_changed_data_group_is_refused(profile, csca_dir):
    sod, groups = signed_inputs(profile)
    changed = groups[13].replace("Nguyễn Văn Thử".encode(), "Nguyễn Văn Giả".encode())
    with pytest.raises(CardTamperedError) as info:
        passive_authentication(sod, {**groups, 13: changed}, csca_dir)
    assert info.value.reason == "dg_changed" and info.value.params == {"dg": 13}
    words = device_words.card_error(info.value, "vi")
    assert "DG13" in words and "đã bị thay đổi" in words and "có thể đã bị sửa đổi" in words


def test_a_re_hashed_sod_with_a_forged_signature_is_refused(profile, test_pki, csca_dir):
    sod, groups = signed_inputs(profile)
    forged = make_test_pki("Forger")
    forged.ds_cert = test_pki.ds_cert  # claims the genuine signer but signs with another key
    changed = {**groups, 13: cccd.build_dg13({**SYNTHETIC_PERSON, "full_name": "Kẻ Giả Mạo"})}
    with pytest.raises(CardTamperedError) as info:
        passive_authentication(build_sod(changed, forged), changed, csca_dir)
    assert info.value.reason == "signature_invalid" and "chữ ký số" in device_words.card_error(info.value, "vi")


def test_a_data_group_missing_from_the_sod_is_refused(test_pki, csca_dir):
    dg1 = cccd.build_dg1("I" * 90)
    sod = build_sod({1: dg1}, test_pki)
    with pytest.raises(CardTamperedError):
        passive_authentication(sod, {1: dg1, 13: b"\x6D\x00"}, csca_dir)


def test_sha256_is_what_the_sod_lists(profile):
    # The SOD hashes the whole file, tag and length included.
    sod, groups = signed_inputs(profile)
    assert hashlib.sha256(groups[13]).digest() in sod


# --- fuzzing: only clean errors --------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_binary_parsers(data):
    for parse in (cccd.parse_dg13, cccd.parse_dg1, cccd.parse_com):
        try:
            parse(data)
        except CardDataError:
            pass


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_card_access(data):
    from devices.pace import parse_card_access
    for candidate in (data, b"\x31" + card_tlv.encode_length(len(data)) + data):
        try:
            assert isinstance(parse_card_access(candidate), list)
        except CardDataError:
            pass


@FUZZ
@given(st.binary(max_size=200).map(lambda b: b"\x6D" + card_tlv.encode_length(len(b)) + b))
def test_fuzz_dg13_with_a_valid_outer_tag(data):
    try:
        dg13 = cccd.parse_dg13(data)
    except CardDataError:
        return
    assert isinstance(dg13, cccd.Dg13) and isinstance(dg13.fields, dict)


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_front_qr(text):
    try:
        parsed = parse_front_qr(text)
    except QrFormatError:
        return
    assert len(parsed["number"]) == 12


@FUZZ
@given(st.lists(st.text(max_size=20), min_size=7, max_size=9).map("|".join))
def test_fuzz_front_qr_shaped(text):
    try:
        parse_front_qr(text)
    except QrFormatError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_passive_authentication(data):
    for sod in (data, b"\x77" + card_tlv.encode_length(len(data)) + data):
        with pytest.raises(CardTamperedError):
            passive_authentication(sod, {1: b"x"}, None)


@FUZZ
@given(st.data())
def test_fuzz_truncated_or_flipped_sod(profile, data):
    sod, groups = signed_inputs(profile)
    cut = data.draw(st.integers(0, len(sod) - 1))
    flipped = bytearray(sod)
    flipped[data.draw(st.integers(0, len(sod) - 1))] ^= data.draw(st.integers(1, 255))
    for bad in (sod[:cut], bytes(flipped)):
        try:
            passive_authentication(bad, groups, None)
        except CardTamperedError:
            pass


@FUZZ
@given(st.binary(max_size=120))
def test_fuzz_protected_responses(data):
    from devices.bac import SessionKeys
    keys = SessionKeys(bytes(range(16)), bytes(range(16, 32)), 1)
    try:
        unprotect_response(keys, data)
    except CardError:
        pass


@FUZZ
@given(st.lists(st.binary(min_size=0, max_size=60), max_size=6))
def test_fuzz_simulator_answers_any_apdu_with_a_status_word(profile, apdus):
    from devices.card_simulator import CardSimulator
    sim = CardSimulator(profile)
    for prefix in (b"", b"\x00\xA4\x04\x0C\x07\xA0\x00\x00\x02\x47\x10\x01", b"\x00\x22\xC1\xA4"):
        for apdu in apdus:
            response = sim.process(prefix + apdu if prefix[:2] != b"\x00\x22" else prefix + apdu)
            assert isinstance(response, bytes) and len(response) >= 2


def test_a_hash_outside_icao_is_refused_as_tampered():
    # Found by the fuzzer: a flipped OID in EF.SOD named SHAKE-128, whose digest() needs a length.
    from devices.card_errors import CardTamperedError
    from devices.passive_auth import _digest
    for name in ("shake_128", "md5", "sha3_256", "blake2b"):
        with pytest.raises(CardTamperedError):
            _digest(name, b"data")
    assert len(_digest("sha256", b"data")) == 32
