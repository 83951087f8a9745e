"""Answers checked by the published rules (issue 16): ID numbers, phone numbers, names, times, years.

The oracles are the published facts, typed here from their sources (not taken from kiosk.core.answers):
- ID numbers: Thông tư 59/2021/TT-BCA art. 7 (structure; century and sex digit) and the annex of
  Thông tư 07/2016/TT-BCA (province codes of birth registration), as republished by thuvienphapluat.vn
  ("Tra cứu mã 63 tỉnh thành trên thẻ Căn cước công dân").
- Mobile numbers: QĐ 798/QĐ-BTTTT (2018) and the carriers' announcements of the 11-to-10-digit change.
- Landlines: Thông tư 22/2014/TT-BTTTT (area codes in force from 2017).
- Names: names in public life ("H' Hen Niê", Miss Universe Vietnam 2017; "Ksor H'Bia", "Nay Y Blang",
  "Y Ngông Niê Kdăm"), as the issue quotes them.
"""
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk.core import answers
from kiosk.core.catalog import Procedure

from .wizard import answer, start

# Annex of Thông tư 07/2016/TT-BCA: the 63 codes, in the annex's order (Hà Nội 001 … Cà Mau 096).
PUBLISHED_PROVINCE_CODES = """
001 002 004 006 008 010 011 012 014 015 017 019 020 022 024 025 026 027 030 031 033 034 035 036 037 038
040 042 044 045 046 048 049 051 052 054 056 058 060 062 064 066 067 068 070 072 074 075 077 079 080 082
083 084 086 087 089 091 092 093 094 095 096""".split()
# Thông tư 59/2021/TT-BCA art. 7(2): the 4th digit by century of birth and sex.
PUBLISHED_CENTURY_DIGITS = {  # digit: (first year of the century, sex)
    0: (1900, "nam"), 1: (1900, "nu"), 2: (2000, "nam"), 3: (2000, "nu"), 4: (2100, "nam"), 5: (2100, "nu"),
    6: (2200, "nam"), 7: (2200, "nu"), 8: (2300, "nam"), 9: (2300, "nu"),
}
# QĐ 798/QĐ-BTTTT (2018): the new 10-digit prefixes by carrier, and the conversion table of old 11-digit ones.
PUBLISHED_MOBILE_PREFIXES = {
    "Viettel": "032 033 034 035 036 037 038 039 086 096 097 098",
    "VinaPhone": "081 082 083 084 085 088 091 094",
    "MobiFone": "070 076 077 078 079 089 090 093",
    "Vietnamobile": "052 056 058 092",
    "Gmobile": "059 099",
    "Itelecom": "087",
    "Reddi": "055",
}
MOBILE = [p for prefixes in PUBLISHED_MOBILE_PREFIXES.values() for p in prefixes.split()]
PUBLISHED_CONVERSION = {
    "0162": "032", "0163": "033", "0164": "034", "0165": "035", "0166": "036", "0167": "037", "0168": "038",
    "0169": "039",                                                         # Viettel
    "0120": "070", "0121": "079", "0122": "077", "0126": "076", "0128": "078",  # MobiFone
    "0123": "083", "0124": "084", "0125": "085", "0127": "081", "0129": "082",  # VinaPhone
    "0186": "056", "0188": "058",                                          # Vietnamobile
    "0199": "059",                                                         # Gmobile
}
# Thông tư 22/2014/TT-BTTTT: some area codes in force from 2017 (Hà Nội, TP HCM, Đà Nẵng, Phú Thọ, Cà Mau).
PUBLISHED_LANDLINES = ["024 3825 1234", "028 3829 5678", "0236 382 1234", "0210 384 1234", "0290 383 1234"]

ID_FIELD = {"name": "applicant_id_number", "type": "id_number", "label": {"vi": "Số định danh", "en": "ID"}}
DATE_FIELD = {"name": "applicant_birth_date", "type": "date", "date": "past",
              "label": {"vi": "Ngày sinh", "en": "Date of birth"}}
SEX_FIELD = {"name": "applicant_sex", "type": "choice", "label": {"vi": "Giới tính", "en": "Sex"},
             "options": [{"value": "nam", "vi": "Nam", "en": "Male"}, {"value": "nu", "vi": "Nữ", "en": "Female"}]}


def read(kind: str, text: str, **field) -> answers.Reading:
    return answers.read_field({"name": "x", "type": kind, "label": {"vi": "X", "en": "X"}, **field}, {"x": text})


def error_key(reading) -> str | None:
    return reading.error[0] if reading.error else None


