"""VietQR payloads: EMVCo structure, NAPAS fields, and the CRC checked against an independent CRC."""
import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.receipt_document import qr_image
from devices.vietqr import PaymentAccount, ascii_message, payment_account, vietqr_payload


def crc16_ccitt_false_by_the_book(data: bytes) -> int:
    """CRC-16/CCITT-FALSE bit by bit, as EMVCo QRCPS 4.7.3 describes it: polynomial 0x1021,
    initial value 0xFFFF, MSB first, no final XOR. Deliberately not the code under test."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def parse_tlv(text: str) -> dict[str, str]:
    """EMVCo data objects, checking that every length is exact and the objects fill the string."""
    fields, i = {}, 0
    while i < len(text):
        tag, length = text[i : i + 2], text[i + 2 : i + 4]
        assert tag.isdigit() and length.isdigit(), f"bad object header at {i}: {text[i:i+4]!r}"
        value = text[i + 4 : i + 4 + int(length)]
        assert len(value) == int(length), f"object {tag} runs past the end"
        assert tag not in fields, f"object {tag} twice"
        fields[tag] = value
        i += 4 + int(length)
    return fields


def test_reference_crc_matches_the_catalogue_check_value():
    # The check value of CRC-16/CCITT-FALSE (a.k.a. CRC-16/IBM-3740) for "123456789" is 0x29B1.
    assert crc16_ccitt_false_by_the_book(b"123456789") == 0x29B1


def test_payload_matches_the_napas_specification_example():
    # NAPAS VietQR specification v1.5.2, static QR for a transfer to card 9704031101234567 at BIN 970403.
    napas = "00020101021138600010A00000072701300006970403011697040311012345670208QRIBFTTC53037045802VN63044F52"
    assert vietqr_payload("970403", "9704031101234567", None, service="QRIBFTTC") == napas
    assert crc16_ccitt_false_by_the_book(napas[:-4].encode()) == int(napas[-4:], 16)


def test_dynamic_payload_fields_and_crc():
    payload = vietqr_payload("970436", "0071000123456", 50000, "Lệ phí K01-261127-0007")
    fields = parse_tlv(payload)
    assert list(fields) == ["00", "01", "38", "53", "54", "58", "62", "63"]
    assert fields["00"] == "01"
    assert fields["01"] == "12"  # dynamic: this QR is for one payment of a fixed amount
    merchant = parse_tlv(fields["38"])
    assert merchant["00"] == "A000000727"
    assert parse_tlv(merchant["01"]) == {"00": "970436", "01": "0071000123456"}
    assert merchant["02"] == "QRIBFTTA"
    assert fields["53"] == "704"
    assert fields["54"] == "50000"
    assert fields["58"] == "VN"
    assert parse_tlv(fields["62"]) == {"08": "Le phi K012611270007"}
    assert payload.endswith("6304" + fields["63"])
    assert int(fields["63"], 16) == crc16_ccitt_false_by_the_book(payload[:-4].encode("ascii"))
    assert fields["63"] == fields["63"].upper()


def test_static_payload_has_no_amount():
    fields = parse_tlv(vietqr_payload("970436", "0071000123456"))
    assert fields["01"] == "11"
    assert "54" not in fields and "62" not in fields


def test_a_changed_character_breaks_the_crc():
    payload = vietqr_payload("970436", "0071000123456", 50000, "DVC K01")
    tampered = payload.replace("50000", "90000")
    assert crc16_ccitt_false_by_the_book(tampered[:-4].encode()) != int(tampered[-4:], 16)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Lệ phí hồ sơ", "Le phi ho so"),
        ("Đăng ký ĐĂNG KÝ đ", "Dang ky DANG KY d"),
        ("  a,b;c  -- d  ", "abc d"),
        ("x" * 40, "x" * 25),
    ],
)
def test_message_is_folded_to_what_banks_accept(text, expected):
    assert ascii_message(text) == expected


@pytest.mark.parametrize(
    "args",
    [
        ("97043", "123", 1000),  # BIN too short
        ("97043a", "123", 1000),
        ("970436", "", 1000),
        ("970436", "1" * 20, 1000),  # longer than 19
        ("970436", "12-34", 1000),
        ("970436", "1234", -1),
        ("970436", "1234", 10.5),
    ],
)
def test_bad_input_is_refused(args):
    with pytest.raises(ValueError):
        vietqr_payload(*args)


def test_payment_account_from_the_station_file():
    assert payment_account({}) is None
    assert payment_account({"payment": {"bank_bin": "970436"}}) is None
    account = payment_account({"payment": {"bank_bin": 970436, "account": "0071000123456", "account_name": "UBND"}})
    assert account == PaymentAccount("970436", "0071000123456", "UBND")
    with pytest.raises(ValueError):
        payment_account({"payment": {"bank_bin": "9704", "account": "0071000123456"}})


@settings(max_examples=60, deadline=None)
@given(
    bank_bin=st.from_regex(r"\A9704[0-9]{2}\Z"),
    account=st.from_regex(r"\A[0-9A-Z]{1,19}\Z"),
    amount=st.integers(min_value=0, max_value=10**12),
    message=st.text(max_size=60),
)
def test_any_payload_parses_and_checks(bank_bin, account, amount, message):
    payload = vietqr_payload(bank_bin, account, amount, message)
    assert payload.isascii()
    fields = parse_tlv(payload)
    assert parse_tlv(parse_tlv(fields["38"])["01"]) == {"00": bank_bin, "01": account}
    assert fields.get("54") == (str(amount) if amount else None)
    if "62" in fields:
        purpose = parse_tlv(fields["62"])
        assert list(purpose) == ["08"] and 0 < len(purpose["08"]) <= 25
        assert purpose["08"] == ascii_message(message)
    else:
        assert ascii_message(message) == ""
    assert int(fields["63"], 16) == crc16_ccitt_false_by_the_book(payload[:-4].encode())


def test_the_qr_decodes_to_the_exact_payload():
    payload = vietqr_payload("970436", "0071000123456", 1250000, "DVC K01 261127 0007")
    found = zxingcpp.read_barcodes(qr_image(payload, 300))
    assert [b.text for b in found] == [payload]
