"""BAC and secure messaging against the worked example of ICAO 9303 part 11, Appendix D, and the
chip simulator's side of the same protocol."""
import os
from datetime import date

import pytest

from devices import bac
from devices.card_errors import CardCommunicationError
from devices.mrz import bac_document_number, check_digit, mrz_key_string
from devices.secure_messaging import (SecureMessagingError, protect_command, protect_response,
                                      unprotect_command, unprotect_response)

H = bytes.fromhex
MRZ_INFO = "L898902C<369080619406236"
RND_IC, RND_IFD, K_IFD = H("4608F91988702212"), H("781723860C06C226"), H("0B795240CB7049B01C19B33E32804F0B")
CHIP_ANSWER = H("46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F2F2D235D074D7449")


def appendix_d_session() -> bac.SessionKeys:
    keys = bac.BacKeys.from_mrz_info(MRZ_INFO)
    return bac.ifd_finish(keys, CHIP_ANSWER, RND_IC, RND_IFD, K_IFD)


def test_check_digits_and_mrz_information_of_appendix_d():
    assert check_digit("L898902C<") == "3"
    assert check_digit("690806") == "1"
    assert check_digit("940623") == "6"
    assert mrz_key_string("L898902C", date(1969, 8, 6), date(1994, 6, 23)) == MRZ_INFO


def test_key_seed_and_bac_keys_of_appendix_d():
    assert bac.key_seed(MRZ_INFO) == H("239AB9CB282DAF66231DC5A4DF6BFBAE")
    keys = bac.BacKeys.from_mrz_info(MRZ_INFO)
    assert keys.enc == H("AB94FDECF2674FDFB9B391F85D7F76F2")
    assert keys.mac == H("7962D9ECE03D1ACD4C76089DCE131543")


def test_mutual_authentication_and_session_keys_of_appendix_d():
    keys = bac.BacKeys.from_mrz_info(MRZ_INFO)
    assert bac.ifd_authenticate_data(keys, RND_IC, RND_IFD, K_IFD) == H(
        "72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F25F1448EEA8AD90A7")
    session = appendix_d_session()
    assert session.enc == H("979EC13B1CBFE9DCD01AB0FED307EAE5")
    assert session.mac == H("F1CB1F1FB5ADF208806B89DC579DC1F8")
    assert session.ssc == 0x887022120C06C226


def test_chip_side_answers_what_appendix_d_shows():
    keys = bac.BacKeys.from_mrz_info(MRZ_INFO)
    command = bac.ifd_authenticate_data(keys, RND_IC, RND_IFD, K_IFD)
    answer, session = bac.ic_answer(keys, command, RND_IC, k_ic=H("0B4F80323EB3191CB04970CB4052790B"))
    assert answer == CHIP_ANSWER
    assert session.enc == H("979EC13B1CBFE9DCD01AB0FED307EAE5")


def test_secure_messaging_apdus_of_appendix_d():
    s = appendix_d_session()
    assert protect_command(s, 0x00, 0xA4, 0x02, 0x0C, H("011E")) == H(
        "0CA4020C158709016375432908C044F68E08BF8B92D635FF24F800")
    assert unprotect_response(s, H("990290008E08FA855A5D4C50A8ED9000")) == (b"", 0x9000)
    assert protect_command(s, 0x00, 0xB0, 0x00, 0x00, le=4) == H("0CB000000D9701048E08ED6705417E96BA5500")
    assert unprotect_response(s, H("8709019FF0EC34F9922651990290008E08AD55CC17140B2DED9000")) == (
        H("60145F01"), 0x9000)
    assert protect_command(s, 0x00, 0xB0, 0x00, 0x04, le=0x12) == H("0CB000040D9701128E082EA28A70F3C7B53500")
    data, sw = unprotect_response(s, H("871901FB9235F4E4037F2327DCC8964F1F9B8C30F42C8E2FFF224A99029000"
                                       "8E08C8B2787EAEA07D749000"))
    assert (data, sw) == (H("04303130365F36063034303030305C026175"), 0x9000)
    assert s.ssc == 0x887022120C06C22C


def test_a_response_with_a_wrong_mac_is_refused():
    s = appendix_d_session()
    protect_command(s, 0x00, 0xA4, 0x02, 0x0C, H("011E"))
    with pytest.raises(SecureMessagingError):
        unprotect_response(s, H("990290008E08FA855A5D4C50A8EE9000"))


@pytest.mark.parametrize("response", [b"", b"\x90", H("6988"), H("99029000"), H("990290008E08FA85"),
                                      H("870901FFFF990290008E08FA855A5D4C50A8ED9000")])
def test_malformed_protected_responses_are_communication_errors(response):
    with pytest.raises(CardCommunicationError):
        unprotect_response(appendix_d_session(), response)


def test_chip_side_roundtrip_of_a_protected_command():
    ifd, ic = appendix_d_session(), appendix_d_session()
    apdu = protect_command(ifd, 0x00, 0xB0, 0x01, 0x02, le=0xDF)
    assert unprotect_command(ic, apdu) == (0x00, 0xB0, 0x01, 0x02, b"", 0xDF)
    answer = protect_response(ic, b"hello chip", 0x9000)
    assert unprotect_response(ifd, answer) == (b"hello chip", 0x9000)


def test_cccd_document_number_is_the_last_nine_digits():
    assert bac_document_number("001090012345") == "090012345"
    for bad in ("12345", "00109001234X", "0010900123456"):
        with pytest.raises(ValueError):
            bac_document_number(bad)


def test_retail_mac_differs_for_every_bit():
    key = os.urandom(16)
    assert bac.retail_mac(key, b"abc") != bac.retail_mac(key, b"abd")