# --- ID numbers ----------------------------------------------------------------------------------------

def test_every_published_province_code_is_known_and_no_other():
    assert len(PUBLISHED_PROVINCE_CODES) == 63
    assert set(answers.ID_PROVINCES) == set(PUBLISHED_PROVINCE_CODES)
    for code in PUBLISHED_PROVINCE_CODES:
        assert error_key(read("id_number", code + "090012345")) is None, code


@pytest.mark.parametrize("text,key", [
    ("000000000000", "error_id_province"),   # the issue's examples
    ("999999999999", "error_id_province"),
    ("003090012345", "error_id_province"),   # 003: no province has it
    ("097090012345", "error_id_province"),
    ("001990012345", "error_id_century"),    # 9: born in the 2300s
    (f"0012{(date.today().year + 1) % 100:02d}123456", "error_id_century"),  # 2: a man born next year
    ("12345", "error_id_number"),
    ("00109001234A", "error_id_number"),
    ("0010900123456", "error_id_number"),
])
def test_id_numbers_the_rules_refuse(text, key):
    assert error_key(read("id_number", text)) == key


@pytest.mark.parametrize("text", ["001090012345", "0010 9001 2345", "079190001234", "048203001234",
                                  "002085000001"])  # 002 Hà Giang: merged in 2025, numbers keep it
def test_id_numbers_the_rules_accept(text):
    reading = read("id_number", text)
    assert reading.error is None and reading.value == text.replace(" ", "")


@pytest.mark.parametrize("digit", range(10))
def test_century_digit_as_published(digit):
    first, sex = PUBLISHED_CENTURY_DIGITS[digit]
    assert answers.id_birth(f"001{digit}45012345") == (first + 45, sex)


def _proc(*fields) -> Procedure:
    return Procedure(slug="t", code="1.000000", version="1", category="ho-tich", name={"vi": "T", "en": "T"},
                     summary={"vi": "", "en": ""}, agency={"vi": "", "en": ""}, processing_days=0,
                     documents=[], pages=[{"id": f"p{i}", "fields": [f]} for i, f in enumerate(fields)])


def _published_id(province: str, born: date, sex: str, serial: int) -> str:
    """An ID number written by the published rule (art. 7 of Thông tư 59/2021/TT-BCA), digit by digit."""
    digit = next(d for d, (first, s) in PUBLISHED_CENTURY_DIGITS.items()
                 if first <= born.year < first + 100 and s == sex)
    return f"{province}{digit}{born.year % 100:02d}{serial:06d}"


PEOPLE = st.tuples(st.sampled_from(PUBLISHED_PROVINCE_CODES),
                   st.dates(min_value=date(1900, 1, 1), max_value=date.today()),
                   st.sampled_from(["nam", "nu"]), st.integers(0, 999_999))


@settings(max_examples=200, deadline=None)
@given(person=PEOPLE, other_digit=st.integers(0, 9))
def test_valid_ids_pass_and_a_changed_century_digit_is_caught(person, other_digit):
    province, born, sex, serial = person
    number = _published_id(province, born, sex, serial)
    proc = _proc(DATE_FIELD, SEX_FIELD, ID_FIELD)
    given_answers = {"applicant_birth_date": born.isoformat(), "applicant_sex": sex}
    reading = read("id_number", number)
    assert reading.error is None and reading.value == number
    assert answers.cross_check(proc, {**given_answers, "applicant_id_number": number}, proc.pages[2]) == {}
    if other_digit == int(number[3]):
        return
    changed = number[:3] + str(other_digit) + number[4:]
    reading = read("id_number", changed)
    if reading.error is None:  # the field alone accepts it: the birth date or the sex must catch it
        errors = answers.cross_check(proc, {**given_answers, "applicant_id_number": changed}, proc.pages[2])
        key = errors["applicant_id_number"][0]
        same_century = other_digit // 2 == int(number[3]) // 2
        assert key == ("error_id_sex_mismatch" if same_century else "error_id_year_mismatch")
        # The ID number came first: then the error is on the birth date, and names the ID question.
        errors = answers.cross_check(proc, {**given_answers, "applicant_id_number": changed}, proc.pages[0])
        if not same_century:
            assert errors["applicant_birth_date"] == ("error_birth_year_mismatch", {
                "id_year": answers.id_birth(changed)[0], "digit": changed[3], "yy": changed[4:6],
                "year": born.year, "other": ID_FIELD["label"]})


