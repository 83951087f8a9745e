"""DG13 as real CCCD cards lay it out (6D { 30 { version, OID, SET OF fields } }), and the flat layout.

The test bytes are made with asn1crypto (an encoder that is not ours) or written by hand from the
layout public readers decoded from real cards, so a mistake shared by our parser and our builder cannot
hide. Every person here is made up."""
import unicodedata
from datetime import date

import pytest
from asn1crypto import core
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import cccd
from devices.card_errors import CardDataError

PROPERTY = settings(max_examples=200, deadline=None)
OID = "1.0.10646.1.0.8"
CATALOG = set(cccd.DG13_FIELDS.values()) | {"father_name", "mother_name"}


class Elements(core.SequenceOf):
    """A SEQUENCE of anything: a field ``{ INTEGER n, value... }`` or a nested value SEQUENCE."""
    _child_spec = core.Any


class FieldSet(core.SetOf):
    _child_spec = Elements


class Header(core.Sequence):
    _fields = [("version", core.Integer), ("oid", core.ObjectIdentifier), ("fields", FieldSet)]


class FlatFields(core.SequenceOf):
    _child_spec = Elements


def utf8(text):
    return core.UTF8String(text)


def field(number, *values):
    return Elements([core.Integer(number), *values])


def nested(*values):
    return Elements(list(values))


def wrapped(fields, *, version=1, oid=OID, der_order=False) -> bytes:
    """6D { 30 { INTEGER version, OID, SET OF fields } }. asn1crypto sorts a SET OF by encoding (DER);
    without der_order the fields stay in the order given, as a card may write them."""
    if der_order:
        field_set = FieldSet(list(fields))
    else:
        field_set = FieldSet(contents=b"".join(f.dump() for f in fields))
    return Header({"version": version, "oid": oid, "fields": field_set},
                  explicit=("application", 13)).dump()


def flat(fields) -> bytes:
    return FlatFields(list(fields), implicit=("application", 13)).dump()


# A realistic card, made up: every field 1-15, and a 16-character hex string in the unconfirmed 16.
CARD = [
    field(1, utf8("038092004567")),
    field(2, utf8("Trần Thị Thu Hương")),
    field(3, utf8("12/08/1992")),
    field(4, utf8("Nữ")),
    field(5, utf8("Việt Nam")),
    field(6, utf8("Kinh")),
    field(7, utf8("Không")),
    field(8, utf8("Xã Quảng Phú, Huyện Quảng Xương, Tỉnh Thanh Hóa")),
    field(9, utf8("Số 18 Ngõ 52 Phố Tô Vĩnh Diện, Phường Khương Trung, Quận Thanh Xuân, Thành phố Hà Nội")),
    field(10, utf8("Nốt ruồi C:2cm trên trước đầu lông mày phải")),
    field(11, utf8("10/07/2021")),
    field(12, utf8("12/08/2032")),
    field(13, nested(utf8("Trần Văn Hùng"), utf8("Lê Thị Lan"))),
    field(14, nested(utf8("Phạm Minh Tuấn"))),
    field(15, utf8("173456789")),
    field(16, utf8("3F8A0C21D94B7E65")),
]
CARD_FIELDS = {
    "id_number": "038092004567", "full_name": "Trần Thị Thu Hương", "birth_date": "1992-08-12", "sex": "Nữ",
    "nationality": "Việt Nam", "ethnicity": "Kinh", "religion": "Không",
    "place_of_origin": "Xã Quảng Phú, Huyện Quảng Xương, Tỉnh Thanh Hóa",
    "residence": "Số 18 Ngõ 52 Phố Tô Vĩnh Diện, Phường Khương Trung, Quận Thanh Xuân, Thành phố Hà Nội",
    "identifying_marks": "Nốt ruồi C:2cm trên trước đầu lông mày phải", "issue_date": "2021-07-10",
    "expiry_date": "2032-08-12", "father_name": "Trần Văn Hùng", "mother_name": "Lê Thị Lan",
    "spouse_name": "Phạm Minh Tuấn", "old_id_number": "173456789",
}


