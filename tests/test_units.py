"""The administrative units since 1 July 2025 (kiosk/core/units.py) and the conversion of old addresses
(kiosk/core/address_convert.py): every province and a seeded sample of communes found by their names
without tone marks; the folding and search as properties; conversions from published facts."""
import random
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiosk.core import address_convert, units
from kiosk.core.address_convert import AMBIGUOUS, CERTAIN, FAILED

# NQ 202/2025/QH15 (docs: /work/shared/ONE-STOP.md "Administrative units (2025)"): 34 provinces, 3,321
# commune-level units: 2,621 xã, 687 phường, 13 đặc khu.
COUNTS = {"xã": 2621, "phường": 687, "đặc khu": 13}


def unaccented(text: str) -> str:
    """As typed on a keyboard without Vietnamese input: no tone marks, "đ" as "d", lower case."""
    return units.fold(text)


def all_communes():
    return [c for p in units.provinces() for c in units.communes_of(p.code)]


def test_the_list_is_the_one_of_the_resolution():
    assert len(units.provinces()) == 34
    kinds = [c.kind for c in all_communes()]
    assert {kind: kinds.count(kind) for kind in COUNTS} == COUNTS and len(kinds) == 3321
    assert units.data_version().startswith("vietnam-provinces 2025.")
    assert units.province("79").name == "Thành phố Hồ Chí Minh" and units.province("04").name == "Tỉnh Cao Bằng"
    assert units.commune("26743").name == "Phường Bến Thành" and units.commune("26743").province_code == "79"
    assert units.province("26743") is None and units.commune("79") is None and units.commune(None) is None


@pytest.mark.parametrize("province", units.provinces(), ids=lambda p: p.code)
def test_every_province_is_found_by_its_name_without_tone_marks(province):
    assert units.search_provinces(unaccented(province.short))[0] == province
    assert units.search_provinces(unaccented(province.name))[0] == province
    assert units.search_provinces(province.name.upper())[0] == province


def test_a_sample_of_communes_is_found_by_their_names_without_tone_marks():
    sample = random.Random(2025).sample(all_communes(), 300)
    for commune in sample:
        found = units.search_communes(commune.province_code, unaccented(commune.short))
        assert commune in found[:3], (commune, found[:3])  # "Tân Thành" and "Tân Thạnh" fold alike
        assert units.search_communes(commune.province_code, unaccented(commune.name))[0].short.casefold() \
            in {c.short.casefold() for c in found if unaccented(c.short) == unaccented(commune.short)}
        assert units.search_communes(commune.province_code, commune.name)[0] == commune  # with tone marks: exact


@pytest.mark.parametrize("query, province, first", [
    ("ben thanh", "79", "Phường Bến Thành"),
    ("BẾN THÀNH", "79", "Phường Bến Thành"),
    ("P. Bến Thành", "79", "Phường Bến Thành"),
    ("sai gon", "79", "Phường Sài Gòn"),
    ("hoan kiem", "01", "Phường Hoàn Kiếm"),
    ("dong da", "01", "Phường Đống Đa"),
    ("con dao", "79", "Đặc khu Côn Đảo"),
])
def test_communes_found_as_people_type_them(query, province, first):
    assert units.search_communes(province, query)[0].name == first


@pytest.mark.parametrize("query, name", [
    ("ho chi minh", "Thành phố Hồ Chí Minh"), ("TP. Hồ Chí Minh", "Thành phố Hồ Chí Minh"),
    ("tp hcm", "Thành phố Hồ Chí Minh"), ("da nang", "Thành phố Đà Nẵng"), ("dak lak", "Tỉnh Đắk Lắk"),
    ("hue", "Thành phố Huế"), ("tinh cao bang", "Tỉnh Cao Bằng"),
])
def test_provinces_found_as_people_type_them(query, name):
    assert units.search_provinces(query)[0].name == name


def test_results_are_ordered_and_bounded():
    found = units.search_communes("79", "an", limit=12)
    assert len(found) == 12
    assert all(unaccented(c.short).startswith("an") for c in found[:5])  # names that start so come first
    assert units.search_communes("79", "") == [] and units.search_communes("00", "an") == []
    assert units.search_provinces("") == [] and units.search_provinces("zzz") == []


# --- properties ---------------------------------------------------------------------------------------

names = st.sampled_from([c.name for c in all_communes()[::7]] + [p.name for p in units.provinces()])


@given(names)
def test_folding_removes_tone_marks_and_case_and_keeps_the_letters(name):
    folded = unaccented(name)
    assert folded == unaccented(folded) == unaccented(name.upper())
    assert folded.isascii() and folded == folded.lower()
    assert len(folded.replace(" ", "")) == len(name.replace(" ", ""))  # one letter for one letter


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(all_communes()[::3]), st.integers(min_value=1, max_value=6))
def test_any_name_without_tone_marks_or_a_start_of_it_finds_it(commune, length):
    query = unaccented(commune.short)
    found = units.search_communes(commune.province_code, query, limit=50)
    assert commune in found
    start = query[:length]
    found = units.search_communes(commune.province_code, start, limit=400)
    assert commune in found and all(len(found) <= 400 for _ in (0,))