def test_a_year_of_birth_of_a_parent_is_checked_too():
    proc = _proc({"name": "mother_birth_year", "type": "year", "label": {"vi": "Năm sinh", "en": "Year"}},
                 {**ID_FIELD, "name": "mother_id_number"}, {**ID_FIELD, "name": "father_id_number"})
    given_answers = {"mother_birth_year": 1995, "mother_id_number": "001195012345",
                     "father_id_number": "001090012345"}  # the father's year is not asked: nothing to compare
    assert answers.cross_check(proc, given_answers, proc.pages[1]) == {}
    given_answers["mother_id_number"] = "001194012345"
    assert answers.cross_check(proc, given_answers, proc.pages[1])["mother_id_number"][0] == "error_id_year_mismatch"


def test_the_cross_check_names_the_other_question_in_plain_words(client, catalog):
    proc = catalog["dang-ky-thuong-tru"]  # birth date, then the ID number
    birth = next(p for p in proc.pages if p["fields"][0]["name"] == "applicant_birth_date")
    number = next(p for p in proc.pages if p["fields"][0]["name"] == "applicant_id_number")
    start(client, proc.slug)
    fields = {"applicant_birth_date__day": "15", "applicant_birth_date__month": "3",
              "applicant_birth_date__year": "1990"}
    assert answer(client, f"/p/{proc.slug}/q/{birth['id']}", fields).status_code == 303
    response = answer(client, f"/p/{proc.slug}/q/{number['id']}", {"applicant_id_number": "001099012345"})
    assert response.status_code == 422 and "<title>Lỗi:" in response.text
    text = response.text.replace("&#34;", '"')
    assert "sinh năm 1999" in text and "ghi năm 1990" in text and birth["fields"][0]["label"]["vi"] in text
    assert answer(client, f"/p/{proc.slug}/q/{number['id']}",
                  {"applicant_id_number": "001090012345"}).status_code == 303


# --- phone numbers -------------------------------------------------------------------------------------

@given(prefix=st.sampled_from(MOBILE), rest=st.integers(1, 9_999_999),
       style=st.sampled_from(["{p}{r}", "{p} {r3} {r4}", "{p}.{r3}.{r4}", "{p}-{r3}-{r4}", "+84 {p1} {r3} {r4}",
                              "+84{p1}{r}"]))
def test_numbers_with_published_mobile_prefixes_pass_in_any_common_writing(prefix, rest, style):
    r = f"{rest:07d}"
    text = style.format(p=prefix, r=r, r3=r[:3], r4=r[3:], p1=prefix[1:])
    reading = read("phone", text)
    assert reading.error is None and reading.value == prefix + r


UNPUBLISHED = [f"0{n:02d}" for n in range(100) if f"0{n:02d}" not in MOBILE]


@given(prefix=st.sampled_from(UNPUBLISHED), rest=st.integers(0, 9_999_999))
def test_ten_digit_numbers_with_other_prefixes_fail(prefix, rest):
    assert error_key(read("phone", f"{prefix}{rest:07d}")) == "error_phone"


@pytest.mark.parametrize("old,new", sorted(PUBLISHED_CONVERSION.items()))
def test_old_eleven_digit_mobiles_are_told_their_new_number(old, new):
    reading = read("phone", f"{old} 456 7890")
    assert reading.error == ("error_phone_old", {"old": f"{old}4567890", "new": f"{new}4 567 890"})


@pytest.mark.parametrize("text", ["0123456789", "0000000000", "04 3825 1234", "0912 345 67",
                                  "0912 345 6789", "+1 202 555 0100", "0200 123 4567", "0910 000 000"])
def test_impossible_numbers_fail(text):
    assert error_key(read("phone", text)) == "error_phone"


def test_the_issue_s_old_number_is_told_its_new_one():
    assert read("phone", "01234567890").error == ("error_phone_old", {"old": "01234567890", "new": "0834 567 890"})


@pytest.mark.parametrize("text", PUBLISHED_LANDLINES)
def test_landlines_after_2017_pass(text):
    reading = read("phone", text)
    assert reading.error is None and reading.value == text.replace(" ", "") and len(reading.value) == 11


# --- names ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["H' Hen Niê", "Ksor H'Bia", "Nay Y Blang", "Y Ngông Niê Kdăm", "Nguyễn Văn An",
                                  "Hoàng Thị Phương Thảo", "Lê-Nguyễn Minh Châu", "nguyễn văn an", "H’ Hen Niê",
                                  "Đặng Thị Ngọc Thịnh", "NGUYỄN VĂN THỬ"])