# --- layouts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("der_order", [False, True])
def test_a_realistic_wrapped_card_gives_every_field(der_order):
    data = wrapped(CARD, der_order=der_order)
    assert 300 <= len(data) <= 600  # longer than one 256-byte READ BINARY, as real DG13s are
    assert data[:2] == b"\x6D\x82" and bytes.fromhex("020101060628D316010008") in data
    dg13 = cccd.parse_dg13(data)
    assert dg13.layout == "wrapped"
    assert dg13.fields == CARD_FIELDS
    assert dg13.unreadable == [] and dg13.no_expiry is False
    assert dg13.unknown == {16: utf8("3F8A0C21D94B7E65").dump()}  # unconfirmed: kept raw, never guessed


def test_the_wrapped_layout_written_by_hand_from_the_published_bytes():
    fields = (bytes.fromhex("3011 020101 0C0C") + b"001090012345"
              + bytes.fromhex("300A 020104 0C05") + "Nam".encode().ljust(5)  # trailing spaces trimmed
              + bytes.fromhex("3009 02010D 3004 0C00 0C00"))                   # both parents empty
    body = bytes.fromhex("020101 060628D316010008") + bytes([0x31, len(fields)]) + fields
    data = bytes([0x6D, len(body) + 2, 0x30, len(body)]) + body
    dg13 = cccd.parse_dg13(data)
    assert (dg13.layout, dg13.fields, dg13.unreadable) == ("wrapped", {"id_number": "001090012345", "sex": "Nam"}, [])


def test_the_flat_layout():
    dg13 = cccd.parse_dg13(flat(CARD))
    assert dg13.layout == "flat"
    assert dg13.fields == CARD_FIELDS and dg13.unreadable == []


def test_another_version_or_oid_is_tolerated():
    dg13 = cccd.parse_dg13(wrapped(CARD[:3], version=2, oid="1.2.840.113549.1.7.1"))
    assert dg13.layout == "wrapped" and dg13.fields["birth_date"] == "1992-08-12"


def test_a_header_without_its_set_of_fields_is_a_data_error():
    header = Elements([core.Integer(1), core.ObjectIdentifier(OID)], explicit=("application", 13)).dump()
    with pytest.raises(CardDataError):
        cccd.parse_dg13(header)


def test_fields_in_a_plain_sequence_without_the_header_are_not_guessed():
    # Neither layout: the old parser walked into any SEQUENCE; this one says the data is not a DG13.
    data = Elements([Elements(CARD[:2])], explicit=("application", 13)).dump()
    with pytest.raises(CardDataError):
        cccd.parse_dg13(data)


@pytest.mark.parametrize("data", [b"", b"\x6D", b"\x6D\x05\x30", b"\x61\x03\x02\x01\x01",
                                  b"\x6D\x84\xFF\xFF\xFF\xFF"])
def test_bytes_that_are_not_a_dg13_are_a_data_error(data):
    with pytest.raises(CardDataError):
        cccd.parse_dg13(data)