@given(st.text(max_size=60))
def test_search_never_raises_on_any_text(text):
    assert len(units.search_provinces(text)) <= 10
    assert len(units.search_communes("79", text)) <= 20


def no_network(*args, **kwargs):
    raise AssertionError("the converter reached for the network")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=120), st.builds(
    lambda a, b, c: ", ".join((a, b, c)),
    st.sampled_from(["Số 1 Lê Lợi", "ấp 3", "", "12/3A"]),
    st.sampled_from(["Phường Bến Thành", "Xã Tân Thông Hội", "phuong 1", "Phường Tràng Tiền", "x"]),
    st.sampled_from(["Quận 1, TP. Hồ Chí Minh", "Huyện Củ Chi, TP HCM", "Quận Hoàn Kiếm, Hà Nội",
                     "Tỉnh Bình Dương", "Hà Giang"]))))
def test_the_converter_never_raises_and_names_real_units(text):
    original = socket.socket.connect
    socket.socket.connect = no_network  # an address never leaves the station
    try:
        result = address_convert.convert(text)
    finally:
        socket.socket.connect = original
    assert result.status in (CERTAIN, AMBIGUOUS, FAILED)
    if result.status == CERTAIN:
        assert units.commune(result.commune.code) == result.commune
        assert units.province(result.province.code) == result.province
        assert result.commune.province_code == result.province.code
    if result.status == AMBIGUOUS:
        assert len(result.communes) >= 2
        assert all(c.province_code == result.province.code for c in result.communes)


# --- known conversions (NQ 202/2025/QH15 and the resolutions on each province's communes) ----------------

@pytest.mark.parametrize("old, province", [
    ("Tỉnh Bình Dương", "Thành phố Hồ Chí Minh"),
    ("Tỉnh Bà Rịa - Vũng Tàu", "Thành phố Hồ Chí Minh"),
    ("Tỉnh Hà Giang", "Tỉnh Tuyên Quang"),
    ("Tỉnh Quảng Nam", "Thành phố Đà Nẵng"),
    ("Tỉnh Hải Dương", "Thành phố Hải Phòng"),
    ("Tỉnh Hậu Giang", "Thành phố Cần Thơ"),
    ("Tỉnh Kiên Giang", "Tỉnh An Giang"),
])
def test_merged_provinces(old, province):
    result = address_convert.convert(old)
    assert result.province.name == province and result.status == FAILED  # the commune is still to choose


@pytest.mark.parametrize("old, commune, street", [
    ("Số 12 Lê Lợi, Phường Bến Thành, Quận 1, TP. Hồ Chí Minh", "Phường Bến Thành", "Số 12 Lê Lợi"),
    ("so 12 le loi, phuong ben thanh, quan 1, tp ho chi minh", "Phường Bến Thành", "so 12 le loi"),
    ("12 Nguyễn Huệ, Phường Bến Nghé, Quận 1, TP.HCM", "Phường Sài Gòn", "12 Nguyễn Huệ"),
    ("Ấp 3, Xã Tân Thông Hội, Huyện Củ Chi, TP. Hồ Chí Minh", "Xã Củ Chi", "Ấp 3"),
    ("Phường Phú Cường, Thành phố Thủ Dầu Một, Tỉnh Bình Dương", "Phường Thủ Dầu Một", ""),
])
def test_known_conversions(old, commune, street):
    result = address_convert.convert(old)
    assert result.status == CERTAIN and result.commune.name == commune and result.street == street
    assert result.converted and result.old == old


def test_a_split_ward_is_ambiguous_with_its_new_communes():
    result = address_convert.convert("Số 1 Tràng Tiền, Phường Tràng Tiền, Quận Hoàn Kiếm, Hà Nội")
    assert result.status == AMBIGUOUS and result.commune is None
    assert {c.name for c in result.communes} == {"Phường Hoàn Kiếm", "Phường Cửa Nam"}
    assert result.street == "Số 1 Tràng Tiền"


def test_an_address_already_in_the_new_units_is_read_as_it_is():
    result = address_convert.convert("Số 5, Phường Bến Thành, Thành phố Hồ Chí Minh")
    assert result.status == CERTAIN and not result.converted and result.commune.code == "26743"
    assert address_convert.convert("Huyện Củ Chi").status == FAILED  # an old district is no new commune


@pytest.mark.parametrize("text", ["", "x", "12345", "a" * 600, "\x00\x01", None])
def test_what_is_no_address_fails(text):
    assert address_convert.convert(text).status == FAILED