def test_published_names_pass_as_typed(text):
    reading = read("name", text)
    assert reading.error is None and reading.value == text  # the case and the apostrophe kept


@pytest.mark.parametrize("text,key", [("12345", "error_name_digits"), ("Nguyễn Văn An 2", "error_name_digits"),
                                      ("Nguyễn <b>", "error_name_symbols"), ("Nguyễn V. An", "error_name_symbols"),
                                      ("Trần_Bình", "error_name_symbols"), ("'An", "error_name_start"),
                                      ("- An", "error_name_start")])
def test_names_with_digits_or_symbols_fail(text, key):
    assert error_key(read("name", text)) == key


def test_a_name_s_spacing_is_normalised():
    assert read("name", "  H'   Hen \t Niê ").value == "H' Hen Niê"


VIETNAMESE_WORD = st.text(alphabet="aăâbcdđeêghiklmnoôơpqrstuưvxyáàảãạấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợ"
                                   "úùủũụứừửữựýỳỷỹỵAĂÂĐÊÔƠƯ", min_size=1, max_size=8)


@given(words=st.lists(VIETNAMESE_WORD, min_size=1, max_size=5))
def test_names_of_letters_pass_and_read_back(words):
    text = " ".join(words)
    reading = read("name", text)
    assert reading.error is None and reading.value == text
    assert read("name", answers.shown_from_value({"type": "name"}, reading.value)).value == text


# --- times ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("9h30", "09:30"), ("9 giờ 30", "09:30"), ("9g30", "09:30"),
                                        ("09:30", "09:30"), ("9:30", "09:30"), ("21h", "21:00"),
                                        ("9 giờ", "09:00"), ("9 giờ 30 phút", "09:30"), ("9H30", "09:30"),
                                        ("0h05", "00:05"), ("23:59", "23:59")])
def test_common_time_forms(text, value):
    reading = read("time", text)
    assert reading.error is None and reading.value == value


@pytest.mark.parametrize("text,key", [("25:00", "error_time_range"), ("24h", "error_time_range"),
                                      ("9h60", "error_time_range"), ("9", "error_time"), ("chín giờ", "error_time"),
                                      ("9h30 sáng mai", "error_time")])
def test_impossible_times_fail(text, key):
    assert error_key(read("time", text)) == key


@given(hour=st.integers(0, 23), minute=st.integers(0, 59),
       form=st.sampled_from(["{h}h{m:02d}", "{h} giờ {m}", "{h}g{m}", "{h:02d}:{m:02d}", "{h}:{m:02d}",
                             "{h} giờ {m} phút"]))
def test_time_forms_round_trip(hour, minute, form):
    reading = read("time", form.format(h=hour, m=minute))
    assert reading.error is None and reading.value == f"{hour:02d}:{minute:02d}"
    assert read("time", answers.shown_from_value({"type": "time"}, reading.value)).value == reading.value


# --- years and dates -----------------------------------------------------------------------------------

@pytest.mark.parametrize("short,example", [("50", 1950), ("90", 1990), ("5", 2005)])
def test_a_two_digit_year_asks_for_four(short, example):
    assert read("year", short, date="past").error == ("error_year_short", {"example": example})
    reading = answers.read_field(DATE_FIELD, {"applicant_birth_date__day": "1", "applicant_birth_date__month": "2",
                                              "applicant_birth_date__year": short})
    assert reading.error == ("error_year_short", {"example": example})


def test_date_messages_say_what_is_wrong():
    def date_error(day, month, year):
        return answers.read_field(DATE_FIELD, {"applicant_birth_date__day": day, "applicant_birth_date__month": month,
                                               "applicant_birth_date__year": year}).error
    assert date_error("31", "2", "1990") == ("error_date_day", {"month": 2, "year": 1990, "days": 28})
    assert date_error("30", "2", "2024") == ("error_date_day", {"month": 2, "year": 2024, "days": 29})
    assert date_error("1", "13", "1990") == ("error_date_month", {})
    assert date_error("1", "1", "1850") == ("error_date_year_range", {})


def test_choice_and_text_errors_name_the_question(app):
    from kiosk import i18n
    from kiosk.citizen import _error_text
    with app.test_request_context():
        assert _error_text(read("choice", "", options=SEX_FIELD["options"]).error, SEX_FIELD) == "Hãy chọn: Giới tính"
        assert _error_text(read("text", "").error, DATE_FIELD) == "Hãy điền: Ngày sinh"
        assert i18n.say("error_year_short", "vi", example=1950) == "Hãy ghi năm đủ 4 chữ số, ví dụ 1950"