def test_a_truncated_card_is_a_data_error():
    data = wrapped(CARD)
    for cut in (1, 2, 4, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(CardDataError):
            cccd.parse_dg13(data[:cut])


# --- fields by number --------------------------------------------------------------------------------

def test_missing_fields_are_absent_not_unreadable():
    dg13 = cccd.parse_dg13(wrapped([CARD[0], CARD[2], CARD[11]]))
    assert dg13.fields == {"id_number": "038092004567", "birth_date": "1992-08-12", "expiry_date": "2032-08-12"}
    assert dg13.unreadable == [] and dg13.unknown == {}


@pytest.mark.parametrize("layout", [wrapped, flat])
def test_reordered_fields_are_read_by_number(layout):
    dg13 = cccd.parse_dg13(layout(list(reversed(CARD))))
    assert dg13.fields == CARD_FIELDS


def test_unknown_field_numbers_are_kept_raw():
    odd_length = bytes.fromhex("0C8103") + b"abc"  # a long-form length DER would not use: kept as is
    fields = [CARD[0],
              field(16, utf8("3F8A0C21D94B7E65")),
              field(20, core.Integer(7), core.OctetString(b"\x00\xFF")),
              field(300, nested(utf8("a"), core.Null())),
              Elements(contents=core.Integer(42).dump() + odd_length),
              field(21)]
    dg13 = cccd.parse_dg13(wrapped(fields))
    assert dg13.fields == {"id_number": "038092004567"}
    assert dg13.unknown == {
        16: utf8("3F8A0C21D94B7E65").dump(),
        20: core.Integer(7).dump() + core.OctetString(b"\x00\xFF").dump(),
        300: nested(utf8("a"), core.Null()).dump(),
        42: odd_length,
        21: b"",
    }


def test_a_9_or_12_digit_field_16_is_not_taken_as_the_old_number():
    dg13 = cccd.parse_dg13(wrapped([CARD[0], field(16, utf8("012345678"))]))
    assert "old_id_number" not in dg13.fields
    assert dg13.unknown == {16: utf8("012345678").dump()}


def test_printable_strings():
    fields = [field(1, core.PrintableString("001090012345")), field(2, core.PrintableString("NGUYEN VAN A")),
              field(3, core.PrintableString("01/02/1980")), field(4, core.PrintableString("NAM")),
              field(13, nested(core.PrintableString("NGUYEN VAN B"), core.PrintableString("LE THI C"))),
              field(15, core.PrintableString("012345678"))]
    dg13 = cccd.parse_dg13(wrapped(fields))
    assert dg13.fields == {"id_number": "001090012345", "full_name": "NGUYEN VAN A", "birth_date": "1980-02-01",
                           "sex": "Nam", "father_name": "NGUYEN VAN B", "mother_name": "LE THI C",
                           "old_id_number": "012345678"}


def test_other_string_types_are_read():
    fields = [field(2, core.BMPString("Đỗ Thị Ánh")), field(5, core.IA5String("Viet Nam")),
              field(6, core.VisibleString("Kinh")), field(7, core.OctetString("Phật giáo".encode()))]
    dg13 = cccd.parse_dg13(wrapped(fields))
    assert dg13.fields == {"full_name": "Đỗ Thị Ánh", "nationality": "Viet Nam", "ethnicity": "Kinh",
                           "religion": "Phật giáo"}


@pytest.mark.parametrize("parents, expected", [
    (nested(utf8(""), utf8("Lê Thị Lan")), {"mother_name": "Lê Thị Lan"}),
    (nested(utf8("Trần Văn Hùng"), utf8("")), {"father_name": "Trần Văn Hùng"}),
    (nested(utf8(""), utf8("")), {}),
    (nested(utf8("Trần Văn Hùng")), {"father_name": "Trần Văn Hùng"}),
    (nested(), {}),
    (nested(core.Null(), utf8("Lê Thị Lan")), {"mother_name": "Lê Thị Lan"}),
])
def test_parents_either_of_whom_may_be_empty_or_missing(parents, expected):
    dg13 = cccd.parse_dg13(wrapped([CARD[0], field(13, parents)]))
    assert {k: v for k, v in dg13.fields.items() if k != "id_number"} == expected
    assert dg13.unreadable == []


def test_parents_and_spouse_without_the_nested_sequence():
    dg13 = cccd.parse_dg13(wrapped([field(13, utf8("Trần Văn Hùng"), utf8("Lê Thị Lan")),
                                    field(14, utf8("Phạm Minh Tuấn"))]))
    assert dg13.fields == {"father_name": "Trần Văn Hùng", "mother_name": "Lê Thị Lan",
                           "spouse_name": "Phạm Minh Tuấn"}


@pytest.mark.parametrize("spouse", [field(14, nested(utf8(""))), field(14, nested()), field(14, utf8("")),
                                    field(14)])
def test_an_empty_spouse_is_absent(spouse):
    dg13 = cccd.parse_dg13(wrapped([CARD[1], spouse]))
    assert dg13.fields == {"full_name": "Trần Thị Thu Hương"} and dg13.unreadable == []


@pytest.mark.parametrize("text", ["Không thời hạn", "KHÔNG THỜI HẠN", "không  thời hạn ",
                                  unicodedata.normalize("NFD", "Không thời hạn"), "Khong thoi han"])
def test_no_expiry(text):
    dg13 = cccd.parse_dg13(wrapped([CARD[0], field(12, utf8(text))]))
    assert dg13.no_expiry is True
    assert "expiry_date" not in dg13.fields and dg13.unreadable == []


def test_no_expiry_in_a_printable_string():
    dg13 = cccd.parse_dg13(flat([field(12, core.PrintableString("KHONG THOI HAN"))]))
    assert dg13.no_expiry is True and dg13.fields == {}


# --- values without their field's shape --------------------------------------------------------------

def bad_utf8():
    return core.UTF8String(contents=b"Nguy\xC3\x28n")


@pytest.mark.parametrize("number, value, name", [
    (1, utf8("Trần Thị Thu Hương"), "id_number"),   # a name where the number belongs
    (1, utf8("03809200456"), "id_number"),
    (1, utf8("0380920045678"), "id_number"),
    (1, utf8("０３８０９２００４５６７"), "id_number"),  # full-width digits
    (1, core.Integer(38092004567), "id_number"),
    (1, utf8(""), "id_number"),
    (2, utf8("038092004567"), "full_name"),
    (2, utf8("Trần Thị 2"), "full_name"),
    (2, utf8("A" * 201), "full_name"),
    (2, utf8(""), "full_name"),
    (2, bad_utf8(), "full_name"),
    (2, core.PrintableString(contents="Hương".encode()), "full_name"),
    (2, utf8("Trần\x00Thị"), "full_name"),
    (2, utf8("Trần \ufffd"), "full_name"),
    (2, nested(utf8("Trần Thị Thu Hương")), "full_name"),
    (3, utf8("31/02/1992"), "birth_date"),
    (3, utf8("1992-08-12"), "birth_date"),
    (3, utf8("12/08/92"), "birth_date"),
    (4, utf8("Male"), "sex"),
    (4, utf8("N"), "sex"),
    (9, utf8("x" * 501), "residence"),
    (11, utf8("hôm nay"), "issue_date"),
    (12, utf8("2032"), "expiry_date"),
    (12, utf8("Vô thời hạn?"), "expiry_date"),
    (12, utf8(""), "expiry_date"),
    (13, nested(utf8("Trần Văn 1"), utf8("Lê Thị Lan")), "father_name"),
    (14, nested(utf8("P" * 201)), "spouse_name"),
    (15, utf8("12345"), "old_id_number"),
    (15, utf8("Trần Văn Hùng"), "old_id_number"),
])
def test_a_value_of_the_wrong_shape_is_unreadable_and_not_in_fields(number, value, name):
    others = [f for f in CARD if f[0].native != number]
    dg13 = cccd.parse_dg13(wrapped([field(number, value)] + others))
    assert dg13.unreadable == [name]
    assert name not in dg13.fields
    assert dg13.fields == {k: v for k, v in CARD_FIELDS.items() if k != name}


def test_several_values_in_a_one_value_field_are_unreadable():
    dg13 = cccd.parse_dg13(wrapped([field(2, utf8("Trần"), utf8("Hương")), CARD[0]]))
    assert dg13.unreadable == ["full_name"] and dg13.fields == {"id_number": "038092004567"}


def test_three_parents_are_unreadable():
    dg13 = cccd.parse_dg13(wrapped([field(13, nested(utf8("A"), utf8("B"), utf8("C")))]))
    assert dg13.unreadable == ["father_name", "mother_name"] and dg13.fields == {}


def test_a_field_number_twice_is_unreadable():
    fields = CARD + [field(1, utf8("001090012345")), field(13, nested(utf8("X"), utf8("Y")))]
    dg13 = cccd.parse_dg13(wrapped(fields))
    assert dg13.unreadable == ["id_number", "father_name", "mother_name"]
    assert not {"id_number", "father_name", "mother_name"} & set(dg13.fields)
    assert dg13.fields["full_name"] == "Trần Thị Thu Hương"


def test_sex_tolerates_case_and_missing_diacritics():
    for text, expected in [("nam", "Nam"), ("NỮ", "Nữ"), ("nu", "Nữ"), (unicodedata.normalize("NFD", "Nữ"), "Nữ")]:
        assert cccd.parse_dg13(flat([field(4, utf8(text))])).fields == {"sex": expected}


def test_the_repr_shows_no_personal_data():
    dg13 = cccd.parse_dg13(wrapped(CARD))
    text = repr(dg13) + str(dg13)
    assert "038092004567" not in text and "Hương" not in text and "3F8A" not in text
    assert "wrapped" in text


# --- our builder, checked by an independent decoder --------------------------------------------------

PERSON = {**CARD_FIELDS, "unknown": {16: utf8("3F8A0C21D94B7E65").dump()}}


def test_build_dg13_decodes_with_asn1crypto_to_the_published_structure():
    data = cccd.build_dg13(PERSON)
    assert bytes.fromhex("30 82") in data[:6]
    header = Header.load(data, explicit=("application", 13))
    assert header["version"].native == 1 and header["oid"].dotted == OID
    decoded = {fld[0].parsed.native: [v.parsed for v in list(fld)[1:]] for fld in header["fields"]}
    assert sorted(decoded) == list(range(1, 17))
    assert all(isinstance(values[0], core.UTF8String) for n, values in decoded.items() if n not in (13, 14))
    assert decoded[1][0].native == "038092004567"
    assert decoded[3][0].native == "12/08/1992" and decoded[12][0].native == "12/08/2032"
    assert isinstance(decoded[13][0], core.Sequence)
    assert decoded[13][0].native == {"0": "Trần Văn Hùng", "1": "Lê Thị Lan"}
    assert decoded[14][0].native == {"0": "Phạm Minh Tuấn"}
    assert decoded[16][0].native == "3F8A0C21D94B7E65"
    assert 300 <= len(data) <= 600


def test_build_dg13_flat_and_printable():
    person = {"id_number": "001090012345", "full_name": "NGUYEN VAN A", "birth_date": date(1980, 2, 1)}
    data = cccd.build_dg13(person, layout="flat", string_type=0x13)
    decoded = FlatFields.load(data, implicit=("application", 13))
    values = {fld[0].parsed.native: fld[1].parsed for fld in decoded}
    assert all(isinstance(v, core.PrintableString) for v in values.values())
    assert {n: v.native for n, v in values.items()} == {1: "001090012345", 2: "NGUYEN VAN A", 3: "01/02/1980"}
    assert cccd.parse_dg13(data).layout == "flat"


def test_build_dg13_no_expiry():
    data = cccd.build_dg13({"id_number": "001090012345", "expiry_date": "2030-01-01", "no_expiry": True})
    header = Header.load(data, explicit=("application", 13))
    assert [fld[1].parsed.native for fld in header["fields"] if fld[0].parsed.native == 12] == ["Không thời hạn"]
    dg13 = cccd.parse_dg13(data)
    assert dg13.no_expiry and "expiry_date" not in dg13.fields


def test_build_dg13_refuses_what_it_cannot_write():
    with pytest.raises(ValueError):
        cccd.build_dg13({"full_name": "Hương"}, string_type=0x13)
    with pytest.raises(ValueError):
        cccd.build_dg13({}, layout="nested")
    with pytest.raises(ValueError):
        cccd.build_dg13({}, string_type=0x02)


@pytest.mark.parametrize("layout", ["wrapped", "flat"])
def test_build_profile_lays_dg13_out_as_asked(layout):
    from devices.card_profile import SYNTHETIC_PERSON, build_profile, make_test_pki
    profile = build_profile(pki=make_test_pki(), with_photo=False, pace_parameter_id=None, dg13_layout=layout)
    dg13 = cccd.parse_dg13(bytes.fromhex(profile["files"][f"{cccd.EF_DG13:04X}"]))
    assert dg13.layout == layout and dg13.fields == SYNTHETIC_PERSON and dg13.unreadable == []


# --- properties -------------------------------------------------------------------------------------

VI_LOWER = "aăâbcdđeêghiklmnoôơpqrstuưvxyàáảãạằắẳẵặầấẩẫậèéẻẽẹềếểễệìíỉĩịòóỏõọồốổỗộờớởỡợùúủũụừứửữựỳýỷỹỵ"
VI_LETTERS = VI_LOWER + VI_LOWER.upper()
word = st.text(VI_LETTERS, min_size=1, max_size=8)
names = st.lists(word, min_size=1, max_size=5).map(" ".join)
texts = st.lists(st.text(VI_LETTERS + "0123456789,./-:", min_size=1, max_size=12), min_size=1, max_size=8
                 ).map(" ".join)
card_dates = st.dates(date(1900, 1, 1), date(2099, 12, 31))
digits = st.text("0123456789", min_size=12, max_size=12)
old_numbers = st.one_of(st.text("0123456789", min_size=9, max_size=9), digits)

# catalog name -> (card text, expected value)
SOURCES = {
    "id_number": digits.map(lambda d: (d, d)),
    "full_name": names.map(lambda n: (n, n)),
    "birth_date": card_dates.map(lambda d: (d.strftime("%d/%m/%Y"), d.isoformat())),
    "sex": st.sampled_from([("Nam", "Nam"), ("Nữ", "Nữ"), ("NAM", "Nam"), ("nữ", "Nữ")]),
    "nationality": texts.map(lambda t: (t, t)),
    "ethnicity": texts.map(lambda t: (t, t)),
    "religion": texts.map(lambda t: (t, t)),
    "place_of_origin": texts.map(lambda t: (t, t)),
    "residence": texts.map(lambda t: (t, t)),
    "identifying_marks": texts.map(lambda t: (t, t)),
    "issue_date": card_dates.map(lambda d: (d.strftime("%d/%m/%Y"), d.isoformat())),
    "expiry_date": st.one_of(card_dates.map(lambda d: (d.strftime("%d/%m/%Y"), d.isoformat())),
                             st.sampled_from([("Không thời hạn", None), ("KHONG THOI HAN", None)])),
    "old_id_number": old_numbers.map(lambda d: (d, d)),
}
NUMBERS = {name: number for number, name in cccd.DG13_FIELDS.items()}


def string_of(draw, text):
    kinds = [core.UTF8String, core.BMPString] + ([core.PrintableString] if text.isascii() else [])
    return draw(st.sampled_from(kinds))(text)


@st.composite
def cards(draw):
    """(DG13 bytes from asn1crypto, expected fields, expected no_expiry, expected unknown, layout)."""
    fields, expected, no_expiry = [], {}, False
    for name in draw(st.sets(st.sampled_from(sorted(SOURCES)))):
        text, value = draw(SOURCES[name])
        fields.append(field(NUMBERS[name], string_of(draw, text)))
        if value is None:
            no_expiry = True
        else:
            expected[name] = value
    if draw(st.booleans()):
        father, mother = draw(st.one_of(st.just(""), names)), draw(st.one_of(st.just(""), names))
        values = [string_of(draw, father), string_of(draw, mother)]
        fields.append(field(13, nested(*values)) if draw(st.booleans()) else field(13, *values))
        expected.update({k: v for k, v in (("father_name", father), ("mother_name", mother)) if v})
    if draw(st.booleans()):
        spouse = draw(st.one_of(st.just(""), names))
        value = string_of(draw, spouse)
        fields.append(field(14, nested(value)) if draw(st.booleans()) else field(14, value))
        if spouse:
            expected["spouse_name"] = spouse
    unknown = {}
    for number in draw(st.sets(st.integers(16, 400), max_size=3)):
        value = draw(st.sampled_from([utf8("3F8A0C21D94B7E65"), core.Integer(number), core.OctetString(b"\x01"),
                                      nested(utf8("x"), core.Null())]))
        fields.append(field(number, value))
        unknown[number] = value.dump()
    fields = draw(st.permutations(fields))
    layout = draw(st.sampled_from(["wrapped", "flat"]))
    data = wrapped(fields, der_order=draw(st.booleans())) if layout == "wrapped" else flat(fields)
    return data, expected, no_expiry, unknown, layout


@PROPERTY
@given(cards())
def test_every_field_is_its_own_source_value(card):
    data, expected, no_expiry, unknown, layout = card
    dg13 = cccd.parse_dg13(data)
    assert dg13.fields == expected  # each name holds its own value, never another field's
    assert dg13.no_expiry is no_expiry
    assert dg13.unknown == unknown
    assert dg13.unreadable == []
    assert dg13.layout == layout


def check_invariants(dg13):
    assert isinstance(dg13, cccd.Dg13)
    assert set(dg13.fields) <= CATALOG
    assert set(dg13.unreadable) <= CATALOG and not set(dg13.unreadable) & set(dg13.fields)
    assert dg13.layout in ("wrapped", "flat")
    for name, value in dg13.fields.items():
        assert isinstance(value, str) and value and value == unicodedata.normalize("NFC", value)
        assert "\ufffd" not in value and not any(unicodedata.category(c) == "Cc" for c in value)
    if "id_number" in dg13.fields:
        assert len(dg13.fields["id_number"]) == 12 and dg13.fields["id_number"].isdigit()
    for name in cccd.DATE_FIELDS:
        if name in dg13.fields:
            date.fromisoformat(dg13.fields[name])
    assert dg13.fields.get("sex", "Nam") in ("Nam", "Nữ")
    assert not (dg13.no_expiry and "expiry_date" in dg13.fields)
    assert all(isinstance(k, int) and not 1 <= k <= 15 and isinstance(v, bytes) for k, v in dg13.unknown.items())


mutations = st.lists(st.tuples(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]),
                               st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(cards(), mutations)
def test_mutated_bytes_give_a_dg13_or_a_data_error(card, changes):
    data = bytearray(card[0])
    for kind, position, byte in changes:
        if not data:
            break
        i = position % len(data)
        if kind == "flip":
            data[i] ^= 1 << (byte % 8)
        elif kind == "set":
            data[i] = byte
        elif kind == "delete":
            del data[i]
        elif kind == "insert":
            data.insert(i, byte)
        else:
            del data[i:]
    try:
        dg13 = cccd.parse_dg13(bytes(data))
    except CardDataError:
        return
    check_invariants(dg13)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_field_body_gives_a_dg13_or_a_data_error(body):
    # Random bytes inside a valid field SEQUENCE of each known number, in both layouts.
    for number in (1, 2, 3, 12, 13, 14, 15, 16):
        entry = Elements(contents=core.Integer(number).dump() + body)
        for data in (wrapped([entry]), flat([entry])):
            try:
                dg13 = cccd.parse_dg13(data)
            except CardDataError:
                continue
            check_invariants(dg13)