# --- PACE: the ICAO 9303-11 worked example (ECDH generic mapping, brainpoolP256r1, AES-128, MRZ password) ---

from devices import pace  # noqa: E402

PACE_CARD_ACCESS = H("31143012060A04007F0007020204020202010202010D")
PACE_SCRIPT = [
    ("0022C1A412800A04007F0007020204020283010184010D", "9000"),
    ("10860000027C0000", "7C12801095A3A016522EE98D01E76CB6B98B42C39000"),
    ("10860000457C438141047ACF3EFC982EC45565A4B155129EFBC74650DCBFA6362D896FC70262E0C2CC5E544552DCB672521879"
     "9115B55C9BAA6D9F6BC3A9618E70C25AF71777A9C4922D00",
     "7C43824104824FBA91C9CBE26BEF53A0EBE7342A3BF178CEA9F45DE0B70AA601651FBA3F5730D8C879AAA9C9F73991E61B58F4D5"
     "2EB87A0A0C709A49DC63719363CCD13C549000"),
    ("10860000457C438341042DB7A64C0355044EC9DF190514C625CBA2CEA48754887122F3A5EF0D5EDD301C3556F3B3B186DF10B857"
     "B58F6A7EB80F20BA5DC7BE1D43D9BF850149FBB3646200",
     "7C438441049E880F842905B8B3181F7AF7CAA9F0EFB743847F44A306D2D28C1D9EC65DF6DB7764B22277A2EDDC3C265A9F018F9C"
     "B852E111B768B326904B59A0193776F0949000"),
    ("008600000C7C0A8508C2B0BD78D94BA86600", "7C0A86083ABB9674BCE93C089000"),
]
PACE_MRZ_INFO = mrz_key_string("T22000129", date(1964, 8, 12), date(2010, 10, 31))


def scripted(script):
    steps = iter(script)

    def transmit(apdu):
        command, response = next(steps)
        assert apdu == H(command)
        response = H(response)
        return response[:-2], int.from_bytes(response[-2:], "big")
    return transmit


def test_pace_card_access_and_password_key_of_the_worked_example():
    [info] = pace.parse_card_access(PACE_CARD_ACCESS)
    assert (info.parameter_id, info.key_length, info.version) == (13, 16, 2)
    password = pace.mrz_password(PACE_MRZ_INFO)
    assert password == H("7E2D2A41C74EA0B38CD36F863939BFA8E9032AAD")
    assert pace.password_key(password, 16) == H("89DED1B26624EC1E634C1989302849DD")


def test_pace_exchange_and_session_keys_of_the_worked_example():
    [info] = pace.parse_card_access(PACE_CARD_ACCESS)
    session = pace.run_pace(
        scripted(PACE_SCRIPT), info, pace.mrz_password(PACE_MRZ_INFO), pace.PASSWORD_MRZ,
        map_key=int("7F4EF07B9EA82FD78AD689B38D0BC78CF21F249D953BC46F4C6E19259C010F99", 16),
        eph_key=int("A73FB703AC1436A18E0CFA5ABB3F7BEC7A070E7A6788486BEE230C4A22762595", 16))
    assert session.enc == H("F5F0E35C0D7161EE6724EE513A0D9A7F")
    assert session.mac == H("FE251C7858B356B24514B3BD5F4297D1")
    assert (session.cipher, session.ssc) == ("aes", 0)


def test_pace_refused_token_is_a_refusal():
    [info] = pace.parse_card_access(PACE_CARD_ACCESS)
    script = PACE_SCRIPT[:-1] + [(PACE_SCRIPT[-1][0], "6300")]
    with pytest.raises(pace.PaceRefused):
        pace.run_pace(scripted(script), info, pace.mrz_password(PACE_MRZ_INFO), pace.PASSWORD_MRZ,
                      map_key=int("7F4EF07B9EA82FD78AD689B38D0BC78CF21F249D953BC46F4C6E19259C010F99", 16),
                      eph_key=int("A73FB703AC1436A18E0CFA5ABB3F7BEC7A070E7A6788486BEE230C4A22762595", 16))


@pytest.mark.parametrize("parameter_id", [12, 13])
def test_pace_reader_and_chip_agree_and_a_wrong_can_is_refused(parameter_id):
    [info] = pace.parse_card_access(pace.build_card_access(parameter_id))

    def chip_transmit(chip):
        def transmit(apdu):
            if apdu[1] == 0x22:
                return b"", 0x9000
            return chip.answer(apdu[5:5 + apdu[4]])
        return transmit

    chip = pace.PaceChip(info, b"012345")
    session = pace.run_pace(chip_transmit(chip), info, b"012345", pace.PASSWORD_CAN)
    assert session.enc == chip.session.enc and session.mac == chip.session.mac
    # AES secure messaging both ways
    apdu = protect_command(session, 0x00, 0xB0, 0x00, 0x10, le=0xDF)
    assert unprotect_command(chip.session, apdu) == (0x00, 0xB0, 0x00, 0x10, b"", 0xDF)
    answer = protect_response(chip.session, b"x" * 40, 0x9000)
    assert unprotect_response(session, answer) == (b"x" * 40, 0x9000)
    broken = bytearray(protect_response(chip.session, b"y", 0x9000))
    broken[3] ^= 1
    with pytest.raises(SecureMessagingError):
        unprotect_response(session, bytes(broken))
    with pytest.raises(pace.PaceRefused):
        pace.run_pace(chip_transmit(pace.PaceChip(info, b"012345")), info, b"999999", pace.PASSWORD_CAN)


def test_pace_rejects_a_public_key_off_the_curve():
    curve = pace.Curve(13)
    point = bytearray(curve.encode(curve.g * 5))
    point[-1] ^= 1
    with pytest.raises(CardCommunicationError):
        curve.decode(bytes(point))
