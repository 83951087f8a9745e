"""The start page's search against phrases citizens actually type: everyday names ("giấy chứng tử",
"bằng lái", "hộ khẩu"), the way they ask ("làm …", "xin …", "tôi muốn …"), with or without tone marks, with
a wrong tone mark, "lí" for "lý". The words are data in each procedure's `keywords` (docs/procedures.md);
`kiosk/citizen.py` `_search` folds tone marks, lets filler words go unmatched and ranks the best first."""
import re

import pytest

from kiosk import citizen

KHAI_SINH = "dang-ky-khai-sinh"
KHAI_TU = "dang-ky-khai-tu"
THUONG_TRU = "dang-ky-thuong-tru"
BANG_LAI = "doi-giay-phep-lai-xe"
LY_LICH = "cap-phieu-ly-lich-tu-phap"
DOC_THAN = "xac-nhan-tinh-trang-hon-nhan"

# (what the citizen types, the procedure that must come first)
PHRASES = [
    # a death: the everyday name is "giấy chứng tử", the law's is "trích lục khai tử"
    ("giấy chứng tử", KHAI_TU),
    ("giay chung tu", KHAI_TU),
    ("làm giấy chứng tử", KHAI_TU),
    ("lam giay chung tu cho bo", KHAI_TU),
    ("giấy chứng tữ", KHAI_TU),                     # wrong tone mark
    ("xin giấy chứng tử cho mẹ", KHAI_TU),
    ("khai tử cho mẹ", KHAI_TU),
    ("bố tôi mới mất", KHAI_TU),
    ("nhà tôi có người mất", KHAI_TU),
    ("người nhà qua đời", KHAI_TU),
    ("giấy báo tử", KHAI_TU),
    ("khai tu", KHAI_TU),
    # a birth
    ("làm giấy khai sinh", KHAI_SINH),
    ("lam giay khai sinh cho con", KHAI_SINH),
    ("giấy khai sanh", KHAI_SINH),                  # the southern "sanh"
    ("khai sinh cho bé", KHAI_SINH),
    ("con mới đẻ", KHAI_SINH),
    ("giấy khai sính", KHAI_SINH),                  # wrong tone mark
    ("tôi muốn làm giấy tờ cho con mới sinh", KHAI_SINH),
    ("đăng kí khai sinh", KHAI_SINH),               # "kí" for "ký"
    # a driving licence
    ("bằng lái", BANG_LAI),
    ("bang lai", BANG_LAI),
    ("làm lại bằng lái", BANG_LAI),
    ("lam lai bang lai", BANG_LAI),
    ("đổi bằng lái xe máy", BANG_LAI),
    ("bằng lải", BANG_LAI),                         # wrong tone mark
    ("gia hạn bằng lái", BANG_LAI),
    ("bằng lái hết hạn", BANG_LAI),
    ("đổi GPLX", BANG_LAI),
    ("giấy phép lái xe", BANG_LAI),
    # a judicial record
    ("lý lịch tư pháp", LY_LICH),
    ("ly lich tu phap", LY_LICH),
    ("lí lịch tư pháp", LY_LICH),                   # "lí" for "lý"
    ("xin lý lịch tư pháp số 1", LY_LICH),
    ("phiếu lý lịch", LY_LICH),
    ("xin giấy không tiền án tiền sự", LY_LICH),
    ("đi xuất khẩu lao động", LY_LICH),
    ("xin việc", LY_LICH),
    # single status
    ("xin giấy độc thân", DOC_THAN),
    ("giay doc than", DOC_THAN),
    ("xác nhận độc thân", DOC_THAN),
    ("giấy xác nhận tình trạng hôn nhân", DOC_THAN),
    ("xac nhan tinh trang hon nhan", DOC_THAN),
    ("chứng nhận độc thân để kết hôn", DOC_THAN),
    ("giấy độc thân vay ngân hàng", DOC_THAN),
    ("giấy độc thâm", None),                        # not a tone: a wrong letter is not guessed
    # permanent residence: people still say "hộ khẩu", though the book ended in 2023
    ("nhập hộ khẩu", THUONG_TRU),
    ("nhap ho khau cho con", THUONG_TRU),
    ("chuyển hộ khẩu", THUONG_TRU),
    ("sổ hộ khẩu", THUONG_TRU),
    ("nhập khẩu về nhà chồng", THUONG_TRU),
    ("thủ tục đăng ký thường trú", THUONG_TRU),
    ("thương trú", THUONG_TRU),                     # wrong tone mark
    ("thuong t", THUONG_TRU),                       # still typing
    # English
    ("death certificate", KHAI_TU),
    ("birth certificate", KHAI_SINH),
    ("driving licence", BANG_LAI),
    ("criminal record", LY_LICH),
]


def _found(app, query: str, category: str = "") -> list[str]:
    with app.test_request_context("/"):
        return [proc.slug for proc in citizen._search(query, category)]


def test_the_list_is_long_enough_and_names_real_procedures(catalog):
    assert len({query for query, _ in PHRASES}) >= 40
    assert {slug for _, slug in PHRASES if slug} == set(catalog)


@pytest.mark.parametrize("query,first", PHRASES)
def test_a_citizen_phrase_finds_its_procedure_first(app, query, first):
    found = _found(app, query)
    if first is None:
        assert found == []
    else:
        assert found[:1] == [first], found


@pytest.mark.parametrize("query,absent", [
    ("giấy chứng tử", KHAI_SINH),         # "giấy" and "chứng" alone do not make a birth
    ("con mới đẻ", DOC_THAN),
    ("khai sinh", THUONG_TRU),
    ("làm lại bằng lái", KHAI_SINH),      # "làm" and "lại" are how one asks, not what for
])
def test_filler_words_do_not_bring_in_other_procedures(app, query, absent):
    assert absent not in _found(app, query)


def test_a_query_of_filler_words_only_still_has_to_match(app, catalog):
    """While "xin" is all that is typed, it is the query: only procedures with that word are listed."""
    assert {"lam", "xin", "cap", "thu", "tuc"} <= citizen._FILLER_WORDS
    found = _found(app, "xin")
    assert found and set(found) < set(catalog)


def test_an_empty_query_lists_every_procedure_in_catalog_order(app, catalog):
    assert _found(app, "") == list(catalog)


def test_the_category_still_filters(app):
    assert _found(app, "giấy chứng tử", "cu-tru") == []
    assert _found(app, "hộ khẩu", "cu-tru") == [THUONG_TRU]


def test_the_start_page_lists_the_best_first(client, catalog):
    """The same order reaches the page, with and without htmx."""
    for headers in ({}, {"HX-Request": "true", "HX-Trigger": "search"}):
        page = client.get("/", query_string={"q": "lam giay chung tu"}, headers=headers)
        slugs = re.findall(r'href="/p/([a-z-]+)"', page.text)
        assert slugs and slugs[0] == KHAI_TU and catalog[KHAI_TU].name["vi"] in page.text


def test_every_keyword_finds_its_own_procedure(app, catalog):
    """A keyword that another procedure outranks would never be found first: the data says so at once."""
    for proc in catalog.values():
        for keyword in proc.keywords:
            assert _found(app, keyword)[:1] == [proc.slug], (proc.slug, keyword)
